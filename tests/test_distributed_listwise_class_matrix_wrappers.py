"""axis_name for the listwise, histogram, self-supervised, contrastive, proxy, classifier and
manifold losses and the wrappers: pmap, shard_map and vmap(axis_name) steps with
``grads = pmean(grads)`` equal the single-device step on the concatenated batch (value and
gradient w.r.t. a shared linear layer and the loss's own learned parameters; states too).

Every case is ``f(params, *data, axis_name=None) -> loss`` (or ``(loss, aux)``), with ``data``
sharded on axis 0 over 4 simulated devices; device 0 holds a single class (uneven labels).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

import jaxmetric as jm
from tests.pml_utils import assert_close

NDEV = 4
B = 4  # rows per device
N = NDEV * B
D_IN, D = 5, 4
C = 6  # classes


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D_IN))
    x2 = x + 0.3 * rng.normal(size=(N, D_IN))  # a second view
    y = np.concatenate([np.zeros(B, np.int32), rng.integers(0, 4, N - B).astype(np.int32)])
    where = np.arange(N) % 7 != 5  # padded rows, unevenly spread over the devices
    multi = (rng.random((N, 3)) < 0.4).astype(np.int32)
    w = rng.normal(size=(D_IN, D))
    return dict(x=jnp.asarray(x), x2=jnp.asarray(x2), y=jnp.asarray(y), where=jnp.asarray(where),
                multi=jnp.asarray(multi), w=jnp.asarray(w), rng=rng)


_DATA = _data()


def _params(**extra):
    return {"w": _DATA["w"], **extra}


def _emb(p, x):
    return x @ p["w"]


# ----------------------------------------------------------------------------- cases

def _labels_case(loss, **kw):
    def f(p, x, y, axis_name=None):
        return loss(_emb(p, x), y, axis_name=axis_name, **kw)
    return f, _params(), ("x", "y")


def _labels_where_case(loss, **kw):
    def f(p, x, y, wh, axis_name=None):
        return loss(_emb(p, x), y, where=wh, axis_name=axis_name, **kw)
    return f, _params(), ("x", "y", "where")


def _mask_case(loss, **kw):
    """A PairMask (rows: this device's samples, columns: the global batch) with an asymmetric
    selection of positives."""
    y = np.asarray(_DATA["y"])
    rng = np.random.default_rng(7)
    pos = (y[:, None] == y[None, :]) & (rng.random((N, N)) < 0.7)
    neg = y[:, None] != y[None, :]
    pos, neg = jnp.asarray(pos), jnp.asarray(neg)

    def f(p, x, mp, mn, axis_name=None):
        return loss(_emb(p, x), jm.PairMask(mp, mn), axis_name=axis_name, **kw)
    return f, _params(), ("x", pos, neg)


def _miner_output_case(loss, **kw):
    y = np.asarray(_DATA["y"])
    rng = np.random.default_rng(8)
    pos = jnp.asarray((y[:, None] == y[None, :]) & (rng.random((N, N)) < 0.5) & ~np.eye(N, dtype=bool))
    neg = jnp.asarray((y[:, None] != y[None, :]) & (rng.random((N, N)) < 0.3))

    def f(p, x, yy, mp, mn, axis_name=None):
        return loss(_emb(p, x), yy, miner_output=jm.PairMask(mp, mn), axis_name=axis_name, **kw)
    return f, _params(), ("x", "y", pos, neg)


def _dsm_case(**kw):
    state = jm.init_dynamic_soft_margin_state(10)

    def f(p, x, y, axis_name=None):
        loss, new = jm.dynamic_soft_margin_loss(_emb(p, x), y, state, axis_name=axis_name, **kw)
        return loss, new.hist
    return f, _params(), ("x", "y")


def _dsm_pairs_case():
    state = jm.DynamicSoftMarginState(jnp.full((10,), 0.1))

    def f(p, x, x2, wh, axis_name=None):
        loss, new = jm.dynamic_soft_margin_loss(_emb(p, x), None, state, ref_emb=_emb(p, x2), where=wh, axis_name=axis_name)
        return loss, new.hist
    return f, _params(), ("x", "x2", "where")


def _two_view_case(loss, params=None, **kw):
    extra = params or {}

    def f(p, x, x2, wh, axis_name=None):
        args = [p[k] for k in extra]
        return loss(_emb(p, x), _emb(p, x2), *args, where=wh, axis_name=axis_name, **kw)
    return f, _params(**extra), ("x", "x2", "where")


def _vicreg_case():
    def f(p, x, x2, wh, axis_name=None):
        return jm.vicreg_loss(_emb(p, x), _emb(p, x2), where=wh, axis_name=axis_name)
    return f, _params(), ("x", "x2", "where")


def _multi_supcon_case():
    def f(p, x, m, wh, axis_name=None):
        return jm.multi_supcon_loss(_emb(p, x), m, where=wh, axis_name=axis_name, temperature=0.5)
    return f, _params(), ("x", "multi", "where")


def _class_case(loss, weights, with_where=True, with_mask=False, **kw):
    extra = {"cw": jnp.asarray(weights)}
    if with_mask:
        y = np.asarray(_DATA["y"])
        rng = np.random.default_rng(9)
        pos = jnp.asarray((y[:, None] == y[None, :]) & (rng.random((N, N)) < 0.5) & ~np.eye(N, dtype=bool))
        neg = jnp.asarray((y[:, None] != y[None, :]) & (rng.random((N, N)) < 0.3))

        def f(p, x, y, wh, mp, mn, axis_name=None):
            return loss(_emb(p, x), y, p["cw"], where=wh, mask=jm.PairMask(mp, mn), axis_name=axis_name, **kw)
        return f, _params(**extra), ("x", "y", "where", pos, neg)

    def f(p, x, y, wh, axis_name=None):
        return loss(_emb(p, x), y, p["cw"], where=wh if with_where else None, axis_name=axis_name, **kw)
    return f, _params(**extra), ("x", "y", "where")


def _manifold_case():
    rng = np.random.default_rng(11)
    prox = jnp.asarray(rng.normal(size=(3, D)))
    mc = jnp.asarray(rng.integers(0, 3, N).astype(np.int32))

    def f(p, x, m, wh, axis_name=None):
        return jm.manifold_loss(_emb(p, x), m, p["prox"], where=wh, axis_name=axis_name)
    return f, _params(prox=prox), ("x", mc, "where")


def _manifold_key_case():
    rng = np.random.default_rng(12)
    prox = jnp.asarray(rng.normal(size=(3, D)))

    def f(p, x, axis_name=None):
        return jm.manifold_loss(_emb(p, x), None, p["prox"], key=jax.random.key(3), axis_name=axis_name)
    return f, _params(prox=prox), ("x",)


def _self_supervised_case(symmetric):
    def f(p, x, x2, wh, axis_name=None):
        return jm.self_supervised_loss(jm.ntxent_loss, _emb(p, x), _emb(p, x2), symmetric=symmetric, where=wh, axis_name=axis_name)
    return f, _params(), ("x", "x2", "where")


def _multi_view_case():
    def f(p, x, x2, axis_name=None):
        views = [_emb(p, x), _emb(p, x2), _emb(p, x + x2)]
        return jm.multi_view_loss(jm.supcon_loss, views, axis_name=axis_name, temperature=0.5)
    return f, _params(), ("x", "x2")


def _xbm_case():
    rng = np.random.default_rng(13)
    state = jm.init_cross_batch_memory(24, D)
    # A memory that already holds 10 past embeddings; the queue is mid-way.
    mem = jnp.zeros((24, D)).at[:10].set(jnp.asarray(rng.normal(size=(10, D))))
    state = jm.CrossBatchMemoryState(
        embeddings=mem, labels=jnp.zeros((24,), jnp.int32).at[:10].set(jnp.asarray(rng.integers(0, 4, 10), jnp.int32)),
        filled=jnp.arange(24) < 10, queue_idx=jnp.asarray(10, jnp.int32),
    )

    def f(p, x, y, wh, axis_name=None):
        loss, new = jm.cross_batch_memory_loss(jm.contrastive_loss, _emb(p, x), y, state, where=wh, axis_name=axis_name)
        return loss, (new.embeddings, new.labels, new.filled, new.queue_idx)
    return f, _params(), ("x", "y", "where")


def _multiple_losses_case():
    combo = jm.multiple_losses([jm.supcon_loss, functools.partial(jm.triplet_margin_loss, margin=0.3)], weights=[1.0, 0.5])

    def f(p, x, y, axis_name=None):
        return combo(_emb(p, x), y, axis_name=axis_name)
    return f, _params(), ("x", "y")


def _dynamic_arcface(emb, y, w, **kw):  # class_counts is positional
    return jm.dynamic_arcface_loss(emb, y, w, jnp.arange(1, C + 1), **kw)


_rng = np.random.default_rng(20)
_PROXIES = _rng.normal(size=(C, D))
_CENTERS = _rng.normal(size=(C, 2, D))

CASES = {
    "fast_ap": lambda: _labels_case(jm.fast_ap_loss, num_bins=6),
    "fast_ap-miner_output": lambda: _miner_output_case(jm.fast_ap_loss),
    "smooth_ap": lambda: _labels_where_case(jm.smooth_ap_loss, temperature=0.1),
    "smooth_ap-mask": lambda: _mask_case(jm.smooth_ap_loss, temperature=0.1),
    "pnp": lambda: _labels_where_case(jm.pnp_loss, anneal=0.1),
    "pnp-Ds": lambda: _labels_case(jm.pnp_loss, anneal=0.1, variant="Ds"),
    "histogram": lambda: _labels_where_case(jm.histogram_loss, n_bins=8),
    "histogram-mask": lambda: _mask_case(jm.histogram_loss, n_bins=8),
    "dynamic_soft_margin": lambda: _dsm_case(),
    "dynamic_soft_margin-blocks": lambda: _dsm_case(block_size=3),
    "dynamic_soft_margin-pairs": lambda: _dsm_pairs_case(),
    "vicreg": lambda: _vicreg_case(),
    "clip": lambda: _two_view_case(jm.clip_loss, {"lt": jnp.asarray(np.log(0.3))}),
    "clip-blocks": lambda: _two_view_case(jm.clip_loss, {"lt": jnp.asarray(np.log(0.3))}, block_size=3),
    "siglip": lambda: _two_view_case(jm.siglip_loss, {"tp": jnp.asarray(0.5), "bias": jnp.asarray(-1.0)}),
    "siglip-blocks": lambda: _two_view_case(jm.siglip_loss, {"tp": jnp.asarray(0.5), "bias": jnp.asarray(-1.0)}, block_size=3),
    "multi_supcon": lambda: _multi_supcon_case(),
    "dcl": lambda: _two_view_case(jm.dcl_loss, temperature=0.5),
    "dclw": lambda: _two_view_case(jm.dclw_loss, temperature=0.5),
    "barlow_twins": lambda: _two_view_case(jm.barlow_twins_loss, lambd=0.1),
    "proxy_anchor": lambda: _class_case(jm.proxy_anchor_loss, _PROXIES, alpha=4.0),
    "proxy_anchor-blocks-mask": lambda: _class_case(jm.proxy_anchor_loss, _PROXIES, with_mask=True, alpha=4.0, block_size=4),
    "proxy_nca-mask": lambda: _class_case(jm.proxy_nca_loss, _PROXIES, with_mask=True),
    "soft_triple": lambda: _class_case(jm.soft_triple_loss, _CENTERS, la=4.0),
    "normalized_softmax": lambda: _class_case(jm.normalized_softmax_loss, _PROXIES, temperature=0.5),
    "arcface-blocks": lambda: _class_case(jm.arcface_loss, _PROXIES, scale=4.0, block_size=3),
    "cosface-mask": lambda: _class_case(jm.cosface_loss, _PROXIES, with_mask=True, scale=4.0),
    "large_margin_softmax": lambda: _class_case(jm.large_margin_softmax_loss, _PROXIES, margin=2),
    "sphereface": lambda: _class_case(jm.sphereface_loss, _PROXIES, margin=2),
    "subcenter_arcface": lambda: _class_case(jm.subcenter_arcface_loss, _CENTERS, scale=4.0),
    "dynamic_arcface": lambda: _class_case(_dynamic_arcface, _CENTERS, scale=4.0),
    "p2sgrad": lambda: _class_case(jm.p2sgrad_loss, _PROXIES),
    "manifold": lambda: _manifold_case(),
    "manifold-key": lambda: _manifold_key_case(),
    "self_supervised-symmetric": lambda: _self_supervised_case(True),
    "self_supervised-asymmetric": lambda: _self_supervised_case(False),
    "multi_view": lambda: _multi_view_case(),
    "cross_batch_memory": lambda: _xbm_case(),
    "multiple_losses": lambda: _multiple_losses_case(),
}


def _resolve_case(name):
    f, params, spec = CASES[name]()
    data = tuple(_DATA[s] if isinstance(s, str) else s for s in spec)
    return f, params, data


# Every case runs under shard_map (whose typed collectives are the strict test of the
# psum-of-shares contract); these run under pmap and vmap(axis_name) too (compile time).
ALL_TRANSFORMS = {
    "smooth_ap", "histogram-mask", "dynamic_soft_margin", "vicreg", "clip", "siglip-blocks",
    "proxy_anchor-blocks-mask", "arcface-blocks", "manifold", "cross_batch_memory", "dclw",
}


def _has_aux(name):
    return name.startswith("dynamic_soft_margin") or name == "cross_batch_memory"


@pytest.mark.parametrize("name", list(CASES))
def test_axis_name_steps_equal_single_device(name):
    f, params, data = _resolve_case(name)
    aux = _has_aux(name)

    def value_and_grad(p, *d, axis_name=None):
        return jax.value_and_grad(lambda pp: f(pp, *d, axis_name=axis_name), has_aux=aux)(p)

    ref_out, g_ref = jax.jit(value_and_grad)(params, *data)
    v_ref = ref_out[0] if aux else ref_out
    assert np.isfinite(float(v_ref)) and float(v_ref) != 0.0
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(g_ref))

    def step(p, *d):
        out, g = value_and_grad(p, *d, axis_name="d")
        return out, jax.lax.pmean(g, "d")

    stacked = tuple(a.reshape((NDEV, B) + a.shape[1:]) for a in data)
    in_axes = (None,) + (0,) * len(data)

    def check(out, g, what, first):
        pick = (lambda t: jax.tree.map(lambda a: a[0], t)) if first else (lambda t: t)
        out, g = pick(out), pick(g)
        assert_close(out[0] if aux else out, v_ref, what=f"{what} value")
        if aux:
            for a, b in zip(jax.tree.leaves(out[1]), jax.tree.leaves(ref_out[1])):
                assert_close(a, b, what=f"{what} aux")
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
            assert_close(a, b, rtol=1e-6, atol=1e-10, what=f"{what} gradient")

    mesh = Mesh(np.array(jax.devices()[:NDEV]), ("d",))
    sm = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(),) + (P("d"),) * len(data), out_specs=P()))
    out, g = sm(params, *data)
    check(out, g, "shard_map", False)
    if name not in ALL_TRANSFORMS:
        return

    out, g = jax.pmap(step, axis_name="d", in_axes=in_axes, devices=jax.devices()[:NDEV])(params, *stacked)
    check(out, g, "pmap", True)

    out, g = jax.jit(jax.vmap(step, axis_name="d", in_axes=in_axes))(params, *stacked)
    check(out, g, "vmap", True)


def test_manifold_key_is_global_draw():
    """With a key, the meta classes are the global batch's draw (same as one device)."""
    mc = jm.manifold_meta_classes(jax.random.key(3), N, 3)
    parts = jax.vmap(lambda i: jax.lax.dynamic_slice_in_dim(mc, i * B, B), axis_name="d")(jnp.arange(NDEV))
    np.testing.assert_array_equal(np.asarray(parts).reshape(-1), np.asarray(mc))


def test_errors_with_axis_name():
    x, y = _DATA["x"][:, :D], _DATA["y"]
    run = lambda g: jax.vmap(g, axis_name="d")(x.reshape(NDEV, B, D), y.reshape(NDEV, B))  # noqa: E731
    with pytest.raises(ValueError, match="callable `reduction` cannot be combined with `axis_name`"):
        run(lambda a, b: jm.smooth_ap_loss(a, b, reduction=lambda l, w: l.sum(), axis_name="d"))
    with pytest.raises(ValueError, match="callable `reduction` cannot be combined with `axis_name`"):
        run(lambda a, b: jm.vicreg_loss(a, a + 1.0, reduction=lambda l, w: l.sum(), axis_name="d"))
    state = jm.init_dynamic_soft_margin_state(10)
    with pytest.raises(ValueError, match="as many rows as `embeddings`"):
        run(lambda a, b: jm.dynamic_soft_margin_loss(a, None, state, ref_emb=a[:2], axis_name="d")[0])
    mem = jm.init_cross_batch_memory(18, D)
    with pytest.raises(ValueError, match="divisible by the number of devices"):
        run(lambda a, b: jm.cross_batch_memory_loss(jm.contrastive_loss, a, b, mem, axis_name="d")[0])
    mem = jm.init_cross_batch_memory(8, D)
    with pytest.raises(ValueError, match="global batch"):
        run(lambda a, b: jm.cross_batch_memory_loss(jm.contrastive_loss, a, b, mem, axis_name="d")[0])
