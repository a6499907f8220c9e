"""Cross-device helpers behind every loss's ``axis_name``.

Inside ``jax.pmap``, ``jax.shard_map`` or ``jax.vmap(..., axis_name=...)`` each device holds
its shard of the batch (its *local rows*, in device order: the global batch is the tiled
concatenation of the shards). A loss with ``axis_name`` computes its local rows' share of the
single-device loss on the global batch and combines shares with ``psum`` (or computes the loss
from ``psum``-ed batch statistics), so that

* every device gets the value of the single-device loss on the concatenated batch, and
* the conventional data-parallel step ``grads = jax.lax.pmean(grads, axis_name)`` equals the
  single-device gradient, under ``pmap`` and ``shard_map`` alike.

A value computed from ``all_gather``-ed arrays alone (not through a ``psum``) would be typed as
varying under ``shard_map`` and its gradient would be counted once per device; the helpers
below therefore only gather *inputs* and always reduce through ``psum``.

Every helper is the identity (or the plain local computation) when ``axis_name`` is None.
This is the only module of jaxmetric that calls ``jax.lax`` collectives.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "axis_index",
    "axis_size",
    "fold_in_device",
    "gather",
    "gather_replicated",
    "global_rows",
    "local_rows",
    "lse_combine",
    "lse_parts",
    "pmax",
    "psum",
    "row_offset",
    "varying",
]


def gather(x, axis_name):
    """``all_gather(x, tiled=True)``: the global array (device shards concatenated on axis 0)."""
    if axis_name is None:
        return x
    return jax.lax.all_gather(x, axis_name, tiled=True)


def varying(x, axis_name):
    """``x`` typed as holding this device's own value on ``axis_name`` (``pcast`` to
    varying), as ``shard_map`` requires of a scan carry that becomes per-device; the identity
    without ``axis_name``."""
    if axis_name is None:
        return x
    return jax.lax.pcast(x, axis_name, to="varying")


def psum(x, axis_name):
    return x if axis_name is None else jax.lax.psum(x, axis_name)


def pmax(x, axis_name):
    """Maximum over devices, without gradient (``pmax`` has no differentiation rule; every use
    here is a stabilising shift or a count normaliser). The identity without ``axis_name``."""
    if axis_name is None:
        return x
    return jax.lax.pmax(jax.lax.stop_gradient(x), axis_name)


def row_offset(n_local: int, axis_name):
    """Global index of this device's first row (0 without ``axis_name``)."""
    if axis_name is None:
        return 0
    return jax.lax.axis_index(axis_name) * n_local


def global_rows(n_local: int, axis_name) -> jax.Array:
    """Global indices ``[n_local]`` of this device's rows."""
    return row_offset(n_local, axis_name) + jnp.arange(n_local)


def local_rows(x_global, n_local: int, axis_name):
    """This device's ``n_local`` rows of a global (gathered) array."""
    if axis_name is None:
        return x_global
    return jax.lax.dynamic_slice_in_dim(x_global, row_offset(n_local, axis_name), n_local, axis=0)


def axis_size(axis_name) -> int:
    return 1 if axis_name is None else jax.lax.axis_size(axis_name)


def axis_index(axis_name):
    """This device's index along ``axis_name`` (0 without it)."""
    return 0 if axis_name is None else jax.lax.axis_index(axis_name)


def fold_in_device(key, axis_name):
    """``key`` folded with this device's index: independent random draws on each device
    (``key`` itself without ``axis_name``)."""
    return key if axis_name is None else jax.random.fold_in(key, jax.lax.axis_index(axis_name))


def lse_parts(x, weights, axis=0):
    """Local pieces of a masked log-sum-exp along ``axis``: ``(m, s)`` with ``m`` the
    (stop-gradient) max of the selected entries (``-inf`` where none) and
    ``s = sum_j w_j exp(x_j - m)`` (0 where none)."""
    sel = weights > 0
    m = jax.lax.stop_gradient(jnp.max(jnp.where(sel, x, -jnp.inf), axis=axis))
    m_b = jnp.expand_dims(jnp.where(jnp.isfinite(m), m, 0.0), axis)
    s = jnp.sum(jnp.where(sel, weights * jnp.exp(jnp.where(sel, x - m_b, 0.0)), 0.0), axis=axis)
    return m, s


def lse_combine(m, s, *, add_one=False, axis_name=None, stack_axis=None):
    """Combines :func:`lse_parts` over devices (and over ``stack_axis`` of stacked parts, e.g.
    blocks): ``log(sum w e^x [+ 1])``, 0 with zero gradient where nothing is selected, as
    :func:`jaxmetric._src.numerics.masked_logsumexp`."""
    big = m if stack_axis is None else jnp.max(m, axis=stack_axis)
    big = jax.lax.stop_gradient(pmax(big, axis_name))
    fin = jnp.isfinite(big)
    big = jnp.where(fin, big, 0.0)
    if add_one:
        big = jnp.maximum(big, 0.0)
    big_b = big if stack_axis is None else jnp.expand_dims(big, stack_axis)
    ok_m = jnp.isfinite(m)
    scaled = jnp.where(ok_m, s * jnp.exp(jnp.where(ok_m, m - big_b, 0.0)), 0.0)
    total = scaled if stack_axis is None else jnp.sum(scaled, axis=stack_axis)
    total = psum(total, axis_name)
    if add_one:
        total = total + jnp.exp(-big)
    ok = total > 0
    return jnp.where(ok, big + jnp.log(jnp.where(ok, total, 1.0)), 0.0)


def gather_replicated(x, axis_name):
    """The global array like :func:`gather`, but built as a ``psum`` (each device adds its
    shard at its offset into zeros), so under ``shard_map`` it is typed as replicated and can
    be returned with ``out_specs=P()`` (e.g. inside a state every device must keep equal).
    Meant for values without gradient (state updates)."""
    if axis_name is None:
        return x
    n = x.shape[0]
    dtype = x.dtype
    work = x.astype(jnp.int32) if dtype == jnp.bool_ else x
    buf = jnp.zeros((n * axis_size(axis_name),) + x.shape[1:], work.dtype)
    buf = jax.lax.dynamic_update_slice_in_dim(buf, work, row_offset(n, axis_name), axis=0)
    out = jax.lax.psum(buf, axis_name)
    return out.astype(dtype)
