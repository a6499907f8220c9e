"""axis_name: data-parallel steps equal the single-device step on the concatenated batch."""
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
