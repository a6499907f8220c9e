"""Tuplet margin loss: PML 2.9 parity (float64, value and gradients) and finite gradients on
duplicates, where PML's are not."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from loss_parity import data, parity_tests
from pml_utils import pml_losses, pml_value_and_grads

J = jnp.asarray

pytestmark = pytest.mark.pml

# name -> (jaxmetric loss, PML class, [(jaxmetric kwargs, PML kwargs), ...] non-default settings)
LOSSES = {
    "tuplet": (jm.tuplet_margin_loss, pml_losses.TupletMarginLoss,
               [(dict(margin=10.0, scale=16.0), dict(margin=10.0, scale=16.0))]),
}


(
    test_parity_labels_defaults_and_settings, test_parity_ref_emb,
    test_parity_miner_masks,
) = parity_tests(LOSSES, ref_emb=["tuplet"])


def test_tuplet_duplicates_finite_where_pml_is_not():
    """PML's acos without clamp: duplicate positives give a non-finite gradient (or NaN);
    jaxmetric stays finite (pinned)."""
    emb, lab, _, _ = data(8)
    emb[1] = emb[0]
    lab[1] = lab[0]
    pv, pg, _, _ = pml_value_and_grads(pml_losses.TupletMarginLoss(), emb, lab)
    assert not (np.isfinite(pv) and np.all(np.isfinite(pg)))
    v, g = jax.value_and_grad(lambda e: jm.tuplet_margin_loss(e, J(lab)))(J(emb))
    assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g)))
