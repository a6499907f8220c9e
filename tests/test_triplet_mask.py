"""TripletMask forms (dense, margin, angle, list): pair conversion and triplet losses agree
with the dense cube in value and gradient; validation; pytree behaviour."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from jaxmetric._src import triplets as _triplets
from tests.pml_utils import assert_close

B, R, D, C = 24, 20, 8, 4
INF = np.inf


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    emb = jnp.asarray(rng.normal(size=(B, D)))
    labels = jnp.asarray(rng.integers(0, C, B))
    ref = jnp.asarray(rng.normal(size=(R, D)))
    ref_labels = jnp.asarray(rng.integers(0, C, R))
    return emb, labels, ref, ref_labels


def dense(m: jm.TripletMask) -> jm.TripletMask:
    return jm.TripletMask(m.to_dense())


def test_margin_to_pairs_matches_cube_with_ties_and_weights():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 4, size=(B, R)).astype(np.float64))  # many exact ties
    pos = jnp.asarray(rng.uniform(size=(B, R)) * (rng.uniform(size=(B, R)) < 0.3))
    neg = jnp.asarray((rng.uniform(size=(B, R)) < 0.6) * rng.integers(1, 3, size=(B, R)).astype(np.float64))
    for lo, hi in [(-INF, 0.0), (0.0, 2.0), (1.0, 1.0), (2.0, 1.0), (-INF, INF), (-1.0, INF), (0.5, 2.5)]:
        m = jm.TripletMask.from_margin(pos, neg, x, lo, hi)
        got, want = m.to_pairs(), jm.TripletMask(m.to_dense()).to_pairs()
        cube = np.asarray(pos)[:, :, None] * np.asarray(neg)[:, None, :]
        t = np.asarray(x)[:, None, :] - np.asarray(x)[:, :, None]
        np.testing.assert_allclose(np.asarray(m.to_dense()), cube * ((t > lo) & (t <= hi)))
        np.testing.assert_allclose(np.asarray(got.pos), np.asarray(want.pos), rtol=1e-12, err_msg=str((lo, hi)))
        np.testing.assert_allclose(np.asarray(got.neg), np.asarray(want.neg), rtol=1e-12, err_msg=str((lo, hi)))


LOSS_VARIANTS = [
    dict(),
    dict(reduction="mean"),
    dict(reduction="sum", margin=0.3),
    dict(reduction=jm.threshold(0.01, 0.4)),
    dict(swap=True),
    dict(smooth_loss=True),
    dict(reduction="none"),
    dict(reduction=lambda losses, w: jnp.sum(w * losses**2)),
]
VARIANT_IDS = ["avg_nonzero", "mean", "sum", "threshold", "swap", "smooth", "none", "callable"]


GRID = [("margin", v, i) for v, i in zip(LOSS_VARIANTS, VARIANT_IDS)] + [
    (form, LOSS_VARIANTS[k], VARIANT_IDS[k]) for form, ks in (("angle", (0, 4, 6)), ("list", (0, 4, 5, 7))) for k in ks
]


@pytest.mark.parametrize("form,kw,_id", GRID, ids=[f"{f}-{i}" for f, _, i in GRID])
def test_triplet_loss_compact_equals_dense(data, form, kw, _id):
    emb, labels, _, _ = data
    if form == "margin":
        make = lambda e: jm.triplet_margin_miner(e, labels, type_of_triplets="all", margin=0.4)
    elif form == "angle":
        make = lambda e: jm.angular_miner(e, labels, angle=30)
    else:
        make = lambda e: jm.distance_weighted_miner(e, labels, key=jax.random.key(3))
    f_c = lambda e: jnp.sum(jm.triplet_margin_loss(e, make(e), **kw))
    f_d = lambda e: jnp.sum(jm.triplet_margin_loss(e, dense(make(e)), **kw))
    vc, gc = jax.value_and_grad(f_c)(emb)
    vd, gd = jax.value_and_grad(f_d)(emb)
    assert float(vd) != 0.0
    assert_close(vc, vd)
    assert_close(gc, gd)


def test_margin_sorted_path_and_fallback(data):
    """Same distance: the sorted path applies (ok); an unrelated order falls back, still exact."""
    emb, labels, _, _ = data
    m = jm.triplet_margin_miner(emb, labels, type_of_triplets="all", margin=0.3)
    tm = m  # already valid for the loss (no where, self-pairs excluded by the miner)
    x = jm.LpDistance()(emb, emb)
    *_, ok = _triplets.hinge_sums_margin_form(x, tm, 0.05, True)
    assert bool(ok)
    rng = np.random.default_rng(4)
    scrambled = jm.TripletMask.from_margin(m.pos, m.neg, jnp.asarray(rng.normal(size=(B, B))), -0.5, 0.5)
    *_, ok = _triplets.hinge_sums_margin_form(x, scrambled, 0.05, True)
    assert not bool(ok)
    for mask in (m, scrambled):
        for kw in (dict(), dict(reduction="mean")):
            vc, gc = jax.value_and_grad(lambda e: jm.triplet_margin_loss(e, mask, **kw))(emb)
            vd, gd = jax.value_and_grad(lambda e: jm.triplet_margin_loss(e, dense(mask), **kw))(emb)
            assert_close(vc, vd)
            assert_close(gc, gd)


@pytest.mark.parametrize("form", ["margin", "angle", "list"])
def test_pair_losses_compact_equals_dense(data, form):
    emb, labels, ref, ref_labels = data
    kw = dict(ref_emb=ref)
    if form == "margin":
        m = jm.triplet_margin_miner(emb, labels, ref_emb=ref, ref_labels=ref_labels, distance=jm.CosineSimilarity(), margin=0.3)
    elif form == "angle":
        m = jm.angular_miner(emb, labels, ref_emb=ref, ref_labels=ref_labels)
    else:
        m = jm.distance_weighted_miner(emb, labels, ref_emb=ref, ref_labels=ref_labels, key=jax.random.key(1))
    for loss in (jm.contrastive_loss, jm.ntxent_loss):
        vc, gc = jax.value_and_grad(lambda r: loss(emb, m, ref_emb=r))(ref)
        vd, gd = jax.value_and_grad(lambda r: loss(emb, dense(m), ref_emb=r))(ref)
        assert float(vd) != 0.0
        assert_close(vc, vd)
        assert_close(gc, gd)


@pytest.mark.parametrize("form", ["margin", "angle", "list", "dense"])
def test_where_on_triplet_masks(data, form):
    emb, labels, _, _ = data
    if form in ("margin", "dense"):
        m = jm.triplet_margin_miner(emb, labels, margin=0.5)
    elif form == "angle":
        m = jm.angular_miner(emb, labels)
    else:
        m = jm.distance_weighted_miner(emb, labels, key=jax.random.key(2))
    if form == "dense":
        m = dense(m)
    w = jnp.asarray(np.arange(B) % 5 != 0)
    cube = np.asarray(m.to_dense()) * np.asarray(w)[:, None, None] * np.asarray(w)[None, :, None] * np.asarray(w)[None, None, :]
    ref = jm.TripletMask(jnp.asarray(cube))
    for loss in (jm.triplet_margin_loss, jm.contrastive_loss):
        assert_close(loss(emb, m, where=w), loss(emb, ref))


def test_list_form_duplicates_invalid_and_self(data):
    emb, labels, _, _ = data
    p_idx = jnp.asarray(np.tile([1, 1, -1, 0, 5], (B, 1)))
    n_idx = jnp.asarray(np.tile([2, 2, 3, 4, 99], (B, 1)))
    m = jm.TripletMask.from_lists(p_idx, n_idx, num_refs=B)
    assert m.form == "list" and m.shape == (B, B, B)
    cube = np.zeros((B, B, B))
    for a in range(B):
        for p, n in ((1, 2), (1, 2), (0, 4)):
            if p != a:  # a sample is never its own positive; -1 and out-of-range entries are ignored
                cube[a, p, n] += 1
    assert_close(jm.triplet_margin_loss(emb, m, margin=1.0), jm.triplet_margin_loss(emb, jm.TripletMask(jnp.asarray(cube)), margin=1.0))
    assert_close(jm.contrastive_loss(emb, m), jm.contrastive_loss(emb, jm.TripletMask(jnp.asarray(cube))))


def test_angle_to_pairs_matches_cube(data):
    emb, labels, ref, ref_labels = data
    m = jm.angular_miner(emb, labels, ref_emb=ref, ref_labels=ref_labels, angle=25)
    got, want = m.to_pairs(), jm.TripletMask(m.to_dense()).to_pairs()
    assert float(np.asarray(got.pos).sum()) > 0
    np.testing.assert_array_equal(np.asarray(got.pos), np.asarray(want.pos))
    np.testing.assert_array_equal(np.asarray(got.neg), np.asarray(want.neg))


def test_pytree_jit_and_vmap_of_masks(data):
    emb, labels, _, _ = data
    masks = {
        "margin": jm.triplet_margin_miner(emb, labels),
        "angle": jm.angular_miner(emb, labels),
        "list": jm.distance_weighted_miner(emb, labels, key=jax.random.key(0)),
        "dense": jm.TripletMask(jnp.ones((B, B, B), bool)),
    }
    f = jax.jit(lambda e, m: jm.contrastive_loss(e, m))
    for name, m in masks.items():
        assert m.form == name
        assert m.shape == (B, B, B)
        leaves, treedef = jax.tree_util.tree_flatten(m)
        assert jax.tree_util.tree_unflatten(treedef, leaves).form == name
        assert_close(f(emb, m), jm.contrastive_loss(emb, m))
    stacked = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), masks["margin"], masks["margin"])
    out = jax.vmap(lambda m: m.to_pairs().pos)(stacked)
    np.testing.assert_array_equal(np.asarray(out[1]), np.asarray(masks["margin"].to_pairs().pos))


def test_backward_compatible_dense_form(data):
    emb, labels, _, _ = data
    a = jnp.asarray([0, 1, 2, 3])
    p = jnp.asarray([4, 5, 6, 7])
    n = jnp.asarray([8, 9, 10, 11])
    m = jm.from_indices((a, p, n), B)
    assert m.form == "dense" and m.shape == (B, B, B)
    m2 = jm.TripletMask(m.weights)
    assert m2.form == "dense"
    assert_close(jm.triplet_margin_loss(emb, m, margin=2.0), jm.triplet_margin_loss(emb, m2, margin=2.0))
    np.testing.assert_array_equal(np.asarray(jm.to_pairs(m).pos), np.asarray(m.to_pairs().pos))


def test_validation_errors(data):
    emb, labels, _, _ = data
    m = jm.triplet_margin_miner(emb, labels)
    bad = jm.TripletMask.from_margin(m.pos[:5], m.neg, m.x)
    with pytest.raises(ValueError, match=r"TripletMask.pos` must have shape \(24, 24\)"):
        jm.contrastive_loss(emb, bad)
    with pytest.raises(ValueError, match="TripletMask.lo` must be a scalar"):
        jm.contrastive_loss(emb, jm.TripletMask(pos=m.pos, neg=m.neg, x=m.x, lo=jnp.zeros(3), hi=m.hi))
    lst = jm.TripletMask.from_lists(jnp.zeros((B, 2), jnp.int32), jnp.ones((B, 2), jnp.int32), num_refs=B + 1)
    with pytest.raises(ValueError, match="num_refs"):
        jm.triplet_margin_loss(emb, lst)
    with pytest.raises(TypeError, match="p_idx"):
        jm.triplet_margin_loss(emb, jm.TripletMask.from_lists(jnp.zeros((B, 2)), jnp.ones((B, 2), jnp.int32), num_refs=B))
    with pytest.raises(ValueError, match="TripletMask.weights"):
        jm.triplet_margin_loss(emb, jm.TripletMask(jnp.ones((B, B, B - 1))))
    with pytest.raises(ValueError, match="triplets_per_anchor"):
        jm.triplet_margin_loss(emb, m, triplets_per_anchor=3, key=jax.random.key(0))
