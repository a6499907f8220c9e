"""Contrastive losses: hinges on positive and negative pair distances (contrastive, SNR
contrastive), softmax over a row of similarities (NT-Xent, SupCon, multi-label SupCon) and the
decoupled two-view losses (DCL, DCLW).

The pair losses take ``(embeddings, labels_or_mask)`` where ``labels_or_mask`` is class ids
``[B]``, multi-hot ``[B, C]`` (positive = shares a label), a :class:`~jaxmetric.PairMask` or a
:class:`~jaxmetric.TripletMask` (converted to pairs as PML's ``convert_to_pairs``). Two-view
losses take ``(x, y)`` with ``x[i]`` and ``y[i]`` two views of sample ``i``; ``where`` (bool
``[B]``) marks real pairs so a padded final batch keeps its static shape. Names,
hyperparameters and defaults are PML 2.9's where PML has the loss.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from jaxmetric._src import collectives, pairs as _pairs, validate
from jaxmetric import reduce
from jaxmetric._src.front_door import front_door
from jaxmetric._src.validate import check_distance, check_positive
from jaxmetric._src.numerics import clip_weights, finish, has_any, masked_logsumexp
from jaxmetric.distances import CosineSimilarity, LpDistance, SNRDistance, l2_normalize
from jaxmetric._src.engine import evaluate

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, AxisName, LabelsOrMask, ReductionLike, Scalar
    from jaxmetric.distances import BaseDistance


@front_door
def contrastive_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, pos_margin: Scalar = 0.0, neg_margin: Scalar = 1.0,
    distance: BaseDistance = LpDistance(), reduction: ReductionLike = "avg_nonzero", ref_emb: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None, where: ArrayLike | None = None, ref_where: ArrayLike | None = None,
    axis_name: AxisName | None = None, block_size: int | None = None,
) -> Array:
    r"""Contrastive loss (Hadsell, Chopra & LeCun, CVPR 2006).

    .. math::
        L_{pos} = [d_{ap} - m_{pos}]_+ ,\qquad L_{neg} = [m_{neg} - d_{an}]_+

    (sides swap for similarities). Positive and negative pair losses are reduced separately
    with ``reduction`` and summed, as PML does.

    PML: ``ContrastiveLoss(pos_margin=0, neg_margin=1)``, distance ``LpDistance()``, reducer
    ``AvgNonZeroReducer``. Deliberate difference: PML returns 0 when the tuple has at most one
    positive and one negative pair; jaxmetric computes the loss for them.

    Returns:
      Scalar loss (``"none"``: the ``[B, R]`` per-pair losses).

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``, ``ref_emb``,
    ``ref_labels``, ``where``, ``ref_where``, ``axis_name``, ``block_size``): :ref:`shared-arguments`.
    """
    fn = "contrastive_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn)
    b = _pairs.from_inputs(fn, embeddings, labels_or_mask, ref_emb=ref_emb, ref_labels=ref_labels, where=where, ref_where=ref_where, axis_name=axis_name)

    return finish(evaluate(b, distance, red, _hinges(distance, pos_margin, neg_margin), block_size=block_size, fn=fn), b.dtype)


def _hinges(distance, pos_margin, neg_margin):
    """The contrastive terms: a hinge on every positive and every negative pair, reduced
    separately (PML's ``MultipleReducers``)."""

    def elements(mat, pos, neg, aw):
        pos_losses = jax.nn.relu(distance.margin(mat, pos_margin))
        neg_losses = jax.nn.relu(distance.margin(neg_margin, mat))
        return [(pos_losses, pos), (neg_losses, neg)], None

    return elements


@front_door
def snr_contrastive_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, pos_margin: Scalar = 0.0, neg_margin: Scalar = 1.0,
    distance: BaseDistance = SNRDistance(), reduction: ReductionLike = "avg_nonzero",
    ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None, where: ArrayLike | None = None,
    ref_where: ArrayLike | None = None, axis_name: AxisName | None = None,
) -> Array:
    r"""Signal-to-noise-ratio contrastive loss (Yuan, Chen, Yang, Mei & Yang, "Signal-to-Noise
    Ratio: A Robust Distance Metric for Deep Metric Learning", CVPR 2019): the contrastive loss
    with :math:`d = \mathrm{Var}(x_a - x_r)/\mathrm{Var}(x_a)`,

    .. math::
        L_{pos} = [d_{ap} - m_{pos}]_+ ,\qquad L_{neg} = [m_{neg} - d_{an}]_+

    each reduced with ``reduction`` and summed.

    PML: ``SignalToNoiseRatioContrastiveLoss(pos_margin=0, neg_margin=1)``, ``SNRDistance()``
    (asserted), ``AvgNonZeroReducer`` per sub-loss. Deliberate difference: PML returns 0 when
    every index list has at most one entry; jaxmetric computes the loss.

    Returns:
      Scalar loss (``"none"``: the ``[B, R]`` per-pair losses).

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``, ``ref_emb``,
    ``ref_labels``, ``where``, ``ref_where``, ``axis_name``): :ref:`shared-arguments`.
    """
    fn = "snr_contrastive_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn, kind=SNRDistance)
    b = _pairs.from_inputs(fn, embeddings, labels_or_mask, ref_emb=ref_emb, ref_labels=ref_labels, where=where, ref_where=ref_where, axis_name=axis_name)
    return finish(evaluate(b, distance, red, _hinges(distance, pos_margin, neg_margin), fn=fn), b.dtype)


