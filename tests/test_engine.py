"""The engine (jaxmetric/_src/engine.py): ``block_size`` gives the dense value and gradient.

``evaluate`` (the pair and listwise losses: blocks of anchors, alone and with ``axis_name``) and
``map_row_blocks`` (CLIP, SigLIP, the proxy and classifier-head losses: blocks of rows;
Proxy-Anchor: blocks of proxies): the blocked path equals the dense path in value and gradient,
and the compiled blocked step never holds the dense [B, R] (or [B, C]) matrix."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

import jaxmetric as jm
from tests.pml_utils import assert_close

BLOCKED = {
    "contrastive": jm.contrastive_loss,
    "multi_similarity": jm.multi_similarity_loss,
    "circle": jm.circle_loss,
    "ntxent": jm.ntxent_loss,
    "supcon": jm.supcon_loss,
    "tuplet_margin": jm.tuplet_margin_loss,
    "generalized_lifted_structure": jm.generalized_lifted_structure_loss,
    "threshold_consistent_margin": jm.threshold_consistent_margin_loss,
    "multi_supcon": jm.multi_supcon_loss,
    "lifted_structure": jm.lifted_structure_loss,
    "nca": jm.nca_loss,
    "instance": jm.instance_loss,
    "contrastive-cos-threshold": functools.partial(jm.contrastive_loss, distance=jm.CosineSimilarity(), reduction=jm.threshold(low=0.05)),
    "fast_ap": jm.fast_ap_loss,
    "smooth_ap": functools.partial(jm.smooth_ap_loss, temperature=0.1),
    "pnp": functools.partial(jm.pnp_loss, anneal=0.1),
    "ranked_list": functools.partial(jm.ranked_list_loss, margin=0.4, Tn=1.0, Tp=0.5),
}
LABELS_BESIDE_MASK = {"nca"}  # a mask only weights its queries: the classes come as labels=
CLASS_IDS_ONLY = {"instance"}  # no ref_emb, multi-hot labels or mask
LABELS_ONLY = {"multi_supcon"}  # its positives are weighted by the labels' Jaccard index: no mask
# The listwise losses: no reference set (as PML), and a query's loss is one element, so
# block_size takes every reduction.
PER_QUERY = {"fast_ap", "smooth_ap", "pnp", "ranked_list"}


def _data(seed=0, b=30, classes=5):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(b, 6))), jnp.asarray(rng.integers(0, classes, b))


@pytest.mark.parametrize("name", list(BLOCKED))
@pytest.mark.parametrize("block_size", [1, 7, 30, 64])
def test_blocked_equals_dense(name, block_size):
    fn = BLOCKED[name]
    e, y = _data()
    v, g = jax.value_and_grad(lambda x: fn(x, y))(e)
    vb, gb = jax.jit(jax.value_and_grad(lambda x: fn(x, y, block_size=block_size)))(e)
    assert_close(vb, v, rtol=1e-10)
    assert_close(gb, g, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("name", [n for n in BLOCKED if n not in CLASS_IDS_ONLY | PER_QUERY])
def test_blocked_with_ref_where_multi_hot_and_masks(name):
    fn = BLOCKED[name]
    e, y = _data(1)
    rng = np.random.default_rng(2)
    ref, ry = jnp.asarray(rng.normal(size=(11, 6))), jnp.asarray(rng.integers(0, 5, 11))
    where = jnp.arange(30) % 4 != 1
    kw = dict(ref_emb=ref, ref_labels=ry, where=where, ref_where=jnp.arange(11) != 3)
    dense = jax.value_and_grad(lambda x, r: fn(x, y, **{**kw, "ref_emb": r}), argnums=(0, 1))(e, ref)
    blocked = jax.value_and_grad(lambda x, r: fn(x, y, block_size=8, **{**kw, "ref_emb": r}), argnums=(0, 1))(e, ref)
    assert_close(blocked[0], dense[0], rtol=1e-10)
    assert_close(blocked[1][0], dense[1][0], rtol=1e-9, atol=1e-13)
    assert_close(blocked[1][1], dense[1][1], rtol=1e-9, atol=1e-13)
    multi_hot = jnp.asarray(rng.integers(0, 2, (30, 4)))
    assert_close(fn(e, multi_hot, block_size=4), fn(e, multi_hot), rtol=1e-10)
    if name in LABELS_ONLY:
        return
    mask = jm.pair_mask(y)
    beside = {"labels": y} if name in LABELS_BESIDE_MASK else {}
    assert_close(fn(e, mask, block_size=9, **beside), fn(e, mask, **beside), rtol=1e-10)


@pytest.mark.parametrize("name", sorted(CLASS_IDS_ONLY))
def test_blocked_with_where_class_ids_only(name):
    fn = BLOCKED[name]
    e, y = _data(1)
    where = jnp.arange(30) % 4 != 1
    dense = jax.value_and_grad(lambda x: fn(x, y, where=where))(e)
    blocked = jax.value_and_grad(lambda x: fn(x, y, where=where, block_size=8))(e)
    assert_close(blocked[0], dense[0], rtol=1e-10)
    assert_close(blocked[1], dense[1], rtol=1e-9, atol=1e-13)


def test_nca_blocked_masks_with_ref_emb_and_triplets():
    """NCA's mask weights (counts over the whole selection) reach each block's queries."""
    e, y = _data(6)
    rng = np.random.default_rng(7)
    ref, ry = jnp.asarray(rng.normal(size=(11, 6))), jnp.asarray(rng.integers(0, 5, 11))
    pos = jnp.asarray((y[:, None] == ry[None, :]) & (rng.random((30, 11)) < 0.6))
    ref_mask = jm.PairMask(pos, ~pos & (rng.random((30, 11)) < 0.5))
    cube = jnp.asarray(rng.random((30, 30, 30)) < 0.05)
    for mask, kw in ((ref_mask, dict(ref_emb=ref, ref_labels=ry)), (jm.TripletMask.dense(cube), {})):
        dense = jax.value_and_grad(lambda x: jm.nca_loss(x, mask, labels=y, **kw))(e)
        blocked = jax.value_and_grad(lambda x: jm.nca_loss(x, mask, labels=y, block_size=7, **kw))(e)
        assert float(dense[0]) != 0.0
        assert_close(blocked[0], dense[0], rtol=1e-10)
        assert_close(blocked[1], dense[1], rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("name", sorted(PER_QUERY))
def test_per_query_blocked_with_where_multi_hot_masks_and_any_reduction(name):
    fn = BLOCKED[name]
    e, y = _data(1)
    rng = np.random.default_rng(2)
    where = jnp.arange(30) % 4 != 1
    dense = jax.value_and_grad(lambda x: fn(x, y, where=where))(e)
    blocked = jax.value_and_grad(lambda x: fn(x, y, where=where, block_size=8))(e)
    assert_close(blocked[0], dense[0], rtol=1e-10)
    assert_close(blocked[1], dense[1], rtol=1e-9, atol=1e-13)
    multi_hot = jnp.asarray(rng.integers(0, 2, (30, 4)))
    assert_close(fn(e, multi_hot, block_size=4), fn(e, multi_hot), rtol=1e-10)
    mask = jm.PairMask(jnp.asarray(rng.random((30, 30)) < 0.3), jnp.asarray(rng.random((30, 30)) < 0.6))
    assert_close(fn(e, mask, block_size=9), fn(e, mask), rtol=1e-10)
    for red in ("none", lambda l, w: jnp.sum(w * l**2)):
        dense = jax.value_and_grad(lambda x: jnp.sum(fn(x, y, where=where, reduction=red)))(e)
        blocked = jax.value_and_grad(lambda x: jnp.sum(fn(x, y, where=where, reduction=red, block_size=7)))(e)
        assert_close(blocked[0], dense[0], rtol=1e-10)
        assert_close(blocked[1], dense[1], rtol=1e-9, atol=1e-13)
    assert_close(fn(e, y, reduction="none", block_size=7), fn(e, y, reduction="none"), rtol=1e-10, atol=1e-15)


def test_supcon_gate_is_global_in_blocks():
    """One class in the whole batch: 0 (as PML), even though every block has positives."""
    e, _ = _data(3)
    y = jnp.zeros(30, int)
    assert float(jm.supcon_loss(e, y, block_size=4)) == 0.0


@pytest.mark.parametrize("name", ["supcon", "ntxent", "circle", "lifted_structure", "nca", "instance", "fast_ap", "ranked_list"])
def test_blocked_with_axis_name_equals_single_device(name):
    fn = BLOCKED[name]
    e, y = _data(4, b=32)
    w = jnp.asarray(np.random.default_rng(5).normal(size=(6, 6)))
    v_ref, g_ref = jax.value_and_grad(lambda w_: fn(e @ w_, y))(w)

    def step(w_, xl, yl):
        v, g = jax.value_and_grad(lambda ww: fn(xl @ ww, yl, axis_name="d", block_size=3))(w_)
        return v, jax.lax.pmean(g, "d")

    mesh = Mesh(np.array(jax.devices()[:4]), ("d",))
    v, g = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P("d"), P("d")), out_specs=(P(), P())))(w, e, y)
    assert_close(v, v_ref)
    assert_close(g, g_ref)


def test_block_size_errors():
    e, y = _data()
    with pytest.raises(ValueError, match="`block_size` must be None or a positive int; got 0"):
        jm.supcon_loss(e, y, block_size=0)
    with pytest.raises(ValueError, match="`block_size` needs a reduction whose partial sums add up over blocks"):
        jm.supcon_loss(e, y, block_size=4, reduction="none")


@pytest.mark.parametrize("name", ["supcon", "lifted_structure", "nca", "instance"])  # lifted: its first pass over blocks too
def test_blocked_memory_does_not_hold_b_by_r(name):
    """The compiled blocked step's temporaries are far below one [B, B] float32 matrix."""
    fn = BLOCKED[name]
    b = 2048
    e = jnp.zeros((b, 16), jnp.float32)
    y = jnp.arange(b) % 64

    def temp_bytes(block_size):
        compiled = jax.jit(jax.grad(lambda x: fn(x, y, block_size=block_size))).lower(e).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    dense, blocked = temp_bytes(None), temp_bytes(64)
    assert blocked < b * b * 4 / 2  # less than half of one [B, B] float32 matrix
    assert blocked < dense / 8


