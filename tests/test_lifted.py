"""Lifted structure and generalized lifted structure losses: PML 2.9 parity (float64, value and
gradients) and the pinned difference with a reference set."""
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
    "lifted": (jm.lifted_structure_loss, pml_losses.LiftedStructureLoss,
               [(dict(neg_margin=0.7, pos_margin=0.1, distance=jm.CosineSimilarity()),
                 dict(neg_margin=0.7, pos_margin=0.1, distance=pml_distances.CosineSimilarity()))]),
    "glifted": (jm.generalized_lifted_structure_loss, pml_losses.GeneralizedLiftedStructureLoss,
                [(dict(neg_margin=0.5, pos_margin=0.2, distance=jm.CosineSimilarity()),
                  dict(neg_margin=0.5, pos_margin=0.2, distance=pml_distances.CosineSimilarity()))]),
}


(
    test_parity_labels_defaults_and_settings, test_parity_ref_emb,
    test_parity_miner_masks, test_parity_miner_mask_with_ref,
) = parity_tests(LOSSES, ref_emb=["glifted"], miner_mask_with_ref=["lifted"])


def test_lifted_ref_emb_fixed():
    """With ref_emb PML adds the negatives of the *query* row numbered like the positive's
    reference index; jaxmetric uses the anchor's negatives only (pinned)."""
    emb, lab, ref, rlab = data(5)
    jv = float(jm.lifted_structure_loss(J(emb), J(lab), ref_emb=J(ref), ref_labels=J(rlab)))
    pv = float(pml_losses.LiftedStructureLoss()(torch.tensor(emb), torch.tensor(lab), ref_emb=torch.tensor(ref), ref_labels=torch.tensor(rlab)))
    e, r = normalized(emb), normalized(ref)
    d = np.linalg.norm(e[:, None] - r[None], axis=-1)
    pos, neg = lab[:, None] == rlab[None], lab[:, None] != rlab[None]
    vals = [0.5 * max(np.log(np.exp(1 - d[a][neg[a]]).sum()) + d[a, q], 0) ** 2 for a, q in zip(*np.nonzero(pos))]
    assert_close(jv, np.mean(vals))
    assert abs(jv - pv) > 1e-3
