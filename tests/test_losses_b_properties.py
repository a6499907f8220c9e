"""Properties of every loss of this family: jit == eager, vmap over a leading axis == a loop,
finite value and gradient on degenerate batches (zero vectors, duplicates, one class, all
distinct) in float32, empty selections give 0 with a zero gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from pml_utils import assert_close

B, D, K = 6, 4, 3
_PROXIES = jnp.asarray(np.random.default_rng(1).normal(size=(K, D)))


def _dsml_state(dtype):
    return jm.DynamicSoftMarginState(jnp.full((10,), 0.1, dtype))


# Each: f(embeddings, labels, where) -> scalar.
LOSSES = {
    "fast_ap": lambda e, y, w: jm.fast_ap_loss(e, y, where=w),
    "smooth_ap": lambda e, y, w: jm.smooth_ap_loss(e, y, where=w),
    "pnp": lambda e, y, w: jm.pnp_loss(e, y, where=w, variant="Ds"),
    "histogram": lambda e, y, w: jm.histogram_loss(e, y, where=w),
    "dsml": lambda e, y, w: jm.dynamic_soft_margin_loss(e, y, _dsml_state(e.dtype), where=w)[0],
    "dsml_no_labels": lambda e, y, w: jm.dynamic_soft_margin_loss(e, None, _dsml_state(e.dtype), where=w)[0],
    "manifold": lambda e, y, w: jm.manifold_loss(e, y % K, _PROXIES.astype(e.dtype), where=w),
    "vicreg": lambda e, y, w: jm.vicreg_loss(e, jnp.roll(e, 1, axis=0) + 0.1, where=w),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_jit_vmap_eager_agree(rng, name):
    f = LOSSES[name]
    embs = jnp.asarray(rng.normal(size=(3, B, D)))
    labels = jnp.asarray(rng.integers(0, 3, (3, B)))
    wheres = jnp.asarray(rng.random((3, B)) > 0.2)
    batched = jax.jit(jax.vmap(f))(embs, labels, wheres)
    for i in (0, 2):  # eager (op by op) for two of the mapped items
        assert_close(batched[i], f(embs[i], labels[i], wheres[i]), what=f"{name} item {i}")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_degenerate_batches_finite_float32(rng, name):
    f = LOSSES[name]
    base = rng.normal(size=(B, D))
    dup = np.concatenate([np.zeros((2, D)), np.repeat(base[:1], B - 2, 0)])  # zero vectors + duplicates
    embs = np.stack([base, dup, base, base, dup, base]).astype(np.float32)
    labels = np.stack([np.arange(B) % 2, np.arange(B) % 2, np.zeros(B, int), np.arange(B), np.zeros(B, int), np.arange(B) % 2])
    wheres = np.ones((6, B), bool)
    wheres[5] = False  # every row padded: an empty selection
    vg = jax.jit(jax.vmap(jax.value_and_grad(f)))
    values, grads = vg(jnp.asarray(embs), jnp.asarray(labels), jnp.asarray(wheres))
    assert values.dtype == jnp.float32 and grads.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(values))), values
    assert np.all(np.isfinite(np.asarray(grads)))
    assert float(values[5]) == 0.0 and np.all(np.asarray(grads[5]) == 0.0)


def test_public_exports():
    names = [
        "fast_ap_loss", "smooth_ap_loss", "pnp_loss", "histogram_loss", "dynamic_soft_margin_loss",
        "DynamicSoftMarginState", "init_dynamic_soft_margin_state", "manifold_loss", "init_manifold_proxies",
        "manifold_meta_classes", "vicreg_loss",
    ]
    for n in names:
        assert n in jm.__all__ and n in jm.losses.__all__ and getattr(jm, n) is getattr(jm.losses, n)