# ------------------------------------------------ class-matrix and two-view losses (map_row_blocks)
B, D, C = 13, 5, 11


def _class_matrix_data(seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(B, D)))
    y = jnp.asarray(rng.normal(size=(B, D)))
    labels = jnp.asarray(rng.integers(0, C, B).astype(np.int32))
    where = jnp.asarray(np.arange(B) % 5 != 2)
    w = jnp.asarray(rng.normal(size=(C, D)))
    w3 = jnp.asarray(rng.normal(size=(C, 3, D)))
    return x, y, labels, where, w, w3


X, Y, LABELS, WHERE, W, W3 = _class_matrix_data()


def _counts_loss(e, lab, w, **kw):
    return jm.dynamic_arcface_loss(e, lab, w, jnp.arange(1, C + 1), **kw)


# (loss, weights, extra kwargs); called as loss(x, labels, weights, block_size=..., where=...)
CLASS_LOSSES = {
    "proxy_anchor": (jm.proxy_anchor_loss, W, {"alpha": 4.0}),
    "proxy_nca": (jm.proxy_nca_loss, W, {}),
    "soft_triple": (jm.soft_triple_loss, W3, {"la": 4.0}),
    "normalized_softmax": (jm.normalized_softmax_loss, W, {"temperature": 0.5}),
    "arcface": (jm.arcface_loss, W, {"scale": 4.0}),
    "cosface": (jm.cosface_loss, W, {"scale": 4.0}),
    "large_margin_softmax": (jm.large_margin_softmax_loss, W, {"margin": 3}),
    "sphereface": (jm.sphereface_loss, W, {"margin": 2}),
    "subcenter_arcface": (jm.subcenter_arcface_loss, W3, {"scale": 4.0}),
    "dynamic_arcface": (_counts_loss, W3, {"scale": 4.0}),
    "p2sgrad": (jm.p2sgrad_loss, W, {}),
}


