"""Parity of the classifier-head losses with PML 2.9 (float64; value and gradients w.r.t. the
embeddings and the class matrix; PML's W is the transpose of jaxmetric's)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from class_matrix_utils import check_parity, l2_mean, random_batch, random_tuple
from pml_utils import assert_close, pml_distances, pml_losses, pml_regularizers, pml_value_and_grads, torch

import jaxmetric

pytestmark = pytest.mark.pml

B, D, C = 12, 6, 5


def reg_pair(weight):
    return ({"weight_regularizer": l2_mean, "weight_reg_weight": weight},
            {"weight_regularizer": pml_regularizers.LpRegularizer(), "weight_reg_weight": weight})


def run(rng, jax_fn, pml_cls, jkw, pkw, tup, *, c=C, scale_w=1.0, scale_e=1.0):
    emb, labels = random_batch(rng, B, D, c)
    emb = emb * scale_e
    w = rng.normal(size=(c, D)) * scale_w
    loss = pml_cls(num_classes=c, embedding_size=D, **pkw)
    it = None if tup is None else random_tuple(rng, B, tup)
    return check_parity(jax_fn, loss, loss.W, emb, labels, w, indices_tuple=it, **jkw)


CASES = {
    "normalized_softmax": (jaxmetric.normalized_softmax_loss, pml_losses.NormalizedSoftmaxLoss, [
        ({}, {}, None),
        ({"temperature": 0.3}, {"temperature": 0.3}, "pairs"),
        ({"distance": jaxmetric.LpDistance()}, {"distance": pml_distances.LpDistance()}, None),
        ({"temperature": 0.5, "distance": jaxmetric.DotProductSimilarity(normalize_embeddings=False)},
         {"temperature": 0.5, "distance": pml_distances.DotProductSimilarity(normalize_embeddings=False)}, "triplets"),
        (*reg_pair(0.7), None),
    ]),
    "arcface": (jaxmetric.arcface_loss, pml_losses.ArcFaceLoss, [
        ({}, {}, None),
        ({"margin": 10.0, "scale": 8.0}, {"margin": 10.0, "scale": 8}, "pairs"),
        # A 100-degree margin sends most targets through the theta > pi - m branch.
        ({"margin": 100.0, "scale": 4.0}, {"margin": 100.0, "scale": 4}, None),
        ({"scale": 16.0}, {"scale": 16}, "triplets"),
        (*reg_pair(0.2), None),
    ]),
    "cosface": (jaxmetric.cosface_loss, pml_losses.CosFaceLoss, [
        ({}, {}, None),
        ({"margin": 0.1, "scale": 10.0}, {"margin": 0.1, "scale": 10}, "pairs"),
        ({}, {}, "triplets"),
        (*reg_pair(1.5), None),
    ]),
    "large_margin_softmax": (jaxmetric.large_margin_softmax_loss, pml_losses.LargeMarginSoftmaxLoss, [
        ({}, {}, None),
        ({"margin": 1}, {"margin": 1}, None),
        ({"margin": 2, "scale": 0.5}, {"margin": 2, "scale": 0.5}, "pairs"),
        ({"margin": 3, "scale": 2.0}, {"margin": 3, "scale": 2}, None),
        ({"margin": 5}, {"margin": 5}, "triplets"),
        (*reg_pair(0.1), None),
    ]),
    "sphereface": (jaxmetric.sphereface_loss, pml_losses.SphereFaceLoss, [
        ({}, {}, None),
        ({"margin": 2, "scale": 1.5}, {"margin": 2, "scale": 1.5}, "pairs"),
        ({"margin": 3}, {"margin": 3}, None),
        (*reg_pair(0.4), "triplets"),
    ]),
}

PARAMS = [(name, i) for name, (_, _, cases) in CASES.items() for i in range(len(cases))]


@pytest.mark.parametrize("name,i", PARAMS)
def test_margin_family_parity(rng, name, i):
    jax_fn, pml_cls, cases = CASES[name]
    jkw, pkw, tup = cases[i]
    # Small magnitudes keep L-Softmax's |w||x| logits in a well-conditioned range.
    s = 0.5 if name == "large_margin_softmax" else 1.0
    run(rng, jax_fn, pml_cls, jkw, pkw, tup, scale_w=s, scale_e=s)


def test_arcface_large_margin_branch_is_exercised(rng):
    emb, labels = random_batch(rng, B, D, C)
    w = rng.normal(size=(C, D))
    en = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    wn = w / np.linalg.norm(w, axis=1, keepdims=True)
    theta = np.arccos(np.sum(en * wn[labels], axis=1))
    assert np.any(theta > math.pi - math.radians(100.0)) and np.any(theta <= math.pi - math.radians(100.0))


# ----------------------------------------------------------------------------- sub-center ArcFace


def flat_t(w):
    w = np.asarray(w)
    return w.reshape(-1, w.shape[-1]).T


@pytest.mark.parametrize("jkw,pkw,k,tup", [
    ({}, {}, 3, None),
    ({"margin": 20.0, "scale": 30.0}, {"margin": 20.0, "scale": 30}, 2, "pairs"),
    ({"scale": 10.0}, {"scale": 10}, 4, "triplets"),
])
def test_subcenter_arcface_parity(rng, jkw, pkw, k, tup):
    emb, labels = random_batch(rng, B, D, C)
    w = rng.normal(size=(C, k, D))
    loss = pml_losses.SubCenterArcFaceLoss(num_classes=C, embedding_size=D, sub_centers=k, **pkw)
    it = None if tup is None else random_tuple(rng, B, tup)
    check_parity(jaxmetric.subcenter_arcface_loss, loss, loss.W, emb, labels, w, to_pml=flat_t, indices_tuple=it, **jkw)
    # PML's 2-D layout (C*K, D) with sub_centers gives the same loss.
    flat = w.reshape(C * k, D)
    assert_close(jaxmetric.subcenter_arcface_loss(emb, labels, flat, sub_centers=k, **jkw),
                 jaxmetric.subcenter_arcface_loss(emb, labels, w, **jkw), rtol=1e-12)


def test_subcenter_arcface_regularizer_parity(rng):
    """PML 2.9 forwards SubCenterArcFaceLoss's extra kwargs (the reference inventory's
    "silently ignored" describes older releases): the regularizer sees W.t() = (C*K, D)."""
    emb, labels = random_batch(rng, B, D, C)
    w = rng.normal(size=(C, 3, D))
    loss = pml_losses.SubCenterArcFaceLoss(num_classes=C, embedding_size=D, weight_reg_weight=0.5,
                                           weight_regularizer=pml_regularizers.LpRegularizer())
    check_parity(jaxmetric.subcenter_arcface_loss, loss, loss.W, emb, labels, w, to_pml=flat_t,
                 weight_regularizer=l2_mean, weight_reg_weight=0.5)


@pytest.mark.parametrize("threshold", [75.0, 40.0])
def test_subcenter_outliers_match_pml(rng, threshold):
    emb, labels = random_batch(rng, 20, D, C + 1, present=C)  # class C absent
    w = rng.normal(size=(C + 1, 3, D))
    loss = pml_losses.SubCenterArcFaceLoss(num_classes=C + 1, embedding_size=D)
    loss.W.data = torch.tensor(flat_t(w).copy())
    out_ref, dom_ref = loss.get_outliers(torch.tensor(emb), torch.tensor(labels), threshold=threshold)
    out, dom = jax.jit(lambda e, l, ww: jaxmetric.subcenter_arcface_outliers(e, l, ww, threshold=threshold))(emb, labels, w)
    assert sorted(np.flatnonzero(np.asarray(out)).tolist()) == sorted(out_ref.numpy().tolist())
    present = np.unique(labels)
    assert_close(np.asarray(dom)[present], dom_ref.numpy().T[present])
    assert_close(np.asarray(dom)[C], w[C, 0])  # absent class: sub-center 0


# ----------------------------------------------------------------------------- P2SGrad


@pytest.mark.parametrize("with_unit", [True, False])
def test_p2sgrad_parity(rng, with_unit):
    emb, labels = random_batch(rng, B, D, C)
    w = rng.normal(size=(C, D))
    if with_unit:
        w = w / np.linalg.norm(w, axis=1, keepdims=True)
    loss = pml_losses.P2SGradLoss(D, C)
    # PML renormalises its weight in place before the forward pass, so its value and gradient
    # for any W are those at W/|W|; jaxmetric's straight-through normalisation matches both.
    loss.weight.data = torch.tensor(w.T.copy())
    v_ref, ge_ref, _, (gw_ref,) = pml_value_and_grads(loss, emb, labels, extra=(loss.weight,))
    v, (ge, gw) = jax.value_and_grad(lambda e, ww: jaxmetric.p2sgrad_loss(e, jnp.asarray(labels), ww), argnums=(0, 1))(
        jnp.asarray(emb), jnp.asarray(w))
    assert_close(v, v_ref)
    assert_close(ge, ge_ref)
    assert_close(np.asarray(gw).T, gw_ref)


# ----------------------------------------------------------------------------- Dynamic ArcFace


def test_dynamic_arcface_margins_formula():
    counts = np.array([1000, 10, 250, 1, 40])
    m = np.asarray(jaxmetric.dynamic_arcface_margins(counts))
    v = counts ** -0.25
    a = (0.5 - 0.05) / (v.max() - v.min())
    b = 0.05 - a * v.min()
    assert_close(m, a * v + b, rtol=1e-6)
    assert np.isclose(m[3], 0.5) and np.isclose(m[0], 0.05)  # smallest -> high, largest -> low
    assert np.all(np.diff(m[np.argsort(counts)]) < 0)
    m2 = np.asarray(jaxmetric.dynamic_arcface_margins(counts, margin_bounds=(0.1, 0.3), power=0.5))
    assert np.isclose(m2.min(), 0.1) and np.isclose(m2.max(), 0.3)
    # Balanced classes: every margin is the upper bound (plain ArcFace with margin 0.5 rad).
    assert_close(jaxmetric.dynamic_arcface_margins(np.full(4, 7)), np.full(4, 0.5), rtol=1e-6)


@pytest.mark.parametrize("k", [1, 3])
def test_dynamic_arcface_matches_pml_per_class(rng, k):
    """Each sample's loss equals PML's SubCenterArcFace with that class's margin, so PML run on
    each class's samples separately (weighted by the group size) gives the whole loss."""
    emb, labels = random_batch(rng, B, D, C)
    w = rng.normal(size=(C, k, D))
    counts = np.array([500, 3, 80, 20, 1])
    margins = np.asarray(jaxmetric.dynamic_arcface_margins(counts), dtype=np.float64)
    e_t = torch.tensor(emb, requires_grad=True)
    w_total = None
    total = 0.0
    pml_params = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        loss = pml_losses.SubCenterArcFaceLoss(num_classes=C, embedding_size=D, sub_centers=k,
                                               margin=math.degrees(margins[c]), scale=64)
        loss.W.data = torch.tensor(flat_t(w).copy())
        total = total + loss(e_t[idx], torch.tensor(labels[idx])) * len(idx) / B
        pml_params.append(loss.W)
    grads = torch.autograd.grad(total, [e_t] + pml_params)
    gw_ref = sum(g.numpy() for g in grads[1:])
    v, (ge, gw) = jax.value_and_grad(
        lambda e, ww: jaxmetric.dynamic_arcface_loss(e, jnp.asarray(labels), ww, jnp.asarray(counts)), argnums=(0, 1)
    )(jnp.asarray(emb), jnp.asarray(w))
    assert_close(v, float(total.detach()))
    assert_close(ge, grads[0].numpy())
    assert_close(flat_t(gw), gw_ref)


