"""The data-parallel step check shared by the ``tests/test_distributed_*.py`` files of the ranking,
two-view, class-matrix and wrapper losses: pmap, shard_map and vmap(axis_name) steps with
``grads = pmean(grads)`` equal the single-device step on the concatenated batch (value and
gradient w.r.t. a shared linear layer and the loss's own learned parameters; states too).

A case is ``(f, params, spec)``: ``f(params, *data, axis_name=None) -> loss`` (or ``(loss, aux)``)
with ``data`` named in ``spec`` (keys of :data:`DATA`, or arrays), sharded on axis 0 over 4
simulated devices; device 0 holds a single class (uneven labels).
"""
import jax
import jax.numpy as jnp
import numpy as np
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


DATA = _data()


def with_params(**extra):
    """The shared linear layer ``w`` and the loss's own learned parameters."""
    return {"w": DATA["w"], **extra}


def emb(p, x):
    return x @ p["w"]


def run_mapped(g):
    """``g(embeddings, labels)`` under ``vmap(axis_name="d")``, ``B`` rows per device (for the
    errors a loss raises with ``axis_name``)."""
    x, y = DATA["x"][:, :D], DATA["y"]
    return jax.vmap(g, axis_name="d")(x.reshape(NDEV, B, D), y.reshape(NDEV, B))


# ----------------------------------------------------------------------------- cases

def labels_case(loss, **kw):
    def f(p, x, y, axis_name=None):
        return loss(emb(p, x), y, axis_name=axis_name, **kw)
    return f, with_params(), ("x", "y")


def labels_where_case(loss, **kw):
    def f(p, x, y, wh, axis_name=None):
        return loss(emb(p, x), y, where=wh, axis_name=axis_name, **kw)
    return f, with_params(), ("x", "y", "where")


def mask_case(loss, **kw):
    """A PairMask (rows: this device's samples, columns: the global batch) with an asymmetric
    selection of positives."""
    y = np.asarray(DATA["y"])
    rng = np.random.default_rng(7)
    pos = (y[:, None] == y[None, :]) & (rng.random((N, N)) < 0.7)
    neg = y[:, None] != y[None, :]
    pos, neg = jnp.asarray(pos), jnp.asarray(neg)

    def f(p, x, mp, mn, axis_name=None):
        return loss(emb(p, x), jm.PairMask(mp, mn), axis_name=axis_name, **kw)
    return f, with_params(), ("x", pos, neg)


def miner_output_case(loss, **kw):
    y = np.asarray(DATA["y"])
    rng = np.random.default_rng(8)
    pos = jnp.asarray((y[:, None] == y[None, :]) & (rng.random((N, N)) < 0.5) & ~np.eye(N, dtype=bool))
    neg = jnp.asarray((y[:, None] != y[None, :]) & (rng.random((N, N)) < 0.3))

    def f(p, x, yy, mp, mn, axis_name=None):
        return loss(emb(p, x), yy, miner_output=jm.PairMask(mp, mn), axis_name=axis_name, **kw)
    return f, with_params(), ("x", "y", pos, neg)


def two_view_case(loss, learned=None, **kw):
    extra = learned or {}

    def f(p, x, x2, wh, axis_name=None):
        args = [p[k] for k in extra]
        return loss(emb(p, x), emb(p, x2), *args, where=wh, axis_name=axis_name, **kw)
    return f, with_params(**extra), ("x", "x2", "where")


def class_case(loss, weights, with_where=True, with_mask=False, **kw):
    extra = {"cw": jnp.asarray(weights)}
    if with_mask:
        y = np.asarray(DATA["y"])
        rng = np.random.default_rng(9)
        pos = jnp.asarray((y[:, None] == y[None, :]) & (rng.random((N, N)) < 0.5) & ~np.eye(N, dtype=bool))
        neg = jnp.asarray((y[:, None] != y[None, :]) & (rng.random((N, N)) < 0.3))

        def f(p, x, y, wh, mp, mn, axis_name=None):
            return loss(emb(p, x), y, p["cw"], where=wh, mask=jm.PairMask(mp, mn), axis_name=axis_name, **kw)
        return f, with_params(**extra), ("x", "y", "where", pos, neg)

    def f(p, x, y, wh, axis_name=None):
        return loss(emb(p, x), y, p["cw"], where=wh if with_where else None, axis_name=axis_name, **kw)
    return f, with_params(**extra), ("x", "y", "where")


def check_steps(case, aux=False, all_transforms=False):
    """Asserts the shard_map step (and with ``all_transforms`` the pmap and vmap(axis_name)
    steps) of ``case`` equal the single-device step; ``aux``: ``f`` returns ``(loss, state)``."""
    f, params, spec = case
    data = tuple(DATA[s] if isinstance(s, str) else s for s in spec)

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
    if not all_transforms:
        return

    out, g = jax.pmap(step, axis_name="d", in_axes=in_axes, devices=jax.devices()[:NDEV])(params, *stacked)
    check(out, g, "pmap", True)

    out, g = jax.jit(jax.vmap(step, axis_name="d", in_axes=in_axes))(params, *stacked)
    check(out, g, "vmap", True)
