"""Trace-time input validation and dtype policy shared by every public function.

Every check here runs on shapes and dtypes only (static under ``jit``), so a bad input fails
while tracing with a message that names the argument, what was expected and what came.
Value checks (multi-hot entries in {0, 1}) run only when the array is concrete.
"""
from __future__ import annotations

import inspect
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmetric._src.selections import Selection
from jaxmetric.distances import BaseDistance


def _describe(x: Any) -> str:
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None:
        return f"a {type(x).__name__}"
    return f"shape {tuple(shape)} and dtype {dtype}"


def compute_dtype(*arrays) -> jnp.dtype:
    """float32 for inputs of 32 bits or fewer (bf16/fp16 are upcast), float64 for float64."""
    dtype = jnp.float32
    for a in arrays:
        if a is not None:
            dtype = jnp.promote_types(dtype, jnp.asarray(a).dtype if not hasattr(a, "dtype") else a.dtype)
    return jnp.dtype(dtype)


def check_embeddings(x: Any, name: str = "embeddings", *, fn: str = "") -> jax.Array:
    """Returns ``x`` as an array after checking it is a 2-D floating array ``[batch, dim]``."""
    prefix = f"{fn}: " if fn else ""
    if not hasattr(x, "shape"):
        try:
            x = jnp.asarray(x)
        except TypeError as e:
            raise TypeError(f"{prefix}`{name}` must be a 2-D float array [batch, dim]; got {_describe(x)}") from e
    if x.ndim != 2:
        raise ValueError(
            f"{prefix}`{name}` must be a 2-D float array [batch, dim]; got {_describe(x)} ({x.ndim}-D)"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{prefix}`{name}` must have a floating dtype; got {_describe(x)}")
    if x.shape[1] == 0:
        raise ValueError(f"{prefix}`{name}` must have at least one column (the embedding dim); got {_describe(x)}")
    check_nonempty(x, name, fn)
    return saturate_grad(x)


def check_nonempty(x, name: str, fn: str) -> None:
    """The empty-batch rule of every public function: an array of 0 rows is refused (the shape
    is static, so this is a trace-time error, never a silent 0)."""
    if x.shape[0] == 0:
        prefix = f"{fn}: " if fn else ""
        raise ValueError(
            f"{prefix}`{name}` must have at least one row (an empty batch has nothing to compute); got {_describe(x)}"
        )


def saturate_grad(x: jax.Array) -> jax.Array:
    """``x``, with its gradient clipped to the finite range of ``x.dtype`` for float16 inputs.

    Losses compute in float32 and the gradient is cast back to the input's dtype; a gradient
    component beyond float16's range (65504: e.g. ``1 / ||x||`` of a normalised row of norm
    1e-6, times a scale of 64) would come back as ``inf`` and poison the optimiser. It
    saturates at the largest finite value instead, keeping its sign. Other dtypes are
    returned as they are (bfloat16 has float32's range)."""
    if x.dtype != jnp.float16:
        return x
    return _saturating_identity(x)


@jax.custom_vjp
def _saturating_identity(x):
    return x


def _saturating_fwd(x):
    return x, None


def _saturating_bwd(_, g):
    big = jnp.finfo(g.dtype).max
    return (jnp.clip(g, -big, big),)


_saturating_identity.defvjp(_saturating_fwd, _saturating_bwd)


def is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_weights(x: jax.Array, name: str, fn: str, *, high: float | None = None, what: str = "") -> None:
    """Rejects negative, NaN or infinite weights (and, with ``high``, weights above it) when
    ``x`` is concrete (under ``jit`` only shapes are known; a traced NaN or inf makes the loss
    NaN, see jaxmetric/_src/front_door.py). ``what``: how the error names the weights."""
    if is_concrete(x) and x.dtype != jnp.bool_ and x.size:
        v = np.asarray(x)
        if jnp.issubdtype(v.dtype, jnp.floating) and not np.isfinite(v).all():
            raise ValueError(f"{fn}: `{name}` must hold finite weights; got {_describe(x)} with value {v[~np.isfinite(v)].flat[0].item()!r}")
        if (v < 0).any():
            raise ValueError(f"{fn}: `{name}` must hold non-negative weights; got {_describe(x)} with value {v[v < 0].flat[0].item()!r}")
        if high is not None and (v > high).any():
            raise ValueError(f"{fn}: `{name}` must hold {what or f'weights in [0, {high}]'}; got {_describe(x)} with a value above {high}")


def poison_negative(x: jax.Array) -> jax.Array:
    """Traced float weights with a negative entry made NaN, so that a weight that multiplies
    the losses reports a bad value in the loss instead of flipping its sign silently (concrete
    weights were refused by :func:`check_weights`)."""
    if is_concrete(x) or not jnp.issubdtype(x.dtype, jnp.floating):
        return x
    return jnp.where(x < 0, jnp.nan, x)


def is_index_tuple(x: Any, batch: int | None = None) -> bool:
    """A PML ``indices_tuple``: 3 or 4 one-dimensional index arrays, or (where the batch size
    is known, so a batch of 3 or 4 label rows is not mistaken for one) 3 or 4 index lists."""
    if not (isinstance(x, (tuple, list)) and len(x) in (3, 4)):
        return False
    if all(getattr(e, "ndim", None) == 1 for e in x):
        return True
    return batch is not None and len(x) != batch and all(isinstance(e, (tuple, list)) for e in x)


def reject_index_tuple(x: Any, name: str, fn: str, batch: int, *, keyword: str | None = None, how: str | None = None) -> None:
    """A PML ``indices_tuple`` (3 or 4 index arrays) where labels belong gets a pointer to
    :func:`jaxmetric.from_indices` (``keyword``: the argument that takes the mask, when it is
    not this slot; ``how``: another way out), not a message about its shape."""
    if not is_index_tuple(x, batch):
        return
    form = "(a1, p, a2, n)" if len(x) == 4 else "(a, p, n)"
    if how is None:
        where = f"as `{keyword}=`" if keyword else "in this slot"
        how = (f"jaxmetric takes mined pairs as a mask {where}: jaxmetric.from_indices(indices_tuple, batch_size) "
               f"makes it, here jaxmetric.from_indices(indices_tuple, {batch})")
    prefix = f"{fn}: " if fn else ""
    raise TypeError(
        f"{prefix}`{name}` must be labels, not a PML indices_tuple; got a {type(x).__name__} of {len(x)} index arrays {form}. {how}"
    )


def check_labels(labels: Any, batch: int, name: str = "labels", *, fn: str = "") -> jax.Array:
    """Class ids ``[B]`` (integer) or multi-hot ``[B, C]`` with entries in {0, 1}."""
    prefix = f"{fn}: " if fn else ""
    reject_index_tuple(labels, name, fn, batch)
    if isinstance(labels, Selection):
        raise TypeError(
            f"{prefix}`{name}` must be class ids [{batch}] or multi-hot [{batch}, num_classes] (this argument takes "
            f"labels, not a mask); got a {type(labels).__name__}"
        )
    if not hasattr(labels, "shape"):
        labels = jnp.asarray(labels)
    if labels.ndim not in (1, 2):
        raise ValueError(
            f"{prefix}`{name}` must be class ids [{batch}] or multi-hot [{batch}, num_classes]; "
            f"got {_describe(labels)}"
        )
    if labels.shape[0] != batch:
        raise ValueError(
            f"{prefix}`{name}` must have {batch} rows (one per embedding); got {_describe(labels)}"
        )
    if labels.ndim == 2 and labels.shape[1] == 1:
        raise ValueError(
            f"{prefix}`{name}` of shape ({batch}, 1) is ambiguous: pass class ids as a 1-D array [{batch}] "
            f"(e.g. {name}[:, 0]), or multi-hot labels with one column per class; got {_describe(labels)}"
        )
    if labels.ndim == 1:
        if not (jnp.issubdtype(labels.dtype, jnp.integer) or labels.dtype == jnp.bool_):
            raise TypeError(
                f"{prefix}`{name}` as class ids must have an integer dtype; got {_describe(labels)}. "
                "Cast with labels.astype(jnp.int32), or pass multi-hot labels as a 2-D array."
            )
        if labels.dtype != jnp.bool_ and is_concrete(labels):
            values = np.asarray(labels)
            if (values < 0).any():
                raise ValueError(
                    f"{prefix}`{name}` must be non-negative class ids; got {_describe(labels)} "
                    f"with value {values[values < 0].flat[0].item()!r}"
                )
    else:
        if not (
            jnp.issubdtype(labels.dtype, jnp.integer)
            or jnp.issubdtype(labels.dtype, jnp.floating)
            or labels.dtype == jnp.bool_
        ):
            raise TypeError(f"{prefix}`{name}` as multi-hot must be bool, int or float; got {_describe(labels)}")
        if labels.dtype != jnp.bool_ and is_concrete(labels):
            values = np.asarray(labels)
            bad = ~((values == 0) | (values == 1))
            if bad.any():
                raise ValueError(
                    f"{prefix}`{name}` as multi-hot must hold only 0 and 1; got {_describe(labels)} "
                    f"with value {values[bad].flat[0].item()!r}"
                )
    return labels


def check_where(where: Any, batch: int, name: str = "where", *, fn: str = "") -> jax.Array | None:
    prefix = f"{fn}: " if fn else ""
    if where is None:
        return None
    if not hasattr(where, "shape"):
        where = jnp.asarray(where)
    if where.shape != (batch,):
        raise ValueError(f"{prefix}`{name}` must be a bool array of shape ({batch},); got {_describe(where)}")
    if where.dtype != jnp.bool_:
        raise TypeError(f"{prefix}`{name}` must be a bool array of shape ({batch},); got {_describe(where)}")
    return where


def check_choice(value: Any, allowed, name: str, *, fn: str = "") -> None:
    prefix = f"{fn}: " if fn else ""
    if value not in allowed:
        raise ValueError(f"{prefix}`{name}` must be one of {sorted(map(repr, allowed))}; got {value!r}")


def check_distance(distance, fn: str, *, inverted: bool | None = None, kind: type | None = None) -> BaseDistance:
    """Checks ``distance`` is a jaxmetric distance (and a similarity / a given type when the
    loss's formula needs one, as PML asserts)."""
    if not isinstance(distance, BaseDistance):
        raise TypeError(
            f"{fn}: `distance` must be a jaxmetric distance (e.g. jaxmetric.CosineSimilarity()); got {distance!r}"
        )
    if kind is not None and not isinstance(distance, kind):
        raise TypeError(f"{fn}: `distance` must be a {kind.__name__}; got {type(distance).__name__}")
    if inverted is True and not distance.is_inverted:
        raise ValueError(f"{fn}: `distance` must be a similarity (CosineSimilarity or DotProductSimilarity); got {distance!r}")
    return distance


def concrete_scalar(value, name: str, fn: str):
    """``value`` as a Python float when it is a Python or NumPy number, None for a JAX array
    (traced or not: a value, checked at run time by :func:`jaxmetric.checkify_finite`);
    rejects non-scalars (a hyperparameter array would broadcast silently against the batch)."""
    shape = getattr(value, "shape", None)
    if shape is not None and tuple(shape) != ():
        raise ValueError(f"{fn}: `{name}` must be a scalar; got shape {tuple(shape)}")
    if isinstance(value, jax.Array):
        return None
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{fn}: `{name}` must be a number; got str {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{fn}: `{name}` must be a number; got {type(value).__name__} {value!r}") from e


def check_positive(value, name: str, fn: str) -> None:
    """Rejects a non-scalar hyperparameter, or a non-positive (or NaN) Python / NumPy number."""
    v = concrete_scalar(value, name, fn)
    if v is not None and not v > 0:
        raise ValueError(f"{fn}: `{name}` must be > 0; got {value!r}")


def check_nonnegative(value, name: str, fn: str) -> None:
    """Like :func:`check_positive` for hyperparameters that may be 0 (focusing exponents)."""
    v = concrete_scalar(value, name, fn)
    if v is not None and not v >= 0:
        raise ValueError(f"{fn}: `{name}` must be >= 0; got {value!r}")


def check_static_int(value, name: str, fn: str, minimum: int = 1) -> int:
    """A Python int ``>= minimum`` (a structural option: it fixes array shapes)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fn}: `{name}` must be a Python int (it fixes array shapes); got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{fn}: `{name}` must be >= {minimum}; got {value!r}")
    return int(value)


def is_concrete_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def reject_ref(fn: str, ref_emb, ref_labels, ref_where) -> None:
    """PML's ``ref_not_supported``: this loss compares a batch with itself only."""
    for name, x in (("ref_emb", ref_emb), ("ref_labels", ref_labels), ("ref_where", ref_where)):
        if x is not None:
            shape = getattr(x, "shape", None)
            got = f"shape {tuple(shape)}" if shape is not None else type(x).__name__
            raise ValueError(f"{fn}: `{name}` is not supported by this loss (PML raises too); expected None, got {got}")


def check_block_size(value, fn: str) -> int | None:
    """``None`` (no blocking) or a positive Python int: the number of rows per block (a
    structural option: it fixes array shapes)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{fn}: `block_size` must be None or a positive int; got {value!r}")
    return int(value)


def accepts_keyword(f, name: str) -> bool:
    """Whether callable ``f`` takes a keyword ``name`` (or any keyword, ``**kwargs``)."""
    try:
        params = inspect.signature(f).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
