"""axis_name for the wrappers (self-supervised, multi-view, cross-batch memory, multiple losses):
shard_map steps (and for some cases pmap and vmap(axis_name) steps) with ``grads =
pmean(grads)`` equal the single-device step on the concatenated batch (value and gradient w.r.t.
a shared linear layer and the loss's own learned parameters; states too). The step check and the
data are tests/distributed_steps.py's.
"""
import functools

import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from tests import distributed_steps as ds


def _self_supervised_case(symmetric):
    def f(p, x, x2, wh, axis_name=None):
        return jm.self_supervised_loss(
            jm.ntxent_loss, ds.emb(p, x), ds.emb(p, x2), symmetric=symmetric, where=wh, axis_name=axis_name
        )
    return f, ds.with_params(), ("x", "x2", "where")


def _multi_view_case():
    def f(p, x, x2, axis_name=None):
        views = [ds.emb(p, x), ds.emb(p, x2), ds.emb(p, x + x2)]
        return jm.multi_view_loss(jm.supcon_loss, views, axis_name=axis_name, temperature=0.5)
    return f, ds.with_params(), ("x", "x2")


def _xbm_case():
    rng = np.random.default_rng(13)
    state = jm.init_cross_batch_memory(24, ds.D)
    # A memory that already holds 10 past embeddings; the queue is mid-way.
    mem = jnp.zeros((24, ds.D)).at[:10].set(jnp.asarray(rng.normal(size=(10, ds.D))))
    state = jm.CrossBatchMemoryState(
        embeddings=mem, labels=jnp.zeros((24,), jnp.int32).at[:10].set(jnp.asarray(rng.integers(0, 4, 10), jnp.int32)),
        filled=jnp.arange(24) < 10, queue_idx=jnp.asarray(10, jnp.int32),
    )

    def f(p, x, y, wh, axis_name=None):
        loss, new = jm.cross_batch_memory_loss(jm.contrastive_loss, ds.emb(p, x), y, state, where=wh, axis_name=axis_name)
        return loss, (new.embeddings, new.labels, new.filled, new.queue_idx)
    return f, ds.with_params(), ("x", "y", "where")


def _multiple_losses_case():
    combo = jm.multiple_losses([jm.supcon_loss, functools.partial(jm.triplet_margin_loss, margin=0.3)], weights=[1.0, 0.5])

    def f(p, x, y, axis_name=None):
        return combo(ds.emb(p, x), y, axis_name=axis_name)
    return f, ds.with_params(), ("x", "y")


CASES = {
    "self_supervised-symmetric": lambda: _self_supervised_case(True),
    "self_supervised-asymmetric": lambda: _self_supervised_case(False),
    "multi_view": lambda: _multi_view_case(),
    "cross_batch_memory": lambda: _xbm_case(),
    "multiple_losses": lambda: _multiple_losses_case(),
}
# Every case runs under shard_map (whose typed collectives are the strict test of the
# psum-of-shares contract); these run under pmap and vmap(axis_name) too (compile time).
ALL_TRANSFORMS = {"cross_batch_memory"}
WITH_STATE = {"cross_batch_memory"}  # f returns (loss, new state)


@pytest.mark.parametrize("name", list(CASES))
def test_axis_name_steps_equal_single_device(name):
    ds.check_steps(CASES[name](), aux=name in WITH_STATE, all_transforms=name in ALL_TRANSFORMS)


def test_errors_with_axis_name():
    mem = jm.init_cross_batch_memory(18, ds.D)
    with pytest.raises(ValueError, match="divisible by the number of devices"):
        ds.run_mapped(lambda a, b: jm.cross_batch_memory_loss(jm.contrastive_loss, a, b, mem, axis_name="d")[0])
    mem = jm.init_cross_batch_memory(8, ds.D)
    with pytest.raises(ValueError, match="global batch"):
        ds.run_mapped(lambda a, b: jm.cross_batch_memory_loss(jm.contrastive_loss, a, b, mem, axis_name="d")[0])
