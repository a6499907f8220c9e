"""Shared machinery of the proxy and classifier-head losses (learned class matrices).

These losses compare each embedding with a learned matrix of class vectors (proxies, class
weights, sub-centers) instead of with other embeddings, so their inputs are
``(embeddings [B, D], labels [B] class ids, weights [C, D] (or [C, K, D]))``. This module
validates those inputs, turns PML-style selections (``mask=``) or ``sample_weights`` into
per-sample weights, reduces per-sample losses and attaches a weight regularizer, identically for
every loss.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmetric._src import collectives, validate
from jaxmetric import reduce
from jaxmetric._src.numerics import selection_weights
from jaxmetric._src.engine import map_row_blocks


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Validated inputs in the compute dtype."""

    emb: jax.Array  # [B, D]
    labels: jax.Array  # [B] int
    weights: jax.Array  # [C, D] or [C, K, D] as given (compute dtype)
    valid: jax.Array  # [B] 1 for real rows, 0 for padded rows
    sample_weights: jax.Array | None  # [B] PML's miner weights (None: all ones)
    dtype: Any
    labels_ok: jax.Array | None = None  # traced labels: all real rows hold a valid class id
    axis_name: Any = None  # the batch is sharded over this mapped axis

    @property
    def num_classes(self) -> int:
        return self.weights.shape[0]


def _describe(x) -> str:
    return validate._describe(x)


def check_class_matrix(weights, dim: int, fn: str, *, name: str = "weights", allow_3d: bool = False) -> jax.Array:
    """``(num_classes, dim)`` (or ``(num_classes, centers, dim)``) floating array."""
    if not hasattr(weights, "shape"):
        try:
            weights = jnp.asarray(weights)
        except TypeError as e:
            raise TypeError(f"{fn}: `{name}` must be a float array (num_classes, {dim}); got {_describe(weights)}") from e
    expect = f"(num_classes, {dim})" + (f" or (num_classes, centers_per_class, {dim})" if allow_3d else "")
    if weights.ndim not in ((2, 3) if allow_3d else (2,)):
        raise ValueError(f"{fn}: `{name}` must have shape {expect}; got {_describe(weights)}")
    if weights.shape[-1] != dim:
        raise ValueError(
            f"{fn}: `{name}` must have shape {expect} (last axis = the embedding dim {dim}); got {_describe(weights)}"
        )
    if weights.shape[0] < 1 or (weights.ndim == 3 and weights.shape[1] < 1):
        raise ValueError(f"{fn}: `{name}` must hold at least one class vector; got {_describe(weights)}")
    if not jnp.issubdtype(weights.dtype, jnp.floating):
        raise TypeError(f"{fn}: `{name}` must have a floating dtype; got {_describe(weights)}")
    return validate.saturate_grad(weights)


def check_class_ids(labels, batch: int, num_classes: int, fn: str, name: str = "labels", *, mask_arg: bool = True) -> jax.Array:
    """Integer class ids ``[B]`` in ``[0, num_classes)`` (range checked when concrete).
    ``mask_arg``: the loss takes mined pairs as ``mask=`` (named by the index-tuple pointer)."""
    validate.reject_index_tuple(labels, name, fn, batch, keyword="mask" if mask_arg else None)
    if not hasattr(labels, "shape"):
        labels = jnp.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != batch:
        raise ValueError(f"{fn}: `{name}` must be integer class ids of shape ({batch},); got {_describe(labels)}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(
            f"{fn}: `{name}` must be integer class ids of shape ({batch},); got {_describe(labels)}. "
            "Cast with labels.astype(jnp.int32)."
        )
    if validate.is_concrete(labels) and batch > 0:
        values = np.asarray(labels)
        bad = (values < 0) | (values >= num_classes)
        if bad.any():
            raise ValueError(
                f"{fn}: `{name}` must be class ids in [0, {num_classes}) (num_classes = weights.shape[0]); "
                f"got value {values[bad].flat[0].item()!r}"
            )
    return labels


