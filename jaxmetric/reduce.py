"""Reductions shared by every loss (PML's reducers as strings or callables).

A loss produces per-element losses (per anchor, per pair or per triplet) and weights
(multiplicities: 0 = not selected). ``reduction`` then says how to turn them into a scalar:

========================== ==================================================  =========================
name                       value                                               PML reducer
========================== ==================================================  =========================
``"mean"``                 ``sum(w * l) / sum(w)``                             ``MeanReducer``
``"sum"``                  ``sum(w * l)``                                      ``SumReducer``
``"avg_nonzero"``          mean over the elements with ``l > 0``               ``AvgNonZeroReducer``
``threshold(low, high)``   mean over ``low < l < high`` (strict)               ``ThresholdReducer``
``"none"``                 the per-element losses (zero where not selected)    ``DoNothingReducer``
callable                   ``f(losses, weights) -> scalar``                    custom reducer
========================== ==================================================  =========================

An empty selection gives 0 with a zero gradient, as PML's graph-connected zero.

Built-in reductions are computed from two additive partial sums ``(num, den)``, so a loss can
accumulate them over blocks of anchors (bounded memory) or over devices (``psum``) and
finalize once.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Union

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Reduction:
    """A mean (or sum) over the elements whose loss passes ``low < l < high``."""

    kind: str = "mean"  # "mean" or "sum"
    low: float | None = None
    high: float | None = None

    def partial(self, losses: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Additive ``(sum of weighted kept losses, sum of kept weights)``."""
        weights = weights.astype(losses.dtype)
        keep = weights
        if self.low is not None:
            keep = keep * (losses > self.low)
        if self.high is not None:
            keep = keep * (losses < self.high)
        # where() rather than multiply, so an unselected inf/NaN-free but huge value cannot leak.
        num = jnp.sum(jnp.where(keep > 0, keep * losses, 0.0))
        den = jnp.sum(keep)
        return num, den

    def finalize(self, num: jax.Array, den: jax.Array) -> jax.Array:
        if self.kind == "sum":
            return num
        return safe_divide(num, den)

    def __call__(self, losses: jax.Array, weights: jax.Array) -> jax.Array:
        return self.finalize(*self.partial(losses, weights))


def safe_divide(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den``, and 0 with a zero gradient where ``den == 0``."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def threshold(low: float | None = None, high: float | None = None) -> Reduction:
    """PML's ``ThresholdReducer(low, high)``: mean of the elements with ``low < l < high``."""
    if low is None and high is None:
        raise ValueError("threshold: at least one of `low` and `high` must be given; got neither")
    return Reduction("mean", low, high)


_NAMED = {
    "mean": Reduction("mean"),
    "sum": Reduction("sum"),
    "avg_nonzero": Reduction("mean", low=0.0),
}

ReductionSpec = Union[str, Reduction, Callable[[jax.Array, jax.Array], jax.Array]]
REDUCTION_NAMES = tuple(_NAMED) + ("none",)


def resolve(reduction: ReductionSpec, *, fn: str = "") -> ReductionSpec:
    """Validates ``reduction`` and returns a :class:`Reduction`, ``"none"`` or a callable."""
    prefix = f"{fn}: " if fn else ""
    if isinstance(reduction, Reduction) or reduction == "none":
        return reduction
    if isinstance(reduction, str):
        if reduction not in _NAMED:
            raise ValueError(
                f"{prefix}`reduction` must be one of {list(REDUCTION_NAMES)}, a jaxmetric.reduce.Reduction "
                f"or a callable; got {reduction!r}"
            )
        return _NAMED[reduction]
    if callable(reduction):
        return reduction
    raise TypeError(f"{prefix}`reduction` must be a string, Reduction or callable; got {type(reduction).__name__}")


def apply(reduction: ReductionSpec, losses: jax.Array, weights: jax.Array, axis_name=None) -> jax.Array:
    """Reduces per-element ``losses`` with selection ``weights`` of the same shape.

    With ``axis_name`` the partial sums are ``psum``-ed over the mapped axis, so every device
    gets the reduction over the global set of elements (see :func:`finalize`).
    """
    if reduction == "none":
        return jnp.where(weights > 0, losses, 0.0)
    if isinstance(reduction, Reduction):
        return finalize(reduction, *reduction.partial(losses, weights), axis_name=axis_name)
    if axis_name is not None:
        raise ValueError(
            "a callable `reduction` cannot be combined with `axis_name`: use a built-in reduction "
            "(its partial sums are summed over devices) or reduce the 'none' output yourself"
        )
    return reduction(losses, weights)


def finalize(reduction: Reduction, num: jax.Array, den: jax.Array, axis_name=None) -> jax.Array:
    """Finishes a built-in reduction from partial sums, summing them over ``axis_name``.

    Returning ``psum(num) / psum(den)`` is what makes data-parallel gradients exact: under
    ``pmap`` and ``shard_map`` alike, the conventional ``pmean`` of per-device gradients then
    equals the single-device gradient of the loss on the concatenated batch.
    """
    if axis_name is not None:
        num = jax.lax.psum(num, axis_name)
        den = jax.lax.psum(jax.lax.stop_gradient(den), axis_name)
    return reduction.finalize(num, den)


def global_any(x: jax.Array, axis_name=None) -> jax.Array:
    """``any(x > 0)`` over the local array and, with ``axis_name``, over every device."""
    count = jnp.sum(x > 0)
    if axis_name is not None:
        count = jax.lax.psum(count, axis_name)
    return count > 0


def is_builtin(reduction: ReductionSpec) -> bool:
    return isinstance(reduction, Reduction)
