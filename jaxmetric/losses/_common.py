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


def check_positive(value, name: str, fn: str) -> None:
    """Rejects a concrete non-positive hyperparameter (traced values pass through)."""
    if isinstance(value, (int, float)) and not value > 0:
        raise ValueError(f"{fn}: `{name}` must be > 0; got {value!r}")


def finish(value: jax.Array, dtype) -> jax.Array:
    """The loss value in the compute dtype (float32, or float64 for float64 inputs)."""
    return jnp.asarray(value).astype(dtype)


def reduce_elements(red, losses, weights):
    return reduce.apply(red, losses, weights)


def reduce_context(b) -> reduce.Context:
    """The :class:`reduce.Context` of a resolved batch: anchor labels and real rows."""
    return reduce.Context(labels=b.labels, anchor_weight=b.anchor_weight)