@front_door
def ntxent_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, temperature: Scalar = 0.07,
    distance: BaseDistance = CosineSimilarity(), reduction: ReductionLike = "mean", ref_emb: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None, where: ArrayLike | None = None, ref_where: ArrayLike | None = None,
    axis_name: AxisName | None = None, block_size: int | None = None,
) -> Array:
    r"""NT-Xent / InfoNCE (Chen et al., SimCLR 2020; van den Oord et al., 2018), per
    positive pair :math:`(a, p)`:

    .. math::
        -\log \frac{e^{s_{ap}/\tau}}{e^{s_{ap}/\tau} + \sum_{n\in N_a} e^{s_{an}/\tau}}
        = \operatorname{softplus}\Big(\log\sum_{n\in N_a} e^{s_{an}/\tau} - s_{ap}/\tau\Big)

    Other positives of the anchor are not in the denominator (unlike :func:`supcon_loss`).
    Distances are negated. Pair multiplicities count in the mean and in the negative sum,
    as PML's index lists do.

    PML: ``NTXentLoss(temperature=0.07)``, ``CosineSimilarity``, ``MeanReducer`` over
    positive pairs. jaxmetric leaves out PML's ``+ finfo.tiny`` inside the log (it only
    matters when a pair's probability underflows, where PML's gradient is lost).

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``, ``ref_emb``,
    ``ref_labels``, ``where``, ``ref_where``, ``axis_name``, ``block_size``): :ref:`shared-arguments`.
    """
    fn = "ntxent_loss"
    red, b = _softmax_inputs(
        fn, embeddings, labels_or_mask, temperature, distance, reduction,
        ref_emb=ref_emb, ref_labels=ref_labels, where=where, ref_where=ref_where, axis_name=axis_name,
    )

    def elements(mat, pos, neg, aw):
        logits = (mat if distance.is_inverted else -mat) / temperature
        neg_lse = masked_logsumexp(logits, neg)[:, None]
        has_neg = has_any(neg, axis=1)[:, None]
        return [(jnp.where(has_neg, jax.nn.softplus(neg_lse - logits), 0.0), pos)], None

    return finish(evaluate(b, distance, red, elements, block_size=block_size, fn=fn), b.dtype)


def _softmax_inputs(fn, embeddings, labels_or_mask, temperature, distance, reduction, **inputs):
    """The checks and the pairs of a softmax over the references at ``temperature`` (NT-Xent,
    SupCon): the reduction, and the pairs with the self-pairs left out of the contrast."""
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn)
    check_positive(temperature, "temperature", fn)
    return red, _pairs.from_inputs(fn, embeddings, labels_or_mask, contrast=True, **inputs)


