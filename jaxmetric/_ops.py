"""Numerically safe building blocks shared by the losses."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_logsumexp(x: jax.Array, weights: jax.Array, axis: int = -1, add_one: bool = False) -> jax.Array:
    """``log(sum_j w_j exp(x_j) [+ 1])`` along ``axis``, stable and NaN-free.

    Entries with ``w_j == 0`` are left out (their value never reaches ``exp``). A row with no
    selected entry gives 0 (``log 1`` with ``add_one``; PML's convention without it), with a
    zero gradient. With 0/1 weights this is PML's ``lmu.logsumexp``.
    """
    sel = weights > 0
    x_sel = jnp.where(sel, x, -jnp.inf)
    m = jnp.max(x_sel, axis=axis, keepdims=True)
    if add_one:
        m = jnp.maximum(m, 0.0)
    m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
    terms = jnp.where(sel, weights * jnp.exp(jnp.where(sel, x - m, 0.0)), 0.0)
    total = jnp.sum(terms, axis=axis, keepdims=True)
    if add_one:
        total = total + jnp.exp(-m)
    ok = total > 0
    out = jnp.where(ok, m + jnp.log(jnp.where(ok, total, 1.0)), 0.0)
    return jnp.squeeze(out, axis=axis)


def clip_weights(w: jax.Array) -> jax.Array:
    """Pair weights for losses that see a set of pairs, not a list: repeats count once
    (PML's mat-based losses build 0/1 masks by scatter), fractions are kept."""
    return jnp.minimum(w, 1.0)


def has_any(w: jax.Array, axis=None) -> jax.Array:
    return jnp.any(w > 0, axis=axis)
