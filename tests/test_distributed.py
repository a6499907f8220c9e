"""axis_name for the pair-, triplet- and batch-softmax losses and the miners: data-parallel steps
equal the single-device step on the concatenated batch.

First the pair-based and triplet losses (contrastive, triplet, multi-similarity, circle, NT-Xent,
SupCon) under pmap, shard_map, vmap(axis_name) and jit with a NamedSharding.

Then the angle, lifted, pair-margin, margin, softmax-over-the-batch losses and the miners:
shard_map (and, for a few, pmap) steps with ``grads = pmean(grads)`` equal the single-device
step on the concatenated batch (value and gradient w.r.t. a shared linear layer, and margin
loss's learned beta). Miners: ``loss(emb, miner(emb, y, axis_name), axis_name)`` equals
``loss(emb, miner(emb, y))`` on one device. 4 simulated devices; device 0 holds a single class
(uneven labels).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import jaxmetric as jm
from tests.pml_utils import assert_close

NDEV = 4
B_LOCAL = 6

LOSSES = {
    "contrastive": functools.partial(jm.contrastive_loss),
    "triplet": functools.partial(jm.triplet_margin_loss, margin=0.3),
    "triplet-swap-smooth": functools.partial(jm.triplet_margin_loss, swap=True, smooth_loss=True),
    "multi_similarity": jm.multi_similarity_loss,
    "circle": jm.circle_loss,
    "ntxent": jm.ntxent_loss,
    "supcon": jm.supcon_loss,
    "supcon-mean": functools.partial(jm.supcon_loss, reduction="mean"),
}


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(NDEV * B_LOCAL, 5)))
    w = jnp.asarray(rng.normal(size=(5, 4)))
    # Uneven labels across devices: device 0 holds only class 0, the others mix.
    y = jnp.asarray(np.concatenate([np.zeros(B_LOCAL, int), rng.integers(0, 4, (NDEV - 1) * B_LOCAL)]))
    return w, x, y


def _single(loss, w, x, y):
    return jax.value_and_grad(lambda w_: loss(x @ w_, y))(w)


def _local_step(loss):
    def step(w, x, y):
        v, g = jax.value_and_grad(lambda w_: loss(x @ w_, y, axis_name="d"))(w)
        return v, jax.lax.pmean(g, "d")

    return step


@pytest.mark.parametrize("name", list(LOSSES))
def test_pmap_shard_map_vmap_equal_single_device(name):
    loss = LOSSES[name]
    w, x, y = _problem()
    v_ref, g_ref = _single(loss, w, x, y)
    assert float(v_ref) > 0
    step = _local_step(loss)
    xs, ys = x.reshape(NDEV, B_LOCAL, -1), y.reshape(NDEV, B_LOCAL)

    v, g = jax.pmap(step, axis_name="d", in_axes=(None, 0, 0), devices=jax.devices()[:NDEV])(w, xs, ys)
    assert_close(v[0], v_ref, what="pmap value")
    assert_close(g[0], g_ref, what="pmap gradient")

    mesh = Mesh(np.array(jax.devices()[:NDEV]), ("d",))
    sm = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P("d"), P("d")), out_specs=(P(), P())))
    v, g = sm(w, x, y)
    assert_close(v, v_ref, what="shard_map value")
    assert_close(g, g_ref, what="shard_map gradient")

    v, g = jax.vmap(step, axis_name="d", in_axes=(None, 0, 0))(w, xs, ys)
    assert_close(v[0], v_ref, what="vmap value")
    assert_close(g[0], g_ref, what="vmap gradient")


@pytest.mark.parametrize("name", ["contrastive", "supcon", "triplet"])
def test_axis_name_with_ref_emb_and_where(name):
    """Queries vs a sharded reference set, with padded rows on one device."""
    loss = LOSSES[name]
    w, x, y = _problem(1)
    rng = np.random.default_rng(2)
    ref = jnp.asarray(rng.normal(size=(NDEV * 3, 5)))
    ref_y = jnp.asarray(rng.integers(0, 4, NDEV * 3))
    where = jnp.asarray(np.arange(NDEV * B_LOCAL) % 7 != 3)
    v_ref, g_ref = jax.value_and_grad(
        lambda w_: loss(x @ w_, y, ref_emb=ref @ w_, ref_labels=ref_y, where=where)
    )(w)

    def step(w_, xl, yl, rl, ryl, wl):
        v, g = jax.value_and_grad(lambda ww: loss(xl @ ww, yl, ref_emb=rl @ ww, ref_labels=ryl, where=wl, axis_name="d"))(w_)
        return v, jax.lax.pmean(g, "d")

    mesh = Mesh(np.array(jax.devices()[:NDEV]), ("d",))
    sm = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P("d"), P("d"), P("d"), P("d"), P("d")), out_specs=(P(), P())))
    v, g = sm(w, x, y, ref, ref_y, where)
    assert_close(v, v_ref)
    assert_close(g, g_ref)


@pytest.mark.parametrize("name", ["contrastive", "triplet", "circle", "supcon", "ntxent", "multi_similarity"])
def test_jit_with_named_sharding_equals_single_device(name):
    """Without axis_name, a loss on globally sharded arrays is the ordinary global loss."""
    loss = LOSSES[name]
    w, x, y = _problem(3)
    v_ref, g_ref = _single(loss, w, x, y)
    mesh = Mesh(np.array(jax.devices()[:NDEV]), ("d",))
    xs = jax.device_put(x, NamedSharding(mesh, P("d")))
    ys = jax.device_put(y, NamedSharding(mesh, P("d")))
    v, g = jax.jit(lambda w_, a, b: _single(loss, w_, a, b))(w, xs, ys)
    assert_close(v, v_ref)
    assert_close(g, g_ref)


def test_callable_reduction_rejected_with_axis_name():
    w, x, y = _problem()
    with pytest.raises(ValueError, match="callable `reduction` cannot be combined with `axis_name`"):
        jax.vmap(lambda a, b: jm.contrastive_loss(a, b, reduction=lambda l, w: l.sum(), axis_name="d"), axis_name="d")(
            x.reshape(NDEV, B_LOCAL, -1), y.reshape(NDEV, B_LOCAL)
        )


# ------------------------------------------- angle, lifted, pair-margin, margin, batch-softmax losses; miners
B = 4  # rows per device
N = NDEV * B
D_IN, D = 5, 4
C = 4  # classes


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D_IN))
    y = np.concatenate([np.zeros(B, np.int32), rng.integers(0, C, N - B).astype(np.int32)])
    where = np.arange(N) % 7 != 5  # padded rows, unevenly spread over the devices
    w = rng.normal(size=(D_IN, D))
    return dict(x=jnp.asarray(x), y=jnp.asarray(y), where=jnp.asarray(where), w=jnp.asarray(w))


_DATA = _data()


def _emb(p, x):
    return x @ p["w"]


def _params(**extra):
    return {"w": _DATA["w"], **extra}


def _labels_case(loss, with_where=False, **kw):
    if with_where:
        def f(p, x, y, wh, axis_name=None):
            return loss(_emb(p, x), y, where=wh, axis_name=axis_name, **kw)
        return f, _params(), ("x", "y", "where")

    def f(p, x, y, axis_name=None):
        return loss(_emb(p, x), y, axis_name=axis_name, **kw)
    return f, _params(), ("x", "y")


def _mask_case(loss, with_labels=False, **kw):
    """A PairMask (rows: this device's samples, columns: the global batch) with an asymmetric
    selection of positives; ``labels=`` beside it for the losses that need them."""
    y = np.asarray(_DATA["y"])
    rng = np.random.default_rng(7)
    pos = jnp.asarray((y[:, None] == y[None, :]) & (rng.random((N, N)) < 0.7))
    neg = jnp.asarray((y[:, None] != y[None, :]) & (rng.random((N, N)) < 0.8))

    def f(p, x, yy, mp, mn, axis_name=None):
        extra = {"labels": yy} if with_labels else {}
        return loss(_emb(p, x), jm.PairMask(mp, mn), axis_name=axis_name, **extra, **kw)
    return f, _params(), ("x", "y", pos, neg)


def _margin_case(beta, **kw):
    def f(p, x, y, wh, axis_name=None):
        return jm.margin_loss(_emb(p, x), y, p["beta"], where=wh, axis_name=axis_name, **kw)
    return f, _params(beta=jnp.asarray(beta)), ("x", "y", "where")


def _miner_case(miner, loss, key=False, with_where=False, mkw=None, **kw):
    mkw = dict(mkw or {})

    def f(p, x, y, wh, axis_name=None):
        emb = _emb(p, x)
        extra = {"key": jax.random.key(5)} if key else {}
        wkw = {"where": wh} if with_where else {}
        mined = miner(emb, y, axis_name=axis_name, **wkw, **extra, **mkw)
        return loss(emb, mined, axis_name=axis_name, **wkw, **kw)
    return f, _params(), ("x", "y", "where")


_LP2N = jm.LpDistance(normalize_embeddings=True)

CASES = {
    # losses
    "angular": lambda: _labels_case(jm.angular_loss, alpha=30.0),
    "angular-mask": lambda: _mask_case(jm.angular_loss, with_labels=True, alpha=30.0),
    "tuplet_margin": lambda: _labels_case(jm.tuplet_margin_loss, with_where=True, scale=8.0),
    "lifted_structure": lambda: _labels_case(jm.lifted_structure_loss, with_where=True),
    "lifted_structure-mask": lambda: _mask_case(jm.lifted_structure_loss),
    "generalized_lifted_structure": lambda: _labels_case(jm.generalized_lifted_structure_loss, with_where=True),
    "snr_contrastive": lambda: _labels_case(jm.snr_contrastive_loss, with_where=True),
    "intra_pair_variance": lambda: _labels_case(jm.intra_pair_variance_loss, with_where=True),
    "intra_pair_variance-mask": lambda: _mask_case(jm.intra_pair_variance_loss),
    "threshold_consistent_margin": lambda: _labels_case(jm.threshold_consistent_margin_loss, with_where=True, margin_minus=0.0),
    "margin": lambda: _margin_case(0.8, nu=0.1),
    "margin-per_class-mean": lambda: _margin_case(np.linspace(0.5, 1.0, C), nu=0.1, reduction="mean"),
    "margin-avg_nonzero": lambda: _margin_case(0.8, reduction="avg_nonzero"),
    "ranked_list": lambda: _labels_case(jm.ranked_list_loss, with_where=True, margin=0.4, Tn=3.0, Tp=1.0),
    "npairs": lambda: _labels_case(jm.npairs_loss, with_where=True),
    "npairs-mask": lambda: _mask_case(jm.npairs_loss, with_labels=True),
    "nca": lambda: _labels_case(jm.nca_loss, with_where=True),
    "nca-mask": lambda: _mask_case(jm.nca_loss, with_labels=True),
    "instance": lambda: _labels_case(jm.instance_loss, with_where=True, gamma=4.0),
    # miners (deterministic, or keyed but global)
    "pair_margin_miner": lambda: _miner_case(jm.pair_margin_miner, jm.contrastive_loss, with_where=True, mkw=dict(pos_margin=0.5, neg_margin=2.0)),
    "multi_similarity_miner": lambda: _miner_case(jm.multi_similarity_miner, jm.multi_similarity_loss, mkw=dict(epsilon=0.3)),
    "batch_hard_miner": lambda: _miner_case(jm.batch_hard_miner, jm.triplet_margin_loss, with_where=True),
    "batch_easy_hard_miner": lambda: _miner_case(jm.batch_easy_hard_miner, jm.triplet_margin_loss),
    "triplet_margin_miner": lambda: _miner_case(jm.triplet_margin_miner, jm.triplet_margin_loss, with_where=True, mkw=dict(margin=0.5)),
    "angular_miner": lambda: _miner_case(jm.angular_miner, jm.triplet_margin_loss, mkw=dict(angle=10, distance=_LP2N)),
    "hdc_miner": lambda: _miner_case(jm.hdc_miner, jm.contrastive_loss, with_where=True, mkw=dict(filter_percentage=0.3)),
    "uniform_histogram_miner": lambda: _miner_case(jm.uniform_histogram_miner, jm.contrastive_loss, key=True, with_where=True,
                                                   mkw=dict(num_bins=5, pos_per_bin=3, neg_per_bin=3)),
    "distance_weighted_miner": lambda: _miner_case(jm.distance_weighted_miner, jm.triplet_margin_loss, key=True,
                                                   mkw=dict(distance=_LP2N, nonzero_loss_cutoff=2.0)),
}

PMAP = {"intra_pair_variance", "margin", "npairs", "hdc_miner"}


def _resolve_case(name):
    f, params, spec = CASES[name]()
    data = tuple(_DATA[s] if isinstance(s, str) else s for s in spec)
    return f, params, data


@pytest.mark.parametrize("name", list(CASES))
def test_axis_name_steps_equal_single_device(name):
    f, params, data = _resolve_case(name)

    def value_and_grad(p, *d, axis_name=None):
        return jax.value_and_grad(lambda pp: f(pp, *d, axis_name=axis_name))(p)

    v_ref, g_ref = jax.jit(value_and_grad)(params, *data)
    assert np.isfinite(float(v_ref)) and float(v_ref) != 0.0
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(g_ref))

    def step(p, *d):
        v, g = value_and_grad(p, *d, axis_name="d")
        return v, jax.lax.pmean(g, "d")

    def check(v, g, what, first):
        pick = (lambda t: jax.tree.map(lambda a: a[0], t)) if first else (lambda t: t)
        v, g = pick(v), pick(g)
        assert_close(v, v_ref, what=f"{what} value")
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
            assert_close(a, b, rtol=1e-6, atol=1e-10, what=f"{what} gradient")

    mesh = Mesh(np.array(jax.devices()[:NDEV]), ("d",))
    sm = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(),) + (P("d"),) * len(data), out_specs=P()))
    check(*sm(params, *data), "shard_map", False)
    if name in PMAP:
        stacked = tuple(a.reshape((NDEV, B) + a.shape[1:]) for a in data)
        pm = jax.pmap(step, axis_name="d", in_axes=(None,) + (0,) * len(data), devices=jax.devices()[:NDEV])
        check(*pm(params, *stacked), "pmap", True)


def test_miner_masks_are_local_rows_of_the_global_mask():
    """Deterministic miners with axis_name return this device's rows of the global mask."""
    emb, y = _DATA["x"][:, :D], _DATA["y"]
    run = lambda g: jax.vmap(g, axis_name="d")(emb.reshape(NDEV, B, D), y.reshape(NDEV, B))  # noqa: E731
    for miner in (jm.pair_margin_miner, jm.batch_hard_miner, jm.hdc_miner):
        full = miner(emb, y)
        parts = run(lambda e, l: miner(e, l, axis_name="d"))
        np.testing.assert_array_equal(np.asarray(parts.pos).reshape(N, N), np.asarray(full.pos))
        np.testing.assert_array_equal(np.asarray(parts.neg).reshape(N, N), np.asarray(full.neg))


def test_errors_with_axis_name():
    x, y = _DATA["x"][:, :D], _DATA["y"]
    run = lambda g: jax.vmap(g, axis_name="d")(x.reshape(NDEV, B, D), y.reshape(NDEV, B))  # noqa: E731
    with pytest.raises(ValueError, match="callable `reduction` cannot be combined with `axis_name`"):
        run(lambda a, b: jm.margin_loss(a, b, reduction=lambda l, w: l.sum(), axis_name="d"))
    with pytest.raises(ValueError, match="callable `reduction` cannot be combined with `axis_name`"):
        run(lambda a, b: jm.tuplet_margin_loss(a, b, reduction=lambda l, w: l.sum(), axis_name="d"))
