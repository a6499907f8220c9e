"""axis_name for the class-matrix losses (proxies, classifier heads, manifold proxies): shard_map
steps (and for some cases pmap and vmap(axis_name) steps) with ``grads = pmean(grads)`` equal
the single-device step on the concatenated batch (value and gradient w.r.t. a shared linear
layer and the loss's own learned parameters; states too). The step check and the data are
tests/distributed_steps.py's.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from tests import distributed_steps as ds


def _manifold_case():
    rng = np.random.default_rng(11)
    prox = jnp.asarray(rng.normal(size=(3, ds.D)))
    mc = jnp.asarray(rng.integers(0, 3, ds.N).astype(np.int32))

    def f(p, x, m, wh, axis_name=None):
        return jm.manifold_loss(ds.emb(p, x), m, p["prox"], where=wh, axis_name=axis_name)
    return f, ds.with_params(prox=prox), ("x", mc, "where")


def _manifold_key_case():
    rng = np.random.default_rng(12)
    prox = jnp.asarray(rng.normal(size=(3, ds.D)))

    def f(p, x, axis_name=None):
        return jm.manifold_loss(ds.emb(p, x), None, p["prox"], key=jax.random.key(3), axis_name=axis_name)
    return f, ds.with_params(prox=prox), ("x",)


def _dynamic_arcface(emb, y, w, **kw):  # class_counts is positional
    return jm.dynamic_arcface_loss(emb, y, w, jnp.arange(1, ds.C + 1), **kw)


_rng = np.random.default_rng(20)
_PROXIES = _rng.normal(size=(ds.C, ds.D))
_CENTERS = _rng.normal(size=(ds.C, 2, ds.D))


CASES = {
    "proxy_anchor": lambda: ds.class_case(jm.proxy_anchor_loss, _PROXIES, alpha=4.0),
    "proxy_anchor-blocks-mask": lambda: ds.class_case(jm.proxy_anchor_loss, _PROXIES, with_mask=True, alpha=4.0, block_size=4),
    "proxy_nca-mask": lambda: ds.class_case(jm.proxy_nca_loss, _PROXIES, with_mask=True),
    "soft_triple": lambda: ds.class_case(jm.soft_triple_loss, _CENTERS, la=4.0),
    "normalized_softmax": lambda: ds.class_case(jm.normalized_softmax_loss, _PROXIES, temperature=0.5),
    "arcface-blocks": lambda: ds.class_case(jm.arcface_loss, _PROXIES, scale=4.0, block_size=3),
    "cosface-mask": lambda: ds.class_case(jm.cosface_loss, _PROXIES, with_mask=True, scale=4.0),
    "large_margin_softmax": lambda: ds.class_case(jm.large_margin_softmax_loss, _PROXIES, margin=2),
    "sphereface": lambda: ds.class_case(jm.sphereface_loss, _PROXIES, margin=2),
    "subcenter_arcface": lambda: ds.class_case(jm.subcenter_arcface_loss, _CENTERS, scale=4.0),
    "dynamic_arcface": lambda: ds.class_case(_dynamic_arcface, _CENTERS, scale=4.0),
    "p2sgrad": lambda: ds.class_case(jm.p2sgrad_loss, _PROXIES),
    "manifold": lambda: _manifold_case(),
    "manifold-key": lambda: _manifold_key_case(),
}
# Every case runs under shard_map (whose typed collectives are the strict test of the
# psum-of-shares contract); these run under pmap and vmap(axis_name) too (compile time).
ALL_TRANSFORMS = {"proxy_anchor-blocks-mask", "arcface-blocks", "manifold"}


@pytest.mark.parametrize("name", list(CASES))
def test_axis_name_steps_equal_single_device(name):
    ds.check_steps(CASES[name](), aux=False, all_transforms=name in ALL_TRANSFORMS)


def test_manifold_key_is_global_draw():
    """With a key, the meta classes are the global batch's draw (same as one device)."""
    mc = jm.manifold_meta_classes(jax.random.key(3), ds.N, 3)
    parts = jax.vmap(lambda i: jax.lax.dynamic_slice_in_dim(mc, i * ds.B, ds.B), axis_name="d")(jnp.arange(ds.NDEV))
    np.testing.assert_array_equal(np.asarray(parts).reshape(-1), np.asarray(mc))
