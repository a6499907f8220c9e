"""Pair-based losses (multi-similarity and circle are in the battery and test_parity_core.py):
intra-pair variance and threshold-consistent margin, PML 2.9 parity (float64, value and gradients)
and TCM's pinned difference with a reference set."""
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from loss_parity import data, normalized, parity_tests
from pml_utils import assert_close, pml_distances, pml_losses, torch

J = jnp.asarray

pytestmark = pytest.mark.pml

# name -> (jaxmetric loss, PML class, [(jaxmetric kwargs, PML kwargs), ...] non-default settings)
LOSSES = {
    "ipv": (jm.intra_pair_variance_loss, pml_losses.IntraPairVarianceLoss,
            [(dict(pos_eps=0.1, neg_eps=0.2, distance=jm.LpDistance(power=2)),
              dict(pos_eps=0.1, neg_eps=0.2, distance=pml_distances.LpDistance(power=2)))]),
    "tcm": (jm.threshold_consistent_margin_loss, pml_losses.ThresholdConsistentMarginLoss,
            [(dict(lambda_plus=0.5, lambda_minus=2.0, margin_plus=0.3, margin_minus=-0.1),
              dict(lambda_plus=0.5, lambda_minus=2.0, margin_plus=0.3, margin_minus=-0.1))]),
}


(
    test_parity_labels_defaults_and_settings, test_parity_ref_emb,
    test_parity_miner_masks,
) = parity_tests(LOSSES, ref_emb=["ipv"])


def test_tcm_ref_emb_fixed():
    """PML's TCM reads positives/negatives from `embeddings` even with ref_emb; jaxmetric
    reads them from ref_emb (pinned)."""
    emb, lab, _, _ = data(6)
    ref = np.random.default_rng(7).normal(size=emb.shape)
    rlab = lab[::-1].copy()
    jv = float(jm.threshold_consistent_margin_loss(J(emb), J(lab), ref_emb=J(ref), ref_labels=J(rlab)))
    pv = float(pml_losses.ThresholdConsistentMarginLoss()(torch.tensor(emb), torch.tensor(lab), ref_emb=torch.tensor(ref), ref_labels=torch.tensor(rlab)))
    s = normalized(emb) @ normalized(ref).T
    pos, neg = lab[:, None] == rlab[None], lab[:, None] != rlab[None]
    ps, ns = s[pos], s[neg]
    expect = np.mean(0.9 - ps[ps <= 0.9]) + np.mean(ns[ns >= 0.5] - 0.5)
    assert_close(jv, expect)
    assert abs(jv - pv) > 1e-3
