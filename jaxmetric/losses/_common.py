"""Helpers shared by the loss modules."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmetric import reduce
from jaxmetric.distances import BaseDistance


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


def finish(value: jax.Array, dtype) -> jax.Array:
    """The loss value in the compute dtype (float32, or float64 for float64 inputs)."""
    return jnp.asarray(value).astype(dtype)


def reduce_elements(red, losses, weights):
    return reduce.apply(red, losses, weights)


def reduce_context(b) -> reduce.Context:
    """The :class:`reduce.Context` of a resolved batch: anchor labels and real rows."""
    return reduce.Context(labels=b.labels, anchor_weight=b.anchor_weight)
