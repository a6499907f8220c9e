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
``class_weighted(w)``      mean of ``w[y_anchor] * l`` over selected elements  ``ClassWeightedReducer``
``per_anchor(inner)``      mean per anchor, then ``inner`` over anchors        ``PerAnchorReducer``
``divisor(d)``             ``sum(w * l) / d`` (given, or defined by the loss)  ``DivisorReducer``
========================== ==================================================  =========================

The last three are :class:`ContextReduction` objects: they also read a :class:`Context` (the
anchors' class ids, the real rows, a divisor) that losses pass to :func:`apply`; every loss puts
the anchor on axis 0 of its per-element losses.

An empty selection gives 0 with a zero gradient, as PML's graph-connected zero.

Every reduction but ``"none"`` and a plain callable is computed from two additive partial
sums ``(num, den)`` (:func:`partial`, then :func:`finalize`), so a loss can accumulate them
over blocks of anchors (bounded memory) or over devices (``psum``) and finalize once: the
three context reductions combine with ``block_size`` and ``axis_name`` as ``"mean"`` does.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Union

import jax
import jax.numpy as jnp

from jaxmetric._src import collectives, validate
from jaxmetric._src.front_door import front_door

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import ArrayLike, Scalar


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


@front_door(nonfinite=False)
def threshold(low: float | None = None, high: float | None = None) -> Reduction:
    """PML's ``ThresholdReducer(low, high)``: mean of the elements with ``low < l < high``."""
    if low is None and high is None:
        raise ValueError("threshold: at least one of `low` and `high` must be given; got neither")
    if low is not None and high is not None and isinstance(low, (int, float)) and isinstance(high, (int, float)) and not low < high:
        raise ValueError(f"threshold: `low` must be below `high` (nothing lies in an empty range); got low={low!r}, high={high!r}")
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


def apply(
    reduction: ReductionSpec, losses: jax.Array, weights: jax.Array, axis_name=None, context: "Context | None" = None,
) -> jax.Array:
    """Reduces per-element ``losses`` with selection ``weights`` of the same shape.

    With ``axis_name`` the partial sums are ``psum``-ed over the mapped axis, so every device
    gets the reduction over the global set of elements (see :func:`finalize`). ``context``
    (anchor labels, valid rows, a divisor) reaches only a :class:`ContextReduction`.
    """
    if reduction == "none":
        return jnp.where(weights > 0, losses, 0.0)
    if is_additive(reduction):
        return finalize(reduction, *partial(reduction, losses, weights, context), axis_name=axis_name)
    if axis_name is not None:
        raise ValueError(
            "a callable `reduction` cannot be combined with `axis_name`: use a built-in reduction "
            "(its partial sums are summed over devices) or reduce the 'none' output yourself"
        )
    if isinstance(reduction, ContextReduction):
        return reduction(losses, weights, context)
    return reduction(losses, weights)


def partial(reduction, losses: jax.Array, weights: jax.Array, context: "Context | None" = None) -> tuple[jax.Array, jax.Array]:
    """The additive ``(num, den)`` of an additive reduction (see :func:`is_additive`) over these
    elements; ``context`` describes the same anchors as axis 0 of ``losses``."""
    if isinstance(reduction, Reduction):
        return reduction.partial(losses, weights)
    return reduction.partial(losses, weights, Context() if context is None else context)


def finalize(reduction: Reduction, num: jax.Array, den: jax.Array, axis_name=None) -> jax.Array:
    """Finishes a built-in reduction from partial sums, summing them over ``axis_name``.

    Returning ``psum(num) / psum(den)`` is what makes data-parallel gradients exact: under
    ``pmap`` and ``shard_map`` alike, the conventional ``pmean`` of per-device gradients then
    equals the single-device gradient of the loss on the concatenated batch.
    """
    if axis_name is not None:
        num = collectives.psum(num, axis_name)
        den = collectives.psum(jax.lax.stop_gradient(den), axis_name)
    return reduction.finalize(num, den)


def global_any(x: jax.Array, axis_name=None) -> jax.Array:
    """``any(x > 0)`` over the local array and, with ``axis_name``, over every device."""
    count = jnp.sum(x > 0)
    if axis_name is not None:
        count = collectives.psum(count, axis_name)
    return count > 0


def is_builtin(reduction: ReductionSpec) -> bool:
    return isinstance(reduction, Reduction)


def is_additive(reduction: ReductionSpec) -> bool:
    """Whether ``reduction`` is computed from additive partial sums (:func:`partial`): every
    :class:`Reduction`, :func:`class_weighted`, :func:`divisor`, and :func:`per_anchor` of an
    additive inner reduction; not ``"none"`` and not a plain callable."""
    return isinstance(reduction, Reduction) or (isinstance(reduction, ContextReduction) and reduction.additive)


# ---------------------------------------------------------------------------------------------
# Reductions that need more than (losses, weights): PML's ClassWeightedReducer,
# PerAnchorReducer and DivisorReducer.
#
# Protocol. Every loss lays out its per-element losses with the *anchor* (query row) on axis 0:
# ``[B]`` per anchor, ``[B, R]`` per pair, ``[B, R, R]`` per triplet, ``[B, t]`` per sampled
# triplet. What PML reads from a tuple's anchor index is therefore implicit in the layout. What
# the array cannot carry -- the anchors' class ids, which rows are real, a divisor chosen by the
# loss -- travels in a :class:`Context` that the loss passes to :func:`apply`. A
# :class:`ContextReduction` is called as ``red(losses, weights, context)``; plain callables and
# the built-in strings never see the context, so nothing changes for them.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Context:
    """What a loss knows about its elements beyond ``(losses, weights)``.

    Attributes:
      labels: class ids ``[B]`` of the anchors (axis 0 of ``losses``), or multi-hot ``[B, C]``,
        or None when the loss was given a mask.
      anchor_weight: ``[B]`` 1 for real anchor rows, 0 for padded ones (None: all real).
      divisor: a divisor the loss defines for ``reduce.divisor()`` (PML's ``"divisor"`` key).
    """

    labels: jax.Array | None = None
    anchor_weight: jax.Array | None = None
    divisor: jax.Array | float | None = None


class ContextReduction:
    """Base class of reductions that read a :class:`Context`: ``red(losses, weights, context)``.

    Subclasses implement :meth:`partial` (additive ``(num, den)`` over a set of anchors) and
    :meth:`finalize`, so a loss can sum the partials over blocks of anchors and devices; one that
    cannot sets ``additive = False`` and overrides :meth:`reduce`. Instances compare and hash by
    identity, so they can be closed over or passed as a static argument even when they hold arrays.
    """

    additive = True

    def partial(self, losses: jax.Array, weights: jax.Array, context: Context) -> tuple[jax.Array, jax.Array]:  # pragma: no cover
        raise NotImplementedError

    def finalize(self, num: jax.Array, den: jax.Array) -> jax.Array:
        return safe_divide(num, den)

    def reduce(self, losses: jax.Array, weights: jax.Array, context: Context) -> jax.Array:
        return self.finalize(*self.partial(losses, weights, context))

    def __call__(self, losses: jax.Array, weights: jax.Array, context: Context | None = None) -> jax.Array:
        return self.reduce(losses, weights, Context() if context is None else context)


def _anchor_broadcast(x: jax.Array, ndim: int) -> jax.Array:
    """A per-anchor ``[B]`` vector shaped to broadcast against ``[B, ...]`` of rank ``ndim``."""
    return x.reshape(x.shape + (1,) * (ndim - 1))


class ClassWeighted(ContextReduction):
    """PML's ``ClassWeightedReducer(weights)``: ``sum_e w_e * cw[y_{a(e)}] * l_e / sum_e w_e``.

    Every selected element (multiplicity ``w_e``) is scaled by the weight of its anchor's class
    and the mean is taken over all selected elements (no filtering of zeros), as PML's
    ``mean(losses * weights[labels[anchor]])``. Needs class-id labels (the loss passes them).
    """

    def __init__(self, weights):
        if not hasattr(weights, "shape"):
            weights = jnp.asarray(weights)
        if weights.ndim != 1:
            raise ValueError(f"class_weighted: `weights` must be a 1-D array [num_classes]; got shape {tuple(weights.shape)}")
        if not (jnp.issubdtype(weights.dtype, jnp.floating) or jnp.issubdtype(weights.dtype, jnp.integer)):
            raise TypeError(f"class_weighted: `weights` must be numeric; got dtype {weights.dtype}")
        validate.check_weights(weights, "weights", "class_weighted")
        self.weights = validate.poison_negative(weights)

    def partial(self, losses, weights, context):
        labels = context.labels
        if labels is None:
            raise ValueError(
                "class_weighted: the loss must be given class-id labels (it reads the anchors' classes); "
                "got a mask or a loss that passes no labels"
            )
        if labels.ndim != 1 or not (jnp.issubdtype(labels.dtype, jnp.integer) or labels.dtype == jnp.bool_):
            raise TypeError(f"class_weighted: `labels` must be integer class ids [B]; got shape {tuple(labels.shape)} dtype {labels.dtype}")
        if labels.shape[0] != losses.shape[0]:
            raise ValueError(
                f"class_weighted: losses must have the anchor on axis 0 ({labels.shape[0]} anchors); got shape {tuple(losses.shape)}"
            )
        cw = _anchor_broadcast(self.weights.astype(losses.dtype)[labels.astype(jnp.int32)], losses.ndim)
        w = weights.astype(losses.dtype)
        return jnp.sum(jnp.where(w > 0, w * cw * losses, 0.0)), jnp.sum(w)

    def __repr__(self):
        return f"class_weighted(weights of shape {tuple(self.weights.shape)})"


class PerAnchor(ContextReduction):
    """PML's ``PerAnchorReducer(reducer=inner)``: average each anchor's selected elements, then
    reduce the ``[B]`` per-anchor values with ``inner`` (default ``"mean"``).

    Per-anchor losses (``[B]``) go to ``inner`` unchanged. For pairs (and, beyond PML, triplets)
    anchor ``a`` gets ``sum_e w_e l_e / sum_e w_e`` over its selected elements with the weights
    clipped at 1 (a repeated pair counts once, as PML's scatter into an ``N x N`` grid), and 0
    when it has none; ``inner`` then sees every real anchor (weights ``Context.anchor_weight``).
    """

    def __init__(self, inner: ReductionSpec = "mean"):
        if inner == "none" or isinstance(inner, PerAnchor):
            raise ValueError(f"per_anchor: `inner` must reduce to a scalar (a reduction other than 'none'); got {inner!r}")
        self.inner = resolve(inner, fn="per_anchor")
        # Each anchor's mean is complete within its own row, so the partials add up whenever
        # the inner reduction's do.
        self.additive = is_additive(self.inner)

    def _per_anchor(self, losses, weights, context):
        """The ``[B]`` values and weights the inner reduction sees."""
        if losses.ndim == 1:
            return losses, weights
        w = jnp.minimum(weights.astype(losses.dtype), 1.0)
        axes = tuple(range(1, losses.ndim))
        num = jnp.sum(jnp.where(w > 0, w * losses, 0.0), axis=axes)
        aw = context.anchor_weight
        aw = jnp.ones(losses.shape[:1], losses.dtype) if aw is None else aw.astype(losses.dtype)
        return safe_divide(num, jnp.sum(w, axis=axes)), aw

    def partial(self, losses, weights, context):
        return partial(self.inner, *self._per_anchor(losses, weights, context), context)

    def finalize(self, num, den):
        return self.inner.finalize(num, den)

    def reduce(self, losses, weights, context):
        return apply(self.inner, *self._per_anchor(losses, weights, context), context=context)

    def __repr__(self):
        return f"per_anchor(inner={self.inner!r})"


class Divisor(ContextReduction):
    """PML's ``DivisorReducer``: ``sum_e w_e l_e / divisor``; 0 (zero gradient) when the
    divisor is 0. The divisor is ``value`` when given, else the one the loss defines (a count,
    so it adds up over blocks and devices like the sum)."""

    def __init__(self, value=None):
        if isinstance(value, (int, float)) and value < 0:
            raise ValueError(f"divisor: `value` must be >= 0; got {value!r}")
        self.value = value

    def partial(self, losses, weights, context):
        if self.value is None and context.divisor is None:
            raise ValueError(
                "divisor: this loss defines no divisor; pass one explicitly, e.g. reduce.divisor(value)"
            )
        w = weights.astype(losses.dtype)
        num = jnp.sum(jnp.where(w > 0, w * losses, 0.0))
        # A given value is not summed over blocks or devices: it is applied once, in finalize.
        den = jnp.zeros((), losses.dtype) if self.value is not None else jnp.asarray(context.divisor, losses.dtype)
        return num, den

    def finalize(self, num, den):
        return safe_divide(num, den if self.value is None else jnp.asarray(self.value, num.dtype))

    def __repr__(self):
        return f"divisor({self.value!r})"


@front_door(nonfinite=False)
def class_weighted(weights: ArrayLike) -> ClassWeighted:
    """PML's ``ClassWeightedReducer(weights)``; ``weights[c]`` scales the elements whose anchor
    has class ``c``. Needs class-id labels in the loss call."""
    return ClassWeighted(weights)


@front_door(nonfinite=False)
def per_anchor(inner: ReductionSpec = "mean") -> PerAnchor:
    """PML's ``PerAnchorReducer(reducer=inner)``: mean per anchor, then ``inner`` over anchors."""
    return PerAnchor(inner)


@front_door(nonfinite=False)
def divisor(value: Scalar | None = None) -> Divisor:
    """PML's ``DivisorReducer``: sum divided by ``value`` or by the loss's own divisor."""
    return Divisor(value)