@front_door
def supcon_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, temperature: Scalar = 0.1,
    distance: BaseDistance = CosineSimilarity(), reduction: ReductionLike = "avg_nonzero",
    ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None, where: ArrayLike | None = None,
    ref_where: ArrayLike | None = None, axis_name: AxisName | None = None, block_size: int | None = None,
) -> Array:
    r"""Supervised contrastive loss (Khosla et al., NeurIPS 2020), per anchor :math:`i`:

    .. math::
        -\frac{1}{\sum_p w_{ip}} \sum_{p\in P_i} w_{ip}\Big[s_{ip}/\tau -
        \log\sum_{k\in P_i\cup N_i} e^{s_{ik}/\tau}\Big]

    Weighted positives (multi-label rules) weigh the average. Anchors without positives give
    0. As in PML, a batch with no positive pair or no negative pair at all gives 0.

    PML: ``SupConLoss(temperature=0.1)``, ``CosineSimilarity``, ``AvgNonZeroReducer``.

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``, ``ref_emb``,
    ``ref_labels``, ``where``, ``ref_where``, ``axis_name``, ``block_size``): :ref:`shared-arguments`.
    """
    fn = "supcon_loss"
    red, b = _softmax_inputs(
        fn, embeddings, labels_or_mask, temperature, distance, reduction,
        ref_emb=ref_emb, ref_labels=ref_labels, where=where, ref_where=ref_where, axis_name=axis_name,
    )

    def elements(mat, pos, neg, aw):
        logits = (mat if distance.is_inverted else -mat) / temperature
        pos_w = clip_weights(pos)
        members = ((pos > 0) | (neg > 0)).astype(logits.dtype)
        log_prob = logits - masked_logsumexp(logits, members)[:, None]
        weighted = jnp.sum(jnp.where(pos_w > 0, pos_w * log_prob, 0.0), axis=1)
        mean_log_prob = reduce.safe_divide(weighted, jnp.sum(pos_w, axis=1))
        # PML gives 0 for a batch with no positive pair or no negative pair at all.
        return [(-mean_log_prob, aw)], [pos, neg]

    return finish(evaluate(b, distance, red, elements, block_size=block_size, fn=fn), b.dtype)


def _jaccard(a, b, dtype):
    """Jaccard index of multi-hot rows ``a [B, C]`` and ``b [R, C]``; two empty sets give 1.
    Class ids ``[B]`` / ``[R]`` are one-hot rows: 1 for the same class, else 0."""
    if a.ndim == 1:
        return (a[:, None] == b[None, :]).astype(dtype)
    a = a.astype(dtype)
    b = b.astype(dtype)
    inter = a @ b.T
    union = jnp.sum(a, 1)[:, None] + jnp.sum(b, 1)[None, :] - inter
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 1.0)


