"""block_size: the blocked path equals the dense path in value and gradient."""
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
    "contrastive-cos-threshold": functools.partial(jm.contrastive_loss, distance=jm.CosineSimilarity(), reduction=jm.threshold(low=0.05)),
}


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


@pytest.mark.parametrize("name", list(BLOCKED))
def test_blocked_with_ref_where_multi_hot_and_masks(name):
    fn = BLOCKED[name]
    e, y = _data(1)
    rng = np.random.default_rng(2)
    ref, ry = jnp.asarray(rng.normal(size=(11, 6))), jnp.asarray(rng.integers(0, 5, 11))
    where = jnp.arange(30) % 4 != 1
    kw = dict(ref_emb=ref, ref_labels=ry, where=where, ref_where=jnp.arange(11) != 3)
    for extra in ({}, {"block_size": 8}):
        pass
    dense = jax.value_and_grad(lambda x, r: fn(x, y, **{**kw, "ref_emb": r}), argnums=(0, 1))(e, ref)
    blocked = jax.value_and_grad(lambda x, r: fn(x, y, block_size=8, **{**kw, "ref_emb": r}), argnums=(0, 1))(e, ref)
    assert_close(blocked[0], dense[0], rtol=1e-10)
    assert_close(blocked[1][0], dense[1][0], rtol=1e-9, atol=1e-13)
    assert_close(blocked[1][1], dense[1][1], rtol=1e-9, atol=1e-13)
    multi_hot = jnp.asarray(rng.integers(0, 2, (30, 4)))
    assert_close(fn(e, multi_hot, block_size=4), fn(e, multi_hot), rtol=1e-10)
    mask = jm.pair_mask(y)
    assert_close(fn(e, mask, block_size=9), fn(e, mask), rtol=1e-10)


def test_supcon_gate_is_global_in_blocks():
    """One class in the whole batch: 0 (as PML), even though every block has positives."""
    e, _ = _data(3)
    y = jnp.zeros(30, int)
    assert float(jm.supcon_loss(e, y, block_size=4)) == 0.0


@pytest.mark.parametrize("name", ["supcon", "ntxent", "circle"])
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


def test_blocked_memory_does_not_hold_b_by_r():
    """The compiled blocked step's temporaries are far below one [B, B] float32 matrix."""
    b = 2048
    e = jnp.zeros((b, 16), jnp.float32)
    y = jnp.arange(b) % 64

    def temp_bytes(block_size):
        compiled = jax.jit(jax.grad(lambda x: jm.supcon_loss(x, y, block_size=block_size))).lower(e).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    dense, blocked = temp_bytes(None), temp_bytes(64)
    assert blocked < b * b * 4 / 2  # less than half of one [B, B] float32 matrix
    assert blocked < dense / 8