def test_dynamic_arcface_equal_counts_is_subcenter_arcface(rng):
    emb, labels = random_batch(rng, B, D, C)
    w = rng.normal(size=(C, 3, D))
    a = jaxmetric.dynamic_arcface_loss(emb, labels, w, np.full(C, 9))
    b = jaxmetric.subcenter_arcface_loss(emb, labels, w, margin=math.degrees(0.5))
    assert_close(a, b, rtol=1e-12)


# ----------------------------------------------------------------------------- logits


def _pml_logits(pml_loss, emb):
    with torch.no_grad():
        return pml_loss.get_logits(torch.tensor(emb)).numpy()


@pytest.mark.parametrize("kind,make,param,to_pml,shape,kw", [
    ("proxy_nca", lambda: pml_losses.ProxyNCALoss(C, D), "proxies", lambda w: w, (C, D), {}),
    ("proxy_anchor", lambda: pml_losses.ProxyAnchorLoss(C, D), "proxies", lambda w: w, (C, D), {}),
    ("soft_triple", lambda: pml_losses.SoftTripleLoss(C, D, centers_per_class=3, gamma=0.2), "fc", flat_t, (C, 3, D), {"gamma": 0.2}),
    ("normalized_softmax", lambda: pml_losses.NormalizedSoftmaxLoss(C, D, temperature=0.1), "W", lambda w: w.T, (C, D), {"temperature": 0.1}),
    ("arcface", lambda: pml_losses.ArcFaceLoss(C, D, scale=3), "W", lambda w: w.T, (C, D), {"scale": 3.0}),
    ("cosface", lambda: pml_losses.CosFaceLoss(C, D), "W", lambda w: w.T, (C, D), {}),
    ("large_margin_softmax", lambda: pml_losses.LargeMarginSoftmaxLoss(C, D, scale=2), "W", lambda w: w.T, (C, D), {"scale": 2.0}),
    ("sphereface", lambda: pml_losses.SphereFaceLoss(C, D), "W", lambda w: w.T, (C, D), {}),
    ("subcenter_arcface", lambda: pml_losses.SubCenterArcFaceLoss(num_classes=C, embedding_size=D, sub_centers=2), "W", flat_t, (C, 2, D), {}),
])
def test_class_logits_match_pml_get_logits(rng, kind, make, param, to_pml, shape, kw):
    emb = rng.normal(size=(B, D))
    w = rng.normal(size=shape)
    loss = make()
    getattr(loss, param).data = torch.tensor(np.ascontiguousarray(to_pml(w)))
    ours = jaxmetric.class_logits(jnp.asarray(emb), jnp.asarray(w), kind=kind, **kw)
    assert ours.shape == (B, C)
    assert_close(ours, _pml_logits(loss, emb))