def _check(fn, args, block_sizes, argnums):
    both = jax.jit(jax.value_and_grad(fn, argnums=argnums), static_argnums=len(args))
    v, g = both(*args, None)
    blocked = both
    for bs in block_sizes:
        vb, gb = blocked(*args, bs)
        assert_close(vb, v, rtol=1e-10, what=f"value, block_size={bs}")
        for a, b in zip(jax.tree.leaves(gb), jax.tree.leaves(g)):
            assert_close(a, b, rtol=1e-9, atol=1e-12, what=f"gradient, block_size={bs}")


@pytest.mark.parametrize("name", list(CLASS_LOSSES))
def test_class_matrix_losses_blocked_equal_dense(name):
    loss, w, kw = CLASS_LOSSES[name]
    fn = lambda e, ww, bs: loss(e, LABELS, ww, where=WHERE, block_size=bs, **kw)  # noqa: E731
    _check(fn, (X, w), [4], (0, 1))


def test_proxy_anchor_blocked_none_mask_and_regularizer():
    mask = jm.pair_mask(LABELS)
    reg = lambda w: jnp.sum(w**2)  # noqa: E731
    for kw in ({"reduction": "none"}, {"mask": mask, "weight_regularizer": reg}):
        dense = jm.proxy_anchor_loss(X, LABELS, W, **kw)
        assert_close(jm.proxy_anchor_loss(X, LABELS, W, block_size=3, **kw), dense, rtol=1e-10)


