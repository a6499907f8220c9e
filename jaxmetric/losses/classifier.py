"""Classifier-head losses: softmax cross-entropy over (normalised) class weights, with margins.

Every loss takes ``(embeddings [B, D], labels [B] integer class ids, weights, *, ...)`` where
``weights`` is the class matrix, an explicit argument shaped ``(num_classes, dim)`` (PML
stores the transpose, ``W`` of shape ``(embedding_size, num_classes)``). Sub-center losses take
``(num_classes, sub_centers, dim)`` or PML's flattened ``(num_classes * sub_centers, dim)``
(class-major rows). Create the matrix with :func:`jaxmetric.init_class_weights` and read
inference logits with :func:`jaxmetric.class_logits` (PML's ``get_logits``).

Shared keywords (see :mod:`jaxmetric.losses.proxy`): ``mask`` / ``sample_weights`` (PML's
miner weights: the per-sample loss is multiplied by them, the mean still runs over the batch),
``where`` (padded rows), ``weight_regularizer`` / ``weight_reg_weight`` (PML's
``WeightRegularizerMixin``; the regularizer receives the ``(rows, dim)`` class matrix, as PML
passes ``W.t()``).

``axis_name``: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``, the per-sample losses are
reduced over the global batch (partial sums ``psum``-ed), so uneven ``where`` padding across
devices stays exact; the value is the single-device loss on the concatenated batch and the
gradients (the embeddings' layers and ``weights``) are exact after ``pmean``. A ``mask`` is then
``[B_local, B_global]``.

``block_size``: rows per block (static): the ``[B, C]`` logits are computed block by block
(rematerialised in the backward pass), memory ``O(B D + C D + block_size C)``, same value and
gradient. Any reduction.

Numerics: similarities, exponentials and the cross-entropy are computed in float32 (float64 for
float64 inputs), so bf16 embeddings with a float32 class matrix give a float32 loss. Angles use
:func:`~jaxmetric._src.class_matrix.safe_acos`: ``acos(clamp(cos, -1, 1))`` whose gradient is
finite at ``cos = +-1``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxmetric._src import class_matrix as cm, validate
from jaxmetric import reduce
from jaxmetric._src.front_door import front_door
from jaxmetric.distances import DotProductSimilarity, l2_normalize, safe_norm
from jaxmetric._src.class_matrix import safe_acos
from jaxmetric._src.validate import check_distance, check_positive

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, AxisName, ReductionLike, Scalar
    from jaxmetric.distances import BaseDistance
    from typing import Callable


# --------------------------------------------------------------------------------------------
# Shared pieces


def _cosine(emb, w):
    """``[B, C]`` cosine similarity of the rows of ``emb`` and ``w`` (PML's CosineSimilarity)."""
    return l2_normalize(emb) @ l2_normalize(w).T


def _rows(w):
    """The ``(C, D)`` class matrix, or ``(C, K, D)`` sub-centers as ``(C * K, D)`` class-major
    rows (PML's ``W.t()``: what the regularizer receives)."""
    if w.ndim == 2:
        return w
    c, k, d = w.shape
    return w.reshape(c * k, d)


def _closest_center(cos, k: int):
    """``[n, C * K]`` cosines to class-major sub-center rows -> ``max_k`` ``[n, C]``."""
    n, ck = cos.shape
    return jnp.max(cos.reshape(n, ck // k, k), axis=2)


def _subcenter_cosine(emb, w3):
    """``max_k cos(x_i, w_{c,k})`` ``[B, C]`` for centers ``(C, K, D)``."""
    return _closest_center(_cosine(emb, _rows(w3)), w3.shape[1])


def _with_target(cos, labels, target):
    """Replaces the target-class entry of each row of ``cos`` by ``target`` ``[B]``."""
    onehot = jax.nn.one_hot(labels, cos.shape[1], dtype=bool)
    return jnp.where(onehot, target[:, None], cos)


def _target(cos, labels):
    return jnp.take_along_axis(cos, labels[:, None], axis=1)[:, 0]


def _arc_margin(cos_t, margin_rad):
    r"""ArcFace's target logit: :math:`\cos(\theta+m)` for :math:`\theta \le \pi - m`, else
    :math:`\cos\theta - m \sin m` (keeps it decreasing in :math:`\theta`)."""
    theta = safe_acos(cos_t)
    return jnp.where(theta <= math.pi - margin_rad, jnp.cos(theta + margin_rad), jnp.cos(theta) - margin_rad * jnp.sin(margin_rad))


def _arc_margin_degrees(cos_t, margin_deg):
    """:func:`_arc_margin` for a margin in degrees (PML's unit), in the cosines' dtype (float64
    margins for float64 inputs)."""
    return _arc_margin(cos_t, jnp.deg2rad(jnp.asarray(margin_deg, cos_t.dtype)))


def _check_int_margin(margin, fn):
    if isinstance(margin, bool) or not isinstance(margin, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: `margin` must be a static positive integer (the angle multiplier m); got {margin!r}")
    if margin != int(margin) or int(margin) < 1:
        raise ValueError(f"{fn}: `margin` must be a positive integer (the angle multiplier m); got {margin!r}")
    return int(margin)


def _cos_multiple_angle(c, m: int):
    r""":math:`\cos(m\theta)` from :math:`c = \cos\theta` by the multiple-angle formula
    :math:`\sum_{n=0}^{\lfloor m/2\rfloor} (-1)^n \binom{m}{2n} c^{m-2n} (1-c^2)^n`
    (Eq. 7 of L-Softmax; a Chebyshev polynomial of degree m)."""
    s2 = 1.0 - c * c
    out = jnp.zeros_like(c)
    for n in range(m // 2 + 1):
        out = out + ((-1) ** n) * math.comb(m, 2 * n) * (c ** (m - 2 * n)) * (s2**n)
    return out


def _lsoftmax_target(cos_t, m: int):
    r"""L-Softmax's :math:`\psi(\theta) = (-1)^k \cos(m\theta) - 2k`,
    :math:`k = \lfloor m\theta/\pi \rfloor` (constant, as PML computes it under ``no_grad``)."""
    theta = jax.lax.stop_gradient(safe_acos(cos_t))
    k = jnp.floor(theta / (math.pi / m))
    sign = jnp.where(jnp.mod(k, 2.0) == 0, 1.0, -1.0).astype(cos_t.dtype)
    return sign * _cos_multiple_angle(cos_t, m) - 2.0 * k


def _common(fn, reduction, weight_regularizer):
    red = reduce.resolve(reduction, fn=fn)
    cm.check_regularizer(weight_regularizer, red, fn)
    return red


def _loss_from_samples(fn, red, x, per_sample, *, weight_regularizer, weight_reg_weight, block_size):
    """``per_sample(emb, labels) -> [n]`` losses (over row blocks with ``block_size``), reduced
    over the (global, with ``axis_name``) batch, plus the regularizer of the class rows."""
    losses = cm.sample_losses(per_sample, x, block_size, fn)
    value = cm.reduce_samples(red, losses, x)
    value = cm.add_regularizer(value, weight_regularizer, _rows(x.weights), weight_reg_weight, fn)
    return cm.finish(value, x)


def _margin_softmax(fn, red, x, target_logit, *, scale, magnitudes=None, weight_regularizer, weight_reg_weight, block_size):
    r"""Cross-entropy of the cosine logits ``scale * cos(x_i, w_c)`` whose target entry is
    ``target_logit(cos_t [n], labels [n])``: the body every margin head shares.

    ``cos`` is the max over sub-centers for ``(C, K, D)`` weights. ``magnitudes``:
    ``"embeddings"`` also multiplies every logit by :math:`\lVert x_i\rVert` (SphereFace),
    ``"embeddings and weights"`` by :math:`\lVert x_i\rVert \lVert w_c\rVert` (L-Softmax).
    """
    w_n = l2_normalize(_rows(x.weights))  # once, not per row block
    w_norm = safe_norm(x.weights, axis=1) if magnitudes == "embeddings and weights" else None

    def per_sample(e, y):
        cos = l2_normalize(e) @ w_n.T
        if x.weights.ndim == 3:
            cos = _closest_center(cos, x.weights.shape[1])
        logits = _with_target(cos, y, target_logit(_target(cos, y), y))
        if magnitudes is not None:
            e_norm = safe_norm(e, axis=1)[:, None]
            logits = logits * (e_norm if w_norm is None else e_norm * w_norm[None, :])
        return cm.cross_entropy(logits * scale, y)

    return _loss_from_samples(
        fn, red, x, per_sample, weight_regularizer=weight_regularizer, weight_reg_weight=weight_reg_weight, block_size=block_size
    )


def _cosine_head(
    fn, red, embeddings, labels, weights, target_logit, *, scale, centers=None, magnitudes=None,
    where, mask, sample_weights, weight_regularizer, weight_reg_weight, block_size, axis_name,
):
    """Validates the inputs (``centers``: ``cm.prepare``'s sub-center spec) and returns
    their :func:`_margin_softmax`: a head is its hyperparameter checks, its target logit and
    this one call."""
    x = cm.prepare(fn, embeddings, labels, weights, where=where, mask=mask, sample_weights=sample_weights, centers=centers, axis_name=axis_name)
    return _margin_softmax(
        fn, red, x, target_logit, scale=scale, magnitudes=magnitudes,
        weight_regularizer=weight_regularizer, weight_reg_weight=weight_reg_weight, block_size=block_size,
    )


# --------------------------------------------------------------------------------------------
# Losses


@front_door
def normalized_softmax_loss(
    embeddings: ArrayLike, labels: ArrayLike, weights: ArrayLike, *, temperature: Scalar = 0.05,
    distance: BaseDistance = DotProductSimilarity(), reduction: ReductionLike = "mean",
    where: ArrayLike | None = None, mask: ArrayLike | None = None, sample_weights: ArrayLike | None = None,
    weight_regularizer: Callable[..., Array] | None = None, weight_reg_weight: Scalar = 1.0,
    block_size: int | None = None, axis_name: AxisName | None = None,
) -> Array:
    r"""NormSoftmax (Zhai & Wu, "Classification is a Strong Baseline for Deep Metric
    Learning", BMVC 2019): cross-entropy over temperature-scaled cosine logits,

    .. math::
        L_i = -\log\frac{e^{s(x_i, \hat w_{y_i})/T}}{\sum_c e^{s(x_i, \hat w_c)/T}},
        \qquad \hat w_c = w_c / \lVert w_c\rVert

    (a distance :math:`d` enters as :math:`-d/T`).

    PML: ``NormalizedSoftmaxLoss(num_classes, embedding_size, temperature=0.05)``,
    ``DotProductSimilarity()`` (which normalises the embeddings by default, so it is cosine),
    ``MeanReducer``; ``W`` initialised N(0, 1).

    Shared keywords (``mask``, ``sample_weights``, ``where``, ``weight_regularizer``,
    ``weight_reg_weight``, ``axis_name``, ``block_size``): :mod:`jaxmetric.losses.classifier`.
    """
    fn = "normalized_softmax_loss"
    red = _common(fn, reduction, weight_regularizer)
    check_distance(distance, fn)
    check_positive(temperature, "temperature", fn)
    x = cm.prepare(fn, embeddings, labels, weights, where=where, mask=mask, sample_weights=sample_weights, axis_name=axis_name)
    # any distance, not a cosine with a target margin: the logits are written here
    w_n = distance.normalize(x.weights)
    per_sample = lambda e, y: cm.cross_entropy(_normalized_softmax_logits(e, w_n, temperature, distance), y)  # noqa: E731
    return _loss_from_samples(
        fn, red, x, per_sample, weight_regularizer=weight_regularizer, weight_reg_weight=weight_reg_weight, block_size=block_size
    )


def _normalized_softmax_logits(emb, w_normalized, temperature, distance):
    logits = distance(emb, w_normalized) / temperature
    return logits if distance.is_inverted else -logits


@front_door
def large_margin_softmax_loss(
    embeddings: ArrayLike, labels: ArrayLike, weights: ArrayLike, *, margin: Scalar = 4, scale: Scalar = 1.0,
    reduction: ReductionLike = "mean", where: ArrayLike | None = None, mask: ArrayLike | None = None,
    sample_weights: ArrayLike | None = None, weight_regularizer: Callable[..., Array] | None = None,
    weight_reg_weight: Scalar = 1.0, block_size: int | None = None, axis_name: AxisName | None = None,
) -> Array:
    r"""L-Softmax (Liu et al., "Large-Margin Softmax Loss for Convolutional Neural Networks",
    ICML 2016). The target logit's angle is multiplied by the integer ``margin`` :math:`m`:

    .. math::
        f_{i,c} = s\,\lVert w_c\rVert \lVert x_i\rVert
        \begin{cases}\psi(\theta_{i,y_i}) & c = y_i\\ \cos\theta_{i,c} & c\neq y_i\end{cases},
        \qquad \psi(\theta) = (-1)^k\cos(m\theta) - 2k,\ k=\lfloor m\theta/\pi\rfloor

    and :math:`L_i = \mathrm{CE}(f_i, y_i)`. :math:`\cos(m\theta)` is the multiple-angle
    (Chebyshev) polynomial in :math:`\cos\theta` (Eq. 7), and :math:`k` is a constant, as in
    PML.

    Args:
      margin: the integer multiplier :math:`m` (static). PML casts it with ``int()``;
        jaxmetric rejects a non-integer value.
      scale: :math:`s`, multiplies every logit.

    PML: ``LargeMarginSoftmaxLoss(num_classes, embedding_size, margin=4, scale=1)``,
    ``CosineSimilarity`` (required, so no ``distance`` argument here), ``MeanReducer``;
    ``W`` initialised N(0, 1).

    Shared keywords (``mask``, ``sample_weights``, ``where``, ``weight_regularizer``,
    ``weight_reg_weight``, ``axis_name``, ``block_size``): :mod:`jaxmetric.losses.classifier`.
    """
    fn = "large_margin_softmax_loss"
    red = _common(fn, reduction, weight_regularizer)
    check_positive(scale, "scale", fn)
    m = _check_int_margin(margin, fn)
    return _cosine_head(
        fn, red, embeddings, labels, weights, lambda cos_t, y: _lsoftmax_target(cos_t, m),
        scale=scale, magnitudes="embeddings and weights",
        where=where, mask=mask, sample_weights=sample_weights, weight_regularizer=weight_regularizer,
        weight_reg_weight=weight_reg_weight, block_size=block_size, axis_name=axis_name,
    )


def _lsoftmax_magnitudes(emb, w):
    return safe_norm(emb, axis=1)[:, None] * safe_norm(w, axis=1)[None, :]


@front_door
def sphereface_loss(
    embeddings: ArrayLike, labels: ArrayLike, weights: ArrayLike, *, margin: Scalar = 4, scale: Scalar = 1.0,
    reduction: ReductionLike = "mean", where: ArrayLike | None = None, mask: ArrayLike | None = None,
    sample_weights: ArrayLike | None = None, weight_regularizer: Callable[..., Array] | None = None,
    weight_reg_weight: Scalar = 1.0, block_size: int | None = None, axis_name: AxisName | None = None,
) -> Array:
    r"""SphereFace / A-Softmax (Liu et al., "SphereFace: Deep Hypersphere Embedding for Face
    Recognition", CVPR 2017): L-Softmax with normalised class weights,

    .. math::
        f_{i,c} = s\,\lVert x_i\rVert
        \begin{cases}\psi(\theta_{i,y_i}) & c = y_i\\ \cos\theta_{i,c} & c\neq y_i\end{cases}

    with :math:`\psi` as in :func:`large_margin_softmax_loss`.

    PML: ``SphereFaceLoss(num_classes, embedding_size, margin=4, scale=1)``,
    ``CosineSimilarity``, ``MeanReducer``; ``W`` initialised N(0, 1).

    Shared keywords (``mask``, ``sample_weights``, ``where``, ``weight_regularizer``,
    ``weight_reg_weight``, ``axis_name``, ``block_size``): :mod:`jaxmetric.losses.classifier`.
    """
    fn = "sphereface_loss"
    red = _common(fn, reduction, weight_regularizer)
    check_positive(scale, "scale", fn)
    m = _check_int_margin(margin, fn)
    return _cosine_head(
        fn, red, embeddings, labels, weights, lambda cos_t, y: _lsoftmax_target(cos_t, m),
        scale=scale, magnitudes="embeddings",
        where=where, mask=mask, sample_weights=sample_weights, weight_regularizer=weight_regularizer,
        weight_reg_weight=weight_reg_weight, block_size=block_size, axis_name=axis_name,
    )


@front_door
def arcface_loss(
    embeddings: ArrayLike, labels: ArrayLike, weights: ArrayLike, *, margin: Scalar = 28.6, scale: Scalar = 64.0,
    reduction: ReductionLike = "mean", where: ArrayLike | None = None, mask: ArrayLike | None = None,
    sample_weights: ArrayLike | None = None, weight_regularizer: Callable[..., Array] | None = None,
    weight_reg_weight: Scalar = 1.0, block_size: int | None = None, axis_name: AxisName | None = None,
) -> Array:
    r"""ArcFace (Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face
    Recognition", CVPR 2019):

    .. math::
        L_i = -\log\frac{e^{s\,\psi(\theta_{y_i})}}{e^{s\,\psi(\theta_{y_i})} + \sum_{c\ne y_i} e^{s\cos\theta_c}},
        \qquad \psi(\theta) = \begin{cases}\cos(\theta + m) & \theta \le \pi - m\\
        \cos\theta - m\sin m & \text{otherwise}\end{cases}

    Args:
      margin: the additive angular margin :math:`m` in **degrees** (PML's unit; 28.6° ≈ 0.5
        rad). May be traced.
      scale: :math:`s`.

    PML: ``ArcFaceLoss(num_classes, embedding_size, margin=28.6, scale=64)``,
    ``CosineSimilarity``, ``MeanReducer``; ``W`` initialised N(0, 1).

    Shared keywords (``mask``, ``sample_weights``, ``where``, ``weight_regularizer``,
    ``weight_reg_weight``, ``axis_name``, ``block_size``): :mod:`jaxmetric.losses.classifier`.
    """
    fn = "arcface_loss"
    red = _common(fn, reduction, weight_regularizer)
    check_positive(scale, "scale", fn)
    return _cosine_head(
        fn, red, embeddings, labels, weights, lambda cos_t, y: _arc_margin_degrees(cos_t, margin), scale=scale,
        where=where, mask=mask, sample_weights=sample_weights, weight_regularizer=weight_regularizer,
        weight_reg_weight=weight_reg_weight, block_size=block_size, axis_name=axis_name,
    )


@front_door
def cosface_loss(
    embeddings: ArrayLike, labels: ArrayLike, weights: ArrayLike, *, margin: Scalar = 0.35, scale: Scalar = 64.0,
    reduction: ReductionLike = "mean", where: ArrayLike | None = None, mask: ArrayLike | None = None,
    sample_weights: ArrayLike | None = None, weight_regularizer: Callable[..., Array] | None = None,
    weight_reg_weight: Scalar = 1.0, block_size: int | None = None, axis_name: AxisName | None = None,
) -> Array:
    r"""CosFace / AM-Softmax (Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face
    Recognition", CVPR 2018): the margin is subtracted in cosine space,

    .. math::
        L_i = -\log\frac{e^{s(\cos\theta_{y_i} - m)}}{e^{s(\cos\theta_{y_i} - m)} + \sum_{c\ne y_i} e^{s\cos\theta_c}}

    PML: ``CosFaceLoss(num_classes, embedding_size, margin=0.35, scale=64)``,
    ``CosineSimilarity``, ``MeanReducer``; ``W`` initialised N(0, 1).

    Shared keywords (``mask``, ``sample_weights``, ``where``, ``weight_regularizer``,
    ``weight_reg_weight``, ``axis_name``, ``block_size``): :mod:`jaxmetric.losses.classifier`.
    """
    fn = "cosface_loss"
    red = _common(fn, reduction, weight_regularizer)
    check_positive(scale, "scale", fn)
    return _cosine_head(
        fn, red, embeddings, labels, weights, lambda cos_t, y: cos_t - margin, scale=scale,
        where=where, mask=mask, sample_weights=sample_weights, weight_regularizer=weight_regularizer,
        weight_reg_weight=weight_reg_weight, block_size=block_size, axis_name=axis_name,
    )


@front_door
def subcenter_arcface_loss(
    embeddings: ArrayLike, labels: ArrayLike, weights: ArrayLike, *, margin: Scalar = 28.6, scale: Scalar = 64.0,
    sub_centers: int | None = None, reduction: ReductionLike = "mean", where: ArrayLike | None = None,
    mask: ArrayLike | None = None, sample_weights: ArrayLike | None = None,
    weight_regularizer: Callable[..., Array] | None = None, weight_reg_weight: Scalar = 1.0,
    block_size: int | None = None, axis_name: AxisName | None = None,
) -> Array:
    r"""Sub-center ArcFace (Deng et al., "Sub-center ArcFace: Boosting Face Recognition by
    Large-scale Noisy Web Faces", ECCV 2020): :func:`arcface_loss` where each class has
    :math:`K` sub-centers and :math:`\cos\theta_{i,c} = \max_k \cos(x_i, w_{c,k})`.

    Args:
      weights: ``(num_classes, K, D)``, or PML's ``(num_classes * K, D)`` with class-major rows
        (row ``c * K + k``, i.e. PML's ``W.t()``).
      sub_centers: K; ``None`` takes it from 3-D weights and uses PML's default 3 for 2-D
        weights. Static.
      weight_regularizer: receives the ``(num_classes * K, D)`` rows.

    Use :func:`subcenter_arcface_outliers` after training to find each class's dominant
    sub-center and the samples far from it (PML's ``get_outliers``).

    PML: ``SubCenterArcFaceLoss(num_classes=..., embedding_size=..., margin=28.6, scale=64,
    sub_centers=3)`` (keyword-only in practice), ``CosineSimilarity``, ``MeanReducer``.

    Shared keywords (``mask``, ``sample_weights``, ``where``, ``weight_regularizer``,
    ``weight_reg_weight``, ``axis_name``, ``block_size``): :mod:`jaxmetric.losses.classifier`.
    """
    fn = "subcenter_arcface_loss"
    red = _common(fn, reduction, weight_regularizer)
    check_positive(scale, "scale", fn)
    return _cosine_head(
        fn, red, embeddings, labels, weights, lambda cos_t, y: _arc_margin_degrees(cos_t, margin), scale=scale,
        centers=(sub_centers, 3, "sub_centers"),
        where=where, mask=mask, sample_weights=sample_weights, weight_regularizer=weight_regularizer,
        weight_reg_weight=weight_reg_weight, block_size=block_size, axis_name=axis_name,
    )


@front_door
def subcenter_arcface_outliers(embeddings: ArrayLike, labels: ArrayLike, weights: ArrayLike, *, threshold: Scalar = 75.0, sub_centers: int | None = None, where: ArrayLike | None = None) -> tuple[Array, Array]:
    r"""PML's ``SubCenterArcFaceLoss.get_outliers`` as a pure, jit-able function.

    For each class, the dominant sub-center is the one that most of the class's samples are
    closest to (ties: the lowest index). A sample is an outlier when its cosine to its class's
    dominant sub-center is below :math:`\cos(\text{threshold})` (``threshold`` in degrees).

    Returns:
      ``(outliers, dominant_centers)``: a bool mask ``[B]`` (PML returns the indices, i.e.
      ``jnp.flatnonzero(outliers)``) and the dominant sub-centers ``(num_classes, D)`` (PML:
      ``(D, num_classes)``). Classes absent from the batch (or padded out by ``where``) get
      sub-center 0 (PML leaves those columns uninitialised). No gradient flows.
    """
    fn = "subcenter_arcface_outliers"
    x = cm.prepare(fn, embeddings, labels, weights, where=where, centers=(sub_centers, 3, "sub_centers"), mask_arg=False)
    w3 = jax.lax.stop_gradient(x.weights)
    emb = jax.lax.stop_gradient(x.emb)
    c, k, d = w3.shape
    cos = _cosine(emb, w3.reshape(c * k, d)).reshape(emb.shape[0], c, k)
    own = jnp.take_along_axis(cos, x.labels[:, None, None], axis=1)[:, 0, :]  # [B, K]
    closest = jnp.argmax(own, axis=1)
    counts = (jax.nn.one_hot(x.labels, c, dtype=x.dtype) * x.valid[:, None]).T @ jax.nn.one_hot(closest, k, dtype=x.dtype)
    dominant = jnp.argmax(counts, axis=1)  # [C]
    dominant_cos = jnp.take_along_axis(own, dominant[x.labels][:, None], axis=1)[:, 0]
    outliers = (dominant_cos < math.cos(math.radians(threshold))) & (x.valid > 0)
    centers = jnp.take_along_axis(w3, dominant[:, None, None], axis=1)[:, 0, :]
    return outliers, centers.astype(jnp.asarray(weights).dtype)


@front_door
def dynamic_arcface_margins(class_counts: ArrayLike, *, margin_bounds: tuple[float, float] = (0.05, 0.5), power: Scalar = 0.25) -> Array:
    r"""Per-class ArcFace margins (radians) from training-set class sizes :math:`n_c`:

    .. math::
        m_c = a\, n_c^{-\lambda} + b

    with :math:`\lambda` = ``power`` and :math:`a, b` chosen so that the smallest class gets
    ``margin_bounds[1]`` and the largest ``margin_bounds[0]``:
    :math:`m_c = lo + (hi - lo)\,\frac{n_c^{-\lambda} - n_{max}^{-\lambda}}{n_{min}^{-\lambda} - n_{max}^{-\lambda}}`.
    When every class has the same size every margin is ``hi`` (plain ArcFace with margin
    ``hi``; 0.5 rad by default, ArcFace's usual margin).

    Source: Ha et al., "Google Landmark Recognition 2020 Competition Third Place Solution"
    (arXiv:2010.05350), Sec. 3 ("dynamic margins", :math:`\lambda = 1/4`, bounds 0.05 and
    0.5 rad as in their code's min-max scaling), and PML v3's ``DynamicArcFaceLoss``
    documentation (``margin_bounds=(0.05, 0.5), power=0.25``; smallest class gets the upper
    bound, largest the lower).

    Args:
      class_counts: ``[C]`` positive counts (integer or float). Checked when concrete.
    """
    fn = "dynamic_arcface_margins"
    if not hasattr(class_counts, "shape"):
        class_counts = jnp.asarray(class_counts)
    if class_counts.ndim != 1 or class_counts.shape[0] < 1:
        raise ValueError(f"{fn}: `class_counts` must be a 1-D array [num_classes]; got {cm._describe(class_counts)}")
    if not jnp.issubdtype(class_counts.dtype, jnp.number) or jnp.issubdtype(class_counts.dtype, jnp.complexfloating):
        raise TypeError(f"{fn}: `class_counts` must be real numbers; got {cm._describe(class_counts)}")
    if validate.is_concrete(class_counts) and np.any(np.asarray(class_counts) <= 0):
        raise ValueError(f"{fn}: `class_counts` must all be > 0 (sizes of the training classes); got {np.asarray(class_counts)}")
    if len(margin_bounds) != 2:
        raise ValueError(f"{fn}: `margin_bounds` must be (low, high); got {margin_bounds!r}")
    lo, hi = margin_bounds
    if all(isinstance(v, (int, float)) for v in (lo, hi)) and not 0 <= lo <= hi:
        raise ValueError(f"{fn}: `margin_bounds` must satisfy 0 <= low <= high; got {margin_bounds!r}")
    dtype = jnp.promote_types(jnp.float32, class_counts.dtype) if jnp.issubdtype(class_counts.dtype, jnp.floating) else jnp.float32
    v = class_counts.astype(dtype) ** (-jnp.asarray(power, dtype))
    vmin, vmax = jnp.min(v), jnp.max(v)
    span = vmax - vmin
    ok = span > 0
    frac = jnp.where(ok, (v - vmin) / jnp.where(ok, span, 1.0), 1.0)
    return jax.lax.stop_gradient(lo + (hi - lo) * frac)


@front_door
def dynamic_arcface_loss(
    embeddings: ArrayLike, labels: ArrayLike, weights: ArrayLike, class_counts: ArrayLike, *,
    margin_bounds: tuple[float, float] = (0.05, 0.5), power: Scalar = 0.25, scale: Scalar = 64.0,
    sub_centers: int | None = None, reduction: ReductionLike = "mean", where: ArrayLike | None = None,
    mask: ArrayLike | None = None, sample_weights: ArrayLike | None = None,
    weight_regularizer: Callable[..., Array] | None = None, weight_reg_weight: Scalar = 1.0,
    block_size: int | None = None, axis_name: AxisName | None = None,
) -> Array:
    r"""Sub-center ArcFace with dynamic (per-class) margins for long-tailed data (Ha et al.,
    "Google Landmark Recognition 2020 Competition Third Place Solution", arXiv:2010.05350):
    :func:`subcenter_arcface_loss` where the margin of sample :math:`i` is
    :math:`m_{y_i} = a\, n_{y_i}^{-\lambda} + b` (radians), computed by
    :func:`dynamic_arcface_margins` from ``class_counts`` (the training-set class sizes),
    ``margin_bounds`` and ``power``: rare classes get larger margins.

    Args:
      class_counts: ``[num_classes]`` training-set class sizes (> 0), positional, as PML v3's
        ``DynamicArcFaceLoss(class_counts, ...)``; its length must equal ``weights.shape[0]``.
      weights: ``(num_classes, K, D)`` or ``(num_classes * K, D)``; K = ``sub_centers``
        (``None``: from 3-D weights, else PML v3's default 3). ``sub_centers=1`` is ArcFace
        with per-class margins.

    Beyond PML 2.9: follows PML v3's documented ``DynamicArcFaceLoss(class_counts,
    embedding_size, margin_bounds=(0.05, 0.5), power=0.25, scale=64, sub_centers=3)``.

    Shared keywords (``mask``, ``sample_weights``, ``where``, ``weight_regularizer``,
    ``weight_reg_weight``, ``axis_name``, ``block_size``): :mod:`jaxmetric.losses.classifier`.
    """
    fn = "dynamic_arcface_loss"
    red = _common(fn, reduction, weight_regularizer)
    check_positive(scale, "scale", fn)
    # validated here, not in _cosine_head: `class_counts` is checked against the class count
    x = cm.prepare(
        fn, embeddings, labels, weights, where=where, mask=mask, sample_weights=sample_weights,
        centers=(sub_centers, 3, "sub_centers"), axis_name=axis_name,
    )
    margins = dynamic_arcface_margins(class_counts, margin_bounds=margin_bounds, power=power)
    if margins.shape[0] != x.num_classes:
        raise ValueError(
            f"{fn}: `class_counts` must have one entry per class ({x.num_classes} = weights.shape[0]); "
            f"got shape {tuple(margins.shape)}"
        )
    margins = margins.astype(x.dtype)
    return _margin_softmax(
        fn, red, x, lambda cos_t, y: _arc_margin(cos_t, margins[y]), scale=scale,
        weight_regularizer=weight_regularizer, weight_reg_weight=weight_reg_weight, block_size=block_size,
    )


def _p2s_cosine(emb, w):
    """``clamp(x_i . w_c / ||x_i||, -1, 1)`` with ``w`` renormalised to unit rows in the
    forward pass and a straight-through gradient (PML renormalises ``W`` in place every call,
    so its gradient is taken with respect to the unit-norm weights as a leaf)."""
    w_unit = w + jax.lax.stop_gradient(l2_normalize(w) - w)
    # x / ||x|| (PML divides by the norm; a zero row gives 0, not 0/0, with a zero gradient)
    return jnp.clip(l2_normalize(emb) @ w_unit.T, -1.0, 1.0)


@front_door
def p2sgrad_loss(
    embeddings: ArrayLike, labels: ArrayLike, weights: ArrayLike, *, reduction: ReductionLike = "mean",
    where: ArrayLike | None = None, mask: ArrayLike | None = None, sample_weights: ArrayLike | None = None,
    weight_regularizer: Callable[..., Array] | None = None, weight_reg_weight: Scalar = 1.0,
    block_size: int | None = None, axis_name: AxisName | None = None,
) -> Array:
    r"""P2SGrad (Zhang et al., "P2SGrad: Refined Gradients for Optimizing Deep Face Models",
    CVPR 2019). Its gradient equals that of a mean squared error between the cosines and the
    one-hot targets:

    .. math::
        L_i = \frac{1}{C}\sum_{c} \big(\cos\theta_{i,c} - [c = y_i]\big)^2,
        \qquad \cos\theta_{i,c} = \operatorname{clamp}\Big(\frac{x_i^\top \hat w_c}{\lVert x_i\rVert}, -1, 1\Big)

    and the default ``"mean"`` averages over samples (PML's ``MSELoss`` mean over all
    :math:`B \cdot C` entries).

    Args:
      weights: ``(num_classes, D)``; PML keeps its columns at unit L2 norm. The forward pass
        uses :math:`\hat w_c = w_c/\lVert w_c\rVert` with a straight-through gradient (the
        gradient PML computes with respect to its renormalised weights). PML renormalises
        the stored weights in place every call; a pure function cannot, so to train as PML
        does, project the rows back to unit norm after each update
        (``w = jaxmetric.distances.l2_normalize(w)``). :func:`init_class_weights`
        ``kind="p2sgrad"`` draws U(-1, 1) rows normalised to unit length, as PML.
      mask, sample_weights, weight_regularizer: beyond PML, which rejects an
        ``indices_tuple`` and has no weight regularizer for this loss.

    PML: ``P2SGradLoss(descriptors_dim, num_classes)``, no distance, already reduced (mean).

    Shared keywords (``mask``, ``sample_weights``, ``where``, ``weight_regularizer``,
    ``weight_reg_weight``, ``axis_name``, ``block_size``): :mod:`jaxmetric.losses.classifier`.
    """
    fn = "p2sgrad_loss"
    red = _common(fn, reduction, weight_regularizer)
    x = cm.prepare(fn, embeddings, labels, weights, where=where, mask=mask, sample_weights=sample_weights, axis_name=axis_name)

    # a squared error, not a cross-entropy, over its own (straight-through) cosines
    def per_sample(e, y):
        cos = _p2s_cosine(e, x.weights)
        onehot = jax.nn.one_hot(y, x.num_classes, dtype=x.dtype)
        return jnp.mean((cos - onehot) ** 2, axis=1)

    return _loss_from_samples(
        fn, red, x, per_sample, weight_regularizer=weight_regularizer, weight_reg_weight=weight_reg_weight, block_size=block_size
    )