def weights_from_mask(mask, batch: int, valid: jax.Array, fn: str, dtype, *, using_ref: bool = False, axis_name=None) -> jax.Array:
    """PML's ``convert_to_weights``: how often each sample occurs in the selection, divided by
    the largest count (0 for samples never selected; all ones for an empty selection).

    A :class:`PairMask` ``(pos, neg)`` stands for the tuple ``(a1, p, a2, n)``, a
    :class:`TripletMask` for ``(a, p, n)``; entries are multiplicities. With ``using_ref`` only
    anchor positions count (PML's ``get_anchors``), as for ProxyNCA. With ``axis_name`` the mask
    is this device's rows against the global batch (``[B, R]`` / ``[B, R, R]``); counts and the
    maximum are global.
    """
    return selection_weights(mask, batch, valid, dtype, prefix=f"{fn}: ", name="mask", using_ref=using_ref, axis_name=axis_name)


def prepare(
    fn: str, embeddings, labels, weights, *, where=None, mask=None, sample_weights=None,
    centers: tuple[int | None, int, str] | None = None, using_ref: bool = False, axis_name=None,
    mask_arg: bool = True,
) -> Inputs:
    """Validates the common inputs and returns them in the compute dtype.

    The compute dtype is float32 for inputs of 32 bits or fewer (bf16 embeddings with float32
    class matrices compute in float32) and float64 when either input is float64.
    """
    embeddings = validate.check_embeddings(embeddings, "embeddings", fn=fn)
    b, d = embeddings.shape
    weights = check_class_matrix(weights, d, fn, allow_3d=centers is not None)
    if centers is not None:
        weights = as_centers(weights, *centers, fn=fn)
    labels = check_class_ids(labels, b, weights.shape[0], fn, mask_arg=mask_arg)
    dtype = validate.compute_dtype(embeddings, weights)
    where = validate.check_where(where, b, "where", fn=fn)
    valid = jnp.ones((b,), dtype) if where is None else where.astype(dtype)
    if mask is not None and sample_weights is not None:
        raise ValueError(f"{fn}: pass at most one of `mask` and `sample_weights`; got both")
    sw = None
    if mask is not None:
        sw = weights_from_mask(mask, b, valid, fn, dtype, using_ref=using_ref, axis_name=axis_name)
    elif sample_weights is not None:
        if not hasattr(sample_weights, "shape"):
            sample_weights = jnp.asarray(sample_weights)
        if sample_weights.shape != (b,):
            raise ValueError(f"{fn}: `sample_weights` must have shape ({b},); got {_describe(sample_weights)}")
        validate.check_weights(sample_weights, "sample_weights", fn)
        if not (jnp.issubdtype(sample_weights.dtype, jnp.number) or sample_weights.dtype == jnp.bool_):
            raise TypeError(f"{fn}: `sample_weights` must be numeric; got {_describe(sample_weights)}")
        sw = validate.poison_negative(sample_weights.astype(dtype))
    labels_ok = None
    if not validate.is_concrete(labels):
        # Traced ids cannot be range-checked at trace time: the loss becomes NaN instead.
        ok = ((labels >= 0) & (labels < weights.shape[0])) | (valid == 0)
        if axis_name is None:
            labels_ok = jnp.all(ok)
        else:  # global, so the value stays replicated across devices
            labels_ok = collectives.psum(jnp.sum(~ok), axis_name) == 0
    return Inputs(
        emb=embeddings.astype(dtype), labels=labels, weights=weights.astype(dtype), valid=valid,
        sample_weights=sw, dtype=jnp.dtype(dtype), labels_ok=labels_ok, axis_name=axis_name,
    )


def check_regularizer(weight_regularizer, red, fn: str) -> None:
    if weight_regularizer is None:
        return
    if not callable(weight_regularizer):
        raise TypeError(f"{fn}: `weight_regularizer` must be a callable W -> scalar; got {weight_regularizer!r}")
    if red == "none":
        raise ValueError(
            f"{fn}: `weight_regularizer` needs a reducing `reduction` (the regularizer is a scalar added to "
            "the reduced loss); got reduction='none'"
        )


