"""Angular loss: PML 2.9 parity (float64, value and gradients), masks with labels, the pinned
normalisation of negatives, finite at large angles."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from loss_parity import B, R, data, mask_of, mine, normalized, parity
from pml_utils import assert_close, pml_losses, pml_miners, torch

J = jnp.asarray

pytestmark = pytest.mark.pml


def _pml_angular_on_normalized(**kw):
    """PML's AngularLoss applied to normalize(x): jaxmetric's definition (negatives normalised)."""
    loss = pml_losses.AngularLoss(**kw)

    def f(e, labels, indices_tuple=None, ref_emb=None, ref_labels=None):
        n = torch.nn.functional.normalize
        return loss(n(e), labels, indices_tuple=indices_tuple, ref_emb=None if ref_emb is None else n(ref_emb), ref_labels=ref_labels)

    return f


@pytest.mark.parametrize("alpha", [40.0, 25.0, 55.0])
def test_angular_parity(alpha):
    emb, lab, ref, rlab = data(9)
    # Raw (un-normalised) inputs against PML on normalised inputs: values and full gradients.
    parity(lambda e: jm.angular_loss(e, J(lab), alpha=alpha), _pml_angular_on_normalized(alpha=alpha), emb, lab)
    # Normalised inputs against PML directly (values; gradients agree up to the radial part).
    en = normalized(emb)
    pv = float(pml_losses.AngularLoss(alpha=alpha)(torch.tensor(en), torch.tensor(lab)))
    assert_close(float(jm.angular_loss(J(en), J(lab), alpha=alpha)), pv)
    if alpha == 40.0:
        parity(lambda e, r: jm.angular_loss(e, J(lab), ref_emb=r, ref_labels=J(rlab)), _pml_angular_on_normalized(),
               emb, lab, ref=ref, ref_labels=rlab)


def test_angular_mask_with_labels():
    emb, lab, ref, rlab = data(10)
    tup = mine(pml_miners.MultiSimilarityMiner(epsilon=0.2), emb, lab)
    mask = mask_of(tup, B)
    parity(lambda e: jm.angular_loss(e, mask, labels=J(lab)), _pml_angular_on_normalized(), emb, lab, indices_tuple=tup)
    ttup = mine(pml_miners.TripletMarginMiner(margin=0.3), emb, lab, ref, rlab)
    tmask = mask_of(ttup, B, R)
    parity(lambda e, r: jm.angular_loss(e, tmask, labels=J(lab), ref_emb=r, ref_labels=J(rlab)), _pml_angular_on_normalized(),
           emb, lab, indices_tuple=ttup, ref=ref, ref_labels=rlab)
    with pytest.raises(ValueError, match="`labels` is required"):
        jm.angular_loss(J(emb), mask)


def test_angular_negatives_normalised_unlike_pml():
    """PML leaves the negatives un-normalised; jaxmetric normalises them (pinned)."""
    emb, lab, _, _ = data(11)
    emb = emb * np.linspace(0.3, 3.0, B)[:, None]
    pv = float(pml_losses.AngularLoss()(torch.tensor(emb), torch.tensor(lab)))
    pv_n = float(pml_losses.AngularLoss()(torch.tensor(normalized(emb)), torch.tensor(lab)))
    jv = float(jm.angular_loss(J(emb), J(lab)))
    assert_close(jv, pv_n)
    assert abs(jv - pv) > 1e-3


def test_angular_large_alpha_finite():
    emb, lab, _, _ = data(12)
    for dt in (jnp.float32, jnp.float64):
        v, g = jax.value_and_grad(lambda e: jm.angular_loss(e, J(lab), alpha=89.0))(J(emb, dt))
        assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g)))
