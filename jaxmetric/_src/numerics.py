"""Numerically safe building blocks shared by the losses."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmetric._src import collectives
from jaxmetric._src.pairs import restrict_triplets
from jaxmetric.masks import PairMask, TripletMask


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


def mask_sample_weights(mask, batch: int, dtype, *, valid=None, fn: str = "", name: str = "miner_output", axis_name=None) -> jax.Array:
    """PML's ``convert_to_weights`` for a mask: per-sample weights ``count / max(count)``.

    ``count[k]`` is how often sample ``k`` appears anywhere in the selection (as anchor,
    positive or negative; multiplicities count), as PML counts the entries of an
    ``indices_tuple``. ``mask`` is a :class:`~jaxmetric.PairMask` (``[B, B]``), a
    :class:`~jaxmetric.TripletMask` (``[B, B, B]``) or ``None`` (all weights 1). An empty
    selection gives all weights 1, as PML does for an empty tuple. ``valid`` (``[B]``, 0/1)
    drops entries that touch padded rows.

    With ``axis_name`` the mask holds this device's rows against the global batch (``[B, R]``
    / ``[B, R, R]``, ``R`` = global batch), the counts of each sample are summed over devices
    and the maximum is global, so every device gets its rows' single-device weights.
    """
    prefix = f"{fn}: " if fn else ""
    if mask is None:
        return jnp.ones((batch,), dtype)
    v = jnp.ones((batch,), dtype) if valid is None else jnp.asarray(valid).astype(dtype)
    return selection_weights(mask, batch, v, dtype, prefix=prefix, name=name, axis_name=axis_name)


def selection_weights(mask, batch: int, v, dtype, *, prefix: str = "", name: str = "mask", using_ref: bool = False, axis_name=None):
    """PML's ``convert_to_weights`` of a PairMask / TripletMask over ``batch`` (local) rows with
    validity ``v``; ``using_ref`` counts only anchor positions. See :func:`mask_sample_weights`."""
    vr = collectives.gather(v, axis_name)
    r = vr.shape[0]

    def arr(x, shape, what):
        x = jnp.asarray(x)
        field = f"`{name}` ({type(mask).__name__}.{what})"
        if tuple(x.shape) != shape:
            raise ValueError(f"{prefix}{field} must have shape {shape}; got shape {tuple(x.shape)} and dtype {x.dtype}")
        if not (x.dtype == jnp.bool_ or jnp.issubdtype(x.dtype, jnp.number)):
            raise TypeError(f"{prefix}{field} must be bool or numeric weights; got dtype {x.dtype}")
        return x.astype(dtype)

    if isinstance(mask, PairMask):
        vv = v[:, None] * vr[None, :]
        pos = arr(mask.pos, (batch, r), "pos") * vv
        neg = arr(mask.neg, (batch, r), "neg") * vv
        counts = jnp.sum(pos, 1) + jnp.sum(neg, 1)
        cols = None if using_ref else jnp.sum(pos, 0) + jnp.sum(neg, 0)
    elif isinstance(mask, TripletMask) and mask.form != "dense":
        # A compact form is counted through its pair counts (no [B, R, R] cube): each triplet
        # (a, p, n) is one positive pair (a, p) and one negative pair (a, n).
        if tuple(mask.shape) != (batch, r, r):
            raise ValueError(f"{prefix}`{name}` (a {mask.form}-form TripletMask) must have shape {(batch, r, r)}; got shape {tuple(mask.shape)}")
        pairs = restrict_triplets(mask, batch, r, v, vr, None, prefix.rstrip(": "), dtype).to_pairs()
        pos, neg = pairs.pos.astype(dtype), pairs.neg.astype(dtype)
        counts = jnp.sum(pos, 1)
        cols = None if using_ref else jnp.sum(pos, 0) + jnp.sum(neg, 0)
    elif isinstance(mask, TripletMask):
        cube = arr(mask.weights, (batch, r, r), "weights")
        cube = cube * v[:, None, None] * vr[None, :, None] * vr[None, None, :]
        counts = jnp.sum(cube, (1, 2))
        cols = None if using_ref else jnp.sum(cube, (0, 2)) + jnp.sum(cube, (0, 1))
    else:
        raise TypeError(
            f"{prefix}`{name}` must be a jaxmetric PairMask or TripletMask (e.g. from jaxmetric.from_indices) or None; "
            f"got {type(mask).__name__}"
        )
    if cols is not None:
        counts = counts + collectives.local_rows(collectives.psum(cols, axis_name), batch, axis_name)
    top = jnp.max(counts) if batch > 0 else jnp.zeros((), dtype)
    top = collectives.pmax(top, axis_name)
    return jnp.where(top > 0, counts / jnp.where(top > 0, top, 1.0), 1.0)


def finish(value: jax.Array, dtype) -> jax.Array:
    """The loss value in the compute dtype (float32, or float64 for float64 inputs)."""
    return jnp.asarray(value).astype(dtype)