def test_classifier_blocked_none_and_sample_weights():
    sw = jnp.linspace(0.1, 1.0, B)
    for kw in ({"reduction": "none"}, {"sample_weights": sw}):
        dense = jm.arcface_loss(X, LABELS, W, **kw)
        assert_close(jm.arcface_loss(X, LABELS, W, block_size=5, **kw), dense, rtol=1e-10)


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_two_tower_blocked_equal_dense(name):
    if name == "clip":
        fn = lambda a, b, t, bs: jm.clip_loss(a, b, t, where=WHERE, block_size=bs)  # noqa: E731
        params = (jnp.asarray(np.log(0.2)),)
    else:
        fn = lambda a, b, t, bias, bs: jm.siglip_loss(a, b, t, bias, where=WHERE, block_size=bs)  # noqa: E731
        params = (jnp.asarray(0.7), jnp.asarray(-2.0))
    _check(fn, (X, Y) + params, [1, 3], tuple(range(2 + len(params))))
    none_dense = (jm.clip_loss(X, Y, params[0], reduction="none") if name == "clip"
                  else jm.siglip_loss(X, Y, *params, reduction="none"))
    none_blocked = (jm.clip_loss(X, Y, params[0], reduction="none", block_size=4) if name == "clip"
                    else jm.siglip_loss(X, Y, *params, reduction="none", block_size=4))
    assert_close(none_blocked, none_dense, rtol=1e-10)


def test_class_matrix_and_two_view_block_size_errors():
    with pytest.raises(ValueError, match="`block_size` must be None or a positive int; got 0"):
        jm.clip_loss(X, Y, 0.0, block_size=0)
    with pytest.raises(ValueError, match="`block_size` must be None or a positive int; got -2"):
        jm.proxy_anchor_loss(X, LABELS, W, block_size=-2)
    with pytest.raises(ValueError, match="`block_size` must be None or a positive int; got 2.5"):
        jm.arcface_loss(X, LABELS, W, block_size=2.5)


def _temp_bytes(f, *args):
    return jax.jit(jax.grad(f, argnums=tuple(range(len(args))))).lower(*args).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("name", ["clip", "siglip", "arcface", "proxy_anchor"])
def test_blocked_memory_does_not_hold_the_dense_matrix(name):
    """Forward + backward temporaries of the blocked step are far below one dense matrix."""
    n, d, c = 2048, 16, 2048
    a = jnp.zeros((n, d), jnp.float32) + 0.1
    b = jnp.ones((n, d), jnp.float32)
    lab = jnp.arange(n, dtype=jnp.int32) % c
    w = jnp.ones((c, d), jnp.float32)
    t0, t1 = jnp.float32(0.0), jnp.float32(-1.0)
    fns = {
        "clip": lambda bs: (lambda x, y, t: jm.clip_loss(x, y, t, block_size=bs), a, b, t0),
        "siglip": lambda bs: (lambda x, y, t, bias: jm.siglip_loss(x, y, t, bias, block_size=bs), a, b, t0, t1),
        "arcface": lambda bs: (lambda x, ww: jm.arcface_loss(x, lab, ww, block_size=bs), a, w),
        "proxy_anchor": lambda bs: (lambda x, ww: jm.proxy_anchor_loss(x, lab, ww, block_size=bs), a, w),
    }
    dense, blocked = _temp_bytes(*fns[name](None)), _temp_bytes(*fns[name](64))
    assert blocked < n * c * 4 / 2  # less than half of one [B, R] float32 matrix
    assert blocked < dense / 8