@front_door
def multi_supcon_loss(
    embeddings: ArrayLike, labels: ArrayLike, *, temperature: Scalar = 0.1, threshold: Scalar = 0.5,
    distance: BaseDistance = CosineSimilarity(), reduction: ReductionLike = "avg_nonzero",
    ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None, where: ArrayLike | None = None,
    ref_where: ArrayLike | None = None, axis_name: AxisName | None = None, block_size: int | None = None,
) -> Array:
    r"""Multi-label supervised contrastive loss (MultiSupCon), per anchor :math:`i`:

    .. math::
        -\frac{1}{|N(i)|}\sum_{p\in N(i)} s_{ip}\Big[z_i\cdot z_p/\tau -
        \log\sum_{a\in A(i)} e^{z_i\cdot z_a/\tau}\Big],\qquad
        N(i) = \{p \in A(i) : s_{ip} \ge c\}

    where :math:`s_{ip} = |Y_i\cap Y_p| / |Y_i\cup Y_p|` is the Jaccard index of the label sets
    (two empty sets: 1), :math:`c` = ``threshold`` (inclusive), and :math:`A(i)` is every other
    (real) sample, or every reference with ``ref_emb``. Anchors with no positive give 0.

    After Zhang et al.'s multi-label SupCon and PML PR #667 / PML 3's ``MultiSupConLoss
    (temperature=0.1, threshold=0.5)`` with ``CosineSimilarity`` and ``AvgNonZeroReducer``.
    Unlike :func:`supcon_loss` (PML 2.9) there is no batch-level gate: an anchor with positives
    and no negatives still has a loss (its denominator holds its positives).

    Args:
      labels: multi-hot ``[B, C]`` (bool, int or float in {0, 1}), or class ids ``[B]``
        (taken as one-hot rows: the same class is a positive of Jaccard index 1, SupCon's
        positives).
      ref_labels: of the same kind, ``[R, C]`` or ``[R]``, with ``ref_emb``.

    Scale:
      axis_name: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``: this device's rows are the
        anchors, the references and their labels are gathered from every device (a sample is never
        its own positive); returns the single-device loss on the concatenated batch.
      block_size: anchors per block (memory ``O(B D + block_size R)``; see :ref:`shared-arguments`).
    """
    fn = "multi_supcon_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn)
    check_positive(temperature, "temperature", fn)
    if isinstance(threshold, (int, float)) and not 0 <= threshold <= 1:
        raise ValueError(f"{fn}: `threshold` must be in [0, 1]; got {threshold!r}")
    # Labels only (the Jaccard weights are read from them): a mask is refused here.
    batch = validate.check_embeddings(embeddings, "embeddings", fn=fn).shape[0]
    lab = validate.check_labels(labels, batch, "labels", fn=fn)
    b = _pairs.from_inputs(fn, embeddings, lab, ref_emb=ref_emb, ref_labels=ref_labels, where=where, ref_where=ref_where, axis_name=axis_name)

    def elements(mat, pos, neg, aw, labels, self_cols):
        logits = (mat if distance.is_inverted else -mat) / temperature
        valid = aw[:, None] * b.ref_weight[None, :]
        if self_cols is not None:  # no self-pairs (each anchor's own column, global with axis_name)
            valid = valid * (self_cols[:, None] != jnp.arange(b.ref.shape[0])[None, :]).astype(b.dtype)
        sim = _jaccard(labels, b.ref_labels, b.dtype)
        positive = (valid > 0) & (sim >= threshold)
        log_prob = logits - masked_logsumexp(logits, valid)[:, None]
        num = jnp.sum(jnp.where(positive, sim * log_prob, 0.0), axis=1)
        return [(-reduce.safe_divide(num, jnp.sum(positive.astype(b.dtype), axis=1)), aw)], None

    value = evaluate(b, distance, red, elements, rows=(b.labels, b.self_cols), block_size=block_size, fn=fn)
    return finish(value, b.dtype)