def add_regularizer(value, weight_regularizer: Callable | None, w: jax.Array, weight_reg_weight, fn: str):
    """PML's WeightRegularizerMixin: ``loss + weight_reg_weight * weight_regularizer(W)``."""
    if weight_regularizer is None:
        return value
    reg = jnp.asarray(weight_regularizer(w))
    if reg.shape != ():
        raise ValueError(f"{fn}: `weight_regularizer` must return a scalar; got shape {tuple(reg.shape)}")
    return value + jnp.asarray(weight_reg_weight, value.dtype) * reg.astype(value.dtype)


def reduce_samples(red, losses: jax.Array, x: Inputs) -> jax.Array:
    """Per-sample losses (times PML's miner weights) reduced over the real rows (of the global
    batch with ``axis_name``: partial sums are summed over devices)."""
    if x.sample_weights is not None:
        losses = losses * x.sample_weights
    return reduce.apply(red, losses, x.valid, x.axis_name)


def sample_losses(f, x: Inputs, block_size=None, fn: str = "") -> jax.Array:
    """``f(emb, labels) -> [n]`` per-sample losses, over blocks of ``block_size`` rows when
    given (each block rematerialised in the backward pass, so a ``[B, C]`` logit matrix is
    never held: memory ``O(block_size * C)``)."""
    return map_row_blocks(f, (x.emb, x.labels), block_size, fn=fn)


def finish(value, x: Inputs) -> jax.Array:
    """The value in the compute dtype; NaN when traced labels hold an out-of-range class id."""
    value = jnp.asarray(value).astype(x.dtype)
    if x.labels_ok is not None:
        value = jnp.where(x.labels_ok, value, jnp.nan)
    return value


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``-log softmax(logits)[label]`` per row (stable)."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, labels[:, None], axis=1)[:, 0]


@jax.custom_jvp
def safe_acos(x: jax.Array) -> jax.Array:
    """``acos(clip(x, -1, 1))`` whose derivative is finite everywhere.

    Inside ``(-1, 1)`` the derivative is exact, ``-1/sqrt(1 - x^2)``; at the end points the
    denominator is floored at the dtype's machine epsilon (PyTorch's ``acos(clamp(x))`` gives
    an infinite gradient there), and outside ``[-1, 1]`` it is 0 (the clamp's gradient).
    """
    return jnp.arccos(jnp.clip(x, -1.0, 1.0))


@safe_acos.defjvp
def _safe_acos_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    y = safe_acos(x)
    eps = jnp.finfo(x.dtype).eps
    denom = jnp.sqrt(jnp.maximum(1.0 - x * x, eps))
    inside = (x >= -1.0) & (x <= 1.0)
    return y, jnp.where(inside, -t / denom, jnp.zeros_like(t))


def as_centers(weights: jax.Array, centers: int | None, default: int, name: str, *, fn: str) -> jax.Array:
    """``(C, K, D)`` or ``(C*K, D)`` (class-major, PML's column order) -> ``(C, K, D)``.

    ``centers=None`` takes K from 3-D weights and uses PML's ``default`` for 2-D weights.
    """
    if centers is not None and (not isinstance(centers, (int, np.integer)) or isinstance(centers, bool) or centers < 1):
        raise ValueError(f"{fn}: `{name}` must be a positive int (static); got {centers!r}")
    if weights.ndim == 3:
        if centers is not None and weights.shape[1] != centers:
            raise ValueError(
                f"{fn}: `{name}` must equal the {weights.shape[1]} centers per class of `weights` (shape "
                f"{tuple(weights.shape)}); got {centers}"
            )
        return weights
    centers = default if centers is None else int(centers)
    rows = weights.shape[0]
    if rows % centers:
        raise ValueError(
            f"{fn}: 2-D `weights` must have num_classes * {name} rows ({name}={centers}); got shape {tuple(weights.shape)}"
        )
    return weights.reshape(rows // centers, centers, weights.shape[1])
