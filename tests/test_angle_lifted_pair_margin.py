"""PML 2.9 parity (float64, value and gradients) for the angle-based, lifted and pair-margin losses:
lifted, generalized lifted, SNR contrastive, intra-pair variance, tuplet margin, TCM, angular."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from loss_parity import B, R, data, mask_of, mine, normalized, parity
from pml_utils import assert_close, pml_distances, pml_losses, pml_miners, pml_reducers, pml_value_and_grads, torch

from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

pytestmark = pytest.mark.pml

J = jnp.asarray

# name -> (jax fn, PML class, [(jax kwargs, PML kwargs), ...] non-default settings)
PAIR_LOSSES = {
    "lifted": (jm.lifted_structure_loss, pml_losses.LiftedStructureLoss,
               [(dict(neg_margin=0.7, pos_margin=0.1, distance=jm.CosineSimilarity()),
                 dict(neg_margin=0.7, pos_margin=0.1, distance=pml_distances.CosineSimilarity()))]),
    "glifted": (jm.generalized_lifted_structure_loss, pml_losses.GeneralizedLiftedStructureLoss,
                [(dict(neg_margin=0.5, pos_margin=0.2, distance=jm.CosineSimilarity()),
                  dict(neg_margin=0.5, pos_margin=0.2, distance=pml_distances.CosineSimilarity()))]),
    "snr": (jm.snr_contrastive_loss, pml_losses.SignalToNoiseRatioContrastiveLoss,
            [(dict(pos_margin=0.3, neg_margin=0.8, reduction="mean"),
              dict(pos_margin=0.3, neg_margin=0.8, reducer=pml_reducers.MeanReducer()))]),
    "ipv": (jm.intra_pair_variance_loss, pml_losses.IntraPairVarianceLoss,
            [(dict(pos_eps=0.1, neg_eps=0.2, distance=jm.LpDistance(power=2)),
              dict(pos_eps=0.1, neg_eps=0.2, distance=pml_distances.LpDistance(power=2)))]),
    "tuplet": (jm.tuplet_margin_loss, pml_losses.TupletMarginLoss,
               [(dict(margin=10.0, scale=16.0), dict(margin=10.0, scale=16.0))]),
    "tcm": (jm.threshold_consistent_margin_loss, pml_losses.ThresholdConsistentMarginLoss,
            [(dict(lambda_plus=0.5, lambda_minus=2.0, margin_plus=0.3, margin_minus=-0.1),
              dict(lambda_plus=0.5, lambda_minus=2.0, margin_plus=0.3, margin_minus=-0.1))]),
}


@pytest.mark.parametrize("name", sorted(PAIR_LOSSES))
def test_parity_labels_defaults_and_settings(name):
    fn, cls, settings = PAIR_LOSSES[name]
    emb, lab, _, _ = data(1)
    parity(lambda e: fn(e, J(lab)), cls(), emb, lab)
    for jkw, pkw in settings:
        parity(lambda e: fn(e, J(lab), **jkw), cls(**pkw), emb, lab)


@pytest.mark.parametrize("name", ["glifted", "snr", "ipv", "tuplet"])
def test_parity_ref_emb(name):
    fn, cls, _ = PAIR_LOSSES[name]
    emb, lab, ref, rlab = data(2)
    parity(lambda e, r: fn(e, J(lab), ref_emb=r, ref_labels=J(rlab)), cls(), emb, lab, ref=ref, ref_labels=rlab)


@pytest.mark.parametrize("name", sorted(PAIR_LOSSES))
@pytest.mark.parametrize("miner", ["ms", "triplet"])
def test_parity_miner_masks(name, miner):
    fn, cls, _ = PAIR_LOSSES[name]
    emb, lab, _, _ = data(3)
    m = pml_miners.MultiSimilarityMiner(epsilon=0.2) if miner == "ms" else pml_miners.TripletMarginMiner(margin=0.3)
    tup = mine(m, emb, lab)
    assert len(tup[0]) > 1
    mask = mask_of(tup, B)
    # PML is given the tuple only (no labels): the tuple alone defines the pairs.
    parity(lambda e: fn(e, mask), cls(), emb, None, indices_tuple=tup)


@pytest.mark.parametrize("name", ["lifted", "snr"])
def test_parity_miner_mask_with_ref(name):
    # (PML's TCM ignores ref_emb: pinned in test_tcm_ref_emb_fixed.)
    fn, cls, _ = PAIR_LOSSES[name]
    emb, lab, ref, rlab = data(4)
    # Positives restricted to reference rows >= B so that PML's lifted index quirk (query row p)
    # cannot apply; then both definitions agree.
    a1, p, a2, n = (x.numpy() for x in lmu.get_all_pairs_indices(torch.tensor(lab), torch.tensor(rlab)))
    keep = p >= B
    tup = (a1[keep], p[keep], a2, n)
    mask = mask_of(tup, B, R)
    parity(lambda e, r: fn(e, mask, ref_emb=r), cls(), emb, None, indices_tuple=tup, ref=ref)


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


# ----------------------------------------------------------------------------- angular

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