def _dcl(fn, x, y, temperature, sigma, reduction, where, axis_name=None):
    red = reduce.resolve(reduction, fn=fn)
    check_positive(temperature, "temperature", fn)
    if sigma is not None:
        check_positive(sigma, "sigma", fn)
    x, y, w, dtype, _ = _pairs.two_views(fn, x, y, ("x", "y"), where)
    n = x.shape[0]
    xn, yn = l2_normalize(x), l2_normalize(y)
    # Local rows (both views of this device's samples) against both views of the global batch.
    z = jnp.concatenate([xn, yn], axis=0)  # [2B, D]
    xg, yg, wg = collectives.gather(xn, axis_name), collectives.gather(yn, axis_name), collectives.gather(w, axis_name)
    ng = xg.shape[0]
    zg = jnp.concatenate([xg, yg], axis=0)  # [2N, D]
    logits = (z @ zg.T) / temperature
    rows = collectives.global_rows(n, axis_name)
    sample = jnp.concatenate([rows, rows])
    sample_g = jnp.arange(2 * ng) % ng
    w2 = jnp.concatenate([w, w])
    w2g = jnp.concatenate([wg, wg])
    neg = (sample[:, None] != sample_g[None, :]).astype(dtype) * w2[:, None] * w2g[None, :]
    pos_xy = jnp.sum(xn * yn, axis=1) / temperature  # <x_i, y_i> / tau, the positive of both views
    pos_logit = jnp.concatenate([pos_xy, pos_xy])
    if sigma is not None:
        s = jnp.sum(xn * yn, axis=1) / sigma
        # w_i = 2 - exp(s_i) / mean_k exp(s_k), the mean over the real rows of the global batch.
        s_max = jax.lax.stop_gradient(collectives.pmax(jnp.max(jnp.where(w > 0, s, -jnp.inf)), axis_name))
        s_max = jnp.where(jnp.isfinite(s_max), s_max, 0.0)
        e = jnp.where(w > 0, jnp.exp(s - s_max), 0.0)
        weight = 2.0 - e * reduce.safe_divide(collectives.psum(jnp.sum(w), axis_name), collectives.psum(jnp.sum(e), axis_name))
        pos_logit = pos_logit * jnp.concatenate([weight, weight])
    has_neg = jnp.any(neg > 0, axis=1)
    losses = jnp.where(has_neg & (w2 > 0), masked_logsumexp(logits, neg) - pos_logit, 0.0)
    return finish(reduce.apply(red, losses, w2, axis_name, context=reduce.Context(anchor_weight=w2)), dtype)


@front_door
def dcl_loss(x: ArrayLike, y: ArrayLike, *, temperature: Scalar = 0.1, reduction: ReductionLike = "mean", where: ArrayLike | None = None, axis_name: AxisName | None = None) -> Array:
    r"""Decoupled contrastive loss (Yeh et al., "Decoupled Contrastive Learning", ECCV 2022,
    eq. 6), for each view :math:`k` and sample :math:`i`:

    .. math::
        -\langle z_i^{(k)}, z_i^{(3-k)}\rangle/\tau + \log\sum_{l\in\{1,2\}}\sum_{j\ne i}
        e^{\langle z_i^{(k)}, z_j^{(l)}\rangle/\tau}

    on L2-normalised embeddings: the InfoNCE denominator without the positive. The ``[2B]``
    terms (``x`` rows first) are reduced with ``reduction`` (mean over both views). A batch of
    one sample has no negatives and gives 0.

    Scale:
      axis_name: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``: both views are gathered;
        each device computes the terms of both views of its own samples against both views of the
        global batch and the reduction sums the shares: the single-device loss on the concatenated
        batch (``"none"``: this device's ``[2 B_local]`` terms, ``x`` rows first).
    """
    return _dcl("dcl_loss", x, y, temperature, None, reduction, where, axis_name)


@front_door
def dclw_loss(x: ArrayLike, y: ArrayLike, *, temperature: Scalar = 0.1, sigma: Scalar = 0.5, reduction: ReductionLike = "mean", where: ArrayLike | None = None, axis_name: AxisName | None = None) -> Array:
    r"""Weighted decoupled contrastive loss (DCLW, Yeh et al., ECCV 2022, eq. 7): as
    :func:`dcl_loss` with the positive term scaled by the von Mises-Fisher weight

    .. math::
        w_i = 2 - \frac{e^{\langle z_i^{(1)}, z_i^{(2)}\rangle/\sigma}}
        {\frac1N\sum_k e^{\langle z_k^{(1)}, z_k^{(2)}\rangle/\sigma}}

    (``sigma=0.5``), shared by both views of sample :math:`i`. The weight is differentiated
    through (as in the lightly implementation; the paper does not say otherwise).

    Scale:
      axis_name: as :func:`dcl_loss`; the weights' normaliser (the mean of
        :math:`e^{\langle z^{(1)}_k, z^{(2)}_k\rangle/\sigma}`) runs over the global batch.
    """
    return _dcl("dclw_loss", x, y, temperature, sigma, reduction, where, axis_name)
