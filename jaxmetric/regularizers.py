"""Embedding and weight regularizers (PML's ``regularizers``) as pure functions ``x -> scalar``.

Each takes a ``[N, D]`` array -- embeddings, class weights or proxies, one row per item -- and
returns a scalar in the compute dtype (float32, or float64 for float64 input). Options are
keywords, so a configured regularizer is ``functools.partial(lp_regularizer, p=1)``.

``reduction`` reduces the per-row (or per-pair) terms as in every loss; the default is PML's
reducer for the regularizer (``MeanReducer``; ``DivisorReducer`` for sparse centers). The
reducer's context holds ``labels = arange(N)``, as PML passes ``arange(N)`` as labels to a
regularizer's reducer. ``where`` (bool ``[N]``) leaves padded rows out.

:func:`with_embedding_regularizer` attaches a regularizer to any loss, as PML's
``embedding_regularizer`` / ``embedding_reg_weight`` constructor arguments do.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import functools

import jax
import jax.numpy as jnp

from jaxmetric import reduce
from jaxmetric._src import validate
from jaxmetric._src.front_door import front_door, wrap
from jaxmetric.distances import l2_normalize, safe_norm

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, ReductionLike, Scalar
    from typing import Callable


def _prepare(x, fn: str, where):
    x = validate.check_embeddings(x, "x", fn=fn)
    dtype = validate.compute_dtype(x)
    x = x.astype(dtype)
    where = validate.check_where(where, x.shape[0], "where", fn=fn)
    row_w = jnp.ones((x.shape[0],), dtype) if where is None else where.astype(dtype)
    return x, row_w


def _reduce_rows(red, terms, row_w):
    ctx = reduce.Context(labels=jnp.arange(terms.shape[0]), anchor_weight=row_w)
    return reduce.apply(red, terms, row_w, context=ctx)


def _finish(value, dtype):
    return jnp.asarray(value).astype(dtype)


@front_door
def lp_regularizer(x: ArrayLike, *, p: Scalar = 2, power: Scalar = 1, reduction: ReductionLike = "mean", where: ArrayLike | None = None) -> Array:
    r"""Norm penalty, per row :math:`\|x_i\|_p^{\,\text{power}}`, averaged.

    PML: ``LpRegularizer(p=2, power=1)``, ``MeanReducer``. The gradient at a zero row is 0
    (``torch.norm``'s convention).
    """
    fn = "lp_regularizer"
    red = reduce.resolve(reduction, fn=fn)
    if isinstance(p, (int, float)) and not p > 0:
        raise ValueError(f"{fn}: `p` must be > 0; got {p!r}")
    x, row_w = _prepare(x, fn, where)
    terms = safe_norm(x, p, axis=1)
    if not (isinstance(power, (int, float)) and power == 1):
        ok = terms > 0
        terms = jnp.where(ok, jnp.where(ok, terms, 1.0) ** power, 0.0)
    return _finish(_reduce_rows(red, terms, row_w), x.dtype)


@front_door
def zero_mean_regularizer(x: ArrayLike, *, reduction: ReductionLike = "mean", where: ArrayLike | None = None) -> Array:
    r"""Per row :math:`|\sum_d x_{id}|`, averaged (Yuan et al., "Signal-to-noise ratio: a robust
    distance metric for deep metric learning", CVPR 2019).

    PML: ``ZeroMeanRegularizer()``, ``MeanReducer``.
    """
    fn = "zero_mean_regularizer"
    red = reduce.resolve(reduction, fn=fn)
    x, row_w = _prepare(x, fn, where)
    s = jnp.sum(x, axis=1)
    terms = s * jax.lax.stop_gradient(jnp.sign(s))  # |s| with torch's zero gradient at 0
    return _finish(_reduce_rows(red, terms, row_w), x.dtype)


@front_door
def center_invariant_regularizer(x: ArrayLike, *, reduction: ReductionLike = "mean", where: ArrayLike | None = None) -> Array:
    r"""Center-invariant term (Wu et al., "Deep face recognition with center invariant loss",
    ACM MM workshops 2017), per class weight :math:`w_i`:

    .. math::
        \tfrac14\big(\|w_i\|_2^2 - \tfrac1C\textstyle\sum_j \|w_j\|_2^2\big)^2

    averaged. PML: ``CenterInvariantRegularizer()`` (``LpDistance(power=1,
    normalize_embeddings=False)``), ``MeanReducer``. With ``where`` the mean norm is over the
    real rows.
    The term grows as :math:`\|w\|^4`: for entries above about 1e9 the float32 value
    overflows to ``inf`` (the gradient stays finite).
    """
    fn = "center_invariant_regularizer"
    red = reduce.resolve(reduction, fn=fn)
    x, row_w = _prepare(x, fn, where)
    sq = jnp.sum(x * x, axis=1)
    mean_sq = reduce.safe_divide(jnp.sum(row_w * sq), jnp.sum(row_w))
    terms = (sq - mean_sq) ** 2 / 4.0
    return _finish(_reduce_rows(red, terms, row_w), x.dtype)


@front_door
def regular_face_regularizer(x: ArrayLike, *, reduction: ReductionLike = "mean", where: ArrayLike | None = None) -> Array:
    r"""RegularFace (Zhao et al., CVPR 2019), per class weight :math:`w_i`:

    .. math::
        \max_{j \ne i} \cos(w_i, w_j)

    averaged; the arg-max is chosen without gradient, the chosen cosine keeps it. PML:
    ``RegularFaceRegularizer()`` (``CosineSimilarity``), ``MeanReducer``. Deliberate
    difference: a row with no other (real) row gives 0; PML picks the row itself (cosine 1).
    """
    fn = "regular_face_regularizer"
    red = reduce.resolve(reduction, fn=fn)
    x, row_w = _prepare(x, fn, where)
    n = x.shape[0]
    xn = l2_normalize(x)
    cos = xn @ xn.T
    other = (~jnp.eye(n, dtype=bool)) & (row_w[None, :] > 0)
    masked = jnp.where(other, jax.lax.stop_gradient(cos), -jnp.inf)
    idx = jnp.argmax(masked, axis=1)
    has_other = jnp.any(other, axis=1)
    chosen = jnp.take_along_axis(cos, idx[:, None], axis=1)[:, 0]
    terms = jnp.where(has_other, chosen, 0.0)
    return _finish(_reduce_rows(red, terms, row_w), x.dtype)


@front_door
def sparse_centers_regularizer(x: ArrayLike, num_classes: int, centers_per_class: int, *, reduction: ReductionLike | None = None, where: ArrayLike | None = None) -> Array:
    r"""SoftTriple's center-merging term (Qian et al., ICCV 2019). ``x`` holds
    ``num_classes * centers_per_class`` centers, class-major (rows ``c*K .. c*K+K-1`` belong to
    class ``c``). For every pair of centers :math:`k < l` of the same class:

    .. math::
        \sqrt{2 + \epsilon - \min(2\cos(w_k, w_l), 2)}

    with :math:`\epsilon` the dtype's smallest normal number; the sum is divided by
    ``num_classes * K * (K - 1)`` (twice the number of pairs).

    PML: ``SparseCentersRegularizer(num_classes, centers_per_class)`` (``CosineSimilarity``),
    ``DivisorReducer`` (``reduction=None`` means ``reduce.divisor()`` with that divisor).
    Deliberate difference: ``2 + tiny`` rounds to 2 in every float dtype, so for merged centers
    (cosine exactly 1) PML's value is 0 with a NaN gradient; jaxmetric gives the same 0 with a
    zero gradient.
    """
    fn = "sparse_centers_regularizer"
    if not (isinstance(num_classes, int) and num_classes > 0):
        raise ValueError(f"{fn}: `num_classes` must be a positive int; got {num_classes!r}")
    if not (isinstance(centers_per_class, int) and centers_per_class > 1):
        raise ValueError(f"{fn}: `centers_per_class` must be an int > 1; got {centers_per_class!r}")
    red = reduce.divisor() if reduction is None else reduce.resolve(reduction, fn=fn)
    x, row_w = _prepare(x, fn, where)
    total = num_classes * centers_per_class
    if x.shape[0] != total:
        raise ValueError(
            f"{fn}: `x` must have num_classes * centers_per_class = {total} rows; got shape {tuple(x.shape)}"
        )
    xn = l2_normalize(x)
    cos = xn @ xn.T
    cls = jnp.arange(total) // centers_per_class
    idx = jnp.arange(total)
    same = (cls[:, None] == cls[None, :]) & (idx[:, None] < idx[None, :])
    pair_w = same.astype(x.dtype) * row_w[:, None] * row_w[None, :]
    tiny = jnp.finfo(x.dtype).tiny
    gap = 2.0 - jnp.minimum(2.0 * cos, 2.0)  # >= 0
    ok = gap > 0
    terms = jnp.where(ok, jnp.sqrt(jnp.where(ok, gap, 1.0) + tiny), 0.0)
    divisor = 2.0 * jnp.sum(pair_w)
    ctx = reduce.Context(labels=None, anchor_weight=row_w, divisor=divisor)
    return _finish(reduce.apply(red, terms, pair_w, context=ctx), x.dtype)


@front_door
def with_embedding_regularizer(loss_fn: Callable[..., Array], regularizer: Callable[..., Array], weight: Scalar = 1.0) -> Callable[..., Array]:
    r"""A loss function that adds ``weight * regularizer(embeddings)`` to ``loss_fn``.

    The returned function has ``loss_fn``'s signature. The regularizer sees every row of
    ``embeddings`` (the first argument) -- not ``ref_emb``, not only mined pairs -- and it is added
    even when the loss's selection is empty, as PML's ``embedding_regularizer`` with
    ``embedding_reg_weight``. With ``where=...`` the padded rows are left out of the regularizer
    too (it must accept ``where``; the ones in this module do). ``weight`` may be a traced value.

    Example::

        loss_fn = with_embedding_regularizer(jaxmetric.contrastive_loss, jaxmetric.lp_regularizer, 0.1)
        loss = loss_fn(embeddings, labels)
    """
    if not callable(loss_fn):
        raise TypeError(f"with_embedding_regularizer: `loss_fn` must be callable; got {type(loss_fn).__name__}")
    if not callable(regularizer):
        raise TypeError(f"with_embedding_regularizer: `regularizer` must be callable; got {type(regularizer).__name__}")
    reg_takes_where = validate.accepts_keyword(regularizer, "where")

    @functools.wraps(loss_fn)
    def regularized(embeddings, *args, **kwargs):
        value = loss_fn(embeddings, *args, **kwargs)
        where = kwargs.get("where")
        if where is None:
            reg = regularizer(embeddings)
        elif reg_takes_where:
            reg = regularizer(embeddings, where=where)
        else:
            raise TypeError(
                "with_embedding_regularizer: `where` was given but the regularizer takes no `where` keyword; "
                f"got {regularizer!r}"
            )
        return value + weight * reg

    # Behind the front door like every loss (any array type, NaN in -> NaN out).
    return wrap(regularized)
