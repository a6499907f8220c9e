"""Pair-based losses: every term is a function of anchor-to-reference similarities.

All take ``(embeddings, labels_or_mask)`` where ``labels_or_mask`` is class ids ``[B]``,
multi-hot ``[B, C]`` (positive = shares a label), a :class:`~jaxmetric.PairMask` or a
:class:`~jaxmetric.TripletMask` (converted to pairs as PML's ``convert_to_pairs``). Names,
hyperparameters and defaults are PML 2.9's.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from jaxmetric import _pairs, _public, reduce
from jaxmetric._ops import clip_weights, finish, has_any, masked_logsumexp
from jaxmetric.distances import CosineSimilarity, LpDistance
from jaxmetric.losses._rows import evaluate
from jaxmetric._checks import check_distance, check_positive

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, AxisName, LabelsOrMask, ReductionLike, Scalar
    from jaxmetric.distances import BaseDistance

@_public.front_door
def contrastive_loss(
    embeddings: ArrayLike,
    labels_or_mask: LabelsOrMask,
    *,
    pos_margin: Scalar = 0.0,
    neg_margin: Scalar = 1.0,
    distance: BaseDistance = LpDistance(),
    reduction: ReductionLike = "avg_nonzero",
    ref_emb: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None,
    where: ArrayLike | None = None,
    ref_where: ArrayLike | None = None,
    axis_name: AxisName | None = None,
    block_size: int | None = None,
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

    def elements(mat, pos, neg, aw):
        pos_losses = jax.nn.relu(distance.margin(mat, pos_margin))
        neg_losses = jax.nn.relu(distance.margin(neg_margin, mat))
        return [(pos_losses, pos), (neg_losses, neg)], None

    return finish(evaluate(b, distance, red, elements, block_size=block_size, fn=fn), b.dtype)


@_public.front_door
def multi_similarity_loss(
    embeddings: ArrayLike,
    labels_or_mask: LabelsOrMask,
    *,
    alpha: Scalar = 2.0,
    beta: Scalar = 50.0,
    base: Scalar = 0.5,
    distance: BaseDistance = CosineSimilarity(),
    reduction: ReductionLike = "mean",
    ref_emb: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None,
    where: ArrayLike | None = None,
    ref_where: ArrayLike | None = None,
    axis_name: AxisName | None = None,
    block_size: int | None = None,
) -> Array:
    r"""Multi-similarity loss (Wang et al., CVPR 2019), per anchor :math:`i`:

    .. math::
        \frac{1}{\alpha}\log\Big(1+\sum_{p\in P_i} e^{-\alpha(s_{ip}-\lambda)}\Big)
        + \frac{1}{\beta}\log\Big(1+\sum_{n\in N_i} e^{\beta(s_{in}-\lambda)}\Big)

    with :math:`\lambda` = ``base``. Fractional pair weights :math:`w` enter as
    :math:`\log\sum w e^{x}`.

    PML: ``MultiSimilarityLoss(alpha=2, beta=50, base=0.5)``, ``CosineSimilarity``,
    ``MeanReducer`` over all anchors (anchors without pairs count as 0).

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``, ``ref_emb``,
    ``ref_labels``, ``where``, ``ref_where``, ``axis_name``, ``block_size``): :ref:`shared-arguments`.
    """
    fn = "multi_similarity_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn)
    check_positive(alpha, "alpha", fn)
    check_positive(beta, "beta", fn)
    b = _pairs.from_inputs(fn, embeddings, labels_or_mask, ref_emb=ref_emb, ref_labels=ref_labels, where=where, ref_where=ref_where, axis_name=axis_name)

    def elements(mat, pos, neg, aw):
        pos_loss = masked_logsumexp(alpha * distance.margin(mat, base), clip_weights(pos), add_one=True) / alpha
        neg_loss = masked_logsumexp(beta * distance.margin(base, mat), clip_weights(neg), add_one=True) / beta
        return [(pos_loss + neg_loss, aw)], None

    return finish(evaluate(b, distance, red, elements, block_size=block_size, fn=fn), b.dtype)


@_public.front_door
def circle_loss(
    embeddings: ArrayLike,
    labels_or_mask: LabelsOrMask,
    *,
    m: Scalar = 0.4,
    gamma: Scalar = 80.0,
    distance: BaseDistance = CosineSimilarity(),
    reduction: ReductionLike = "avg_nonzero",
    ref_emb: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None,
    where: ArrayLike | None = None,
    ref_where: ArrayLike | None = None,
    axis_name: AxisName | None = None,
    block_size: int | None = None,
) -> Array:
    r"""Circle loss (Sun et al., CVPR 2020), per anchor :math:`i`:

    .. math::
        \operatorname{softplus}\Big(\log\sum_{p} e^{-\gamma\,[1+m-s_{ip}]_+\,(s_{ip}-1+m)}
        + \log\sum_{n} e^{\gamma\,[s_{in}+m]_+\,(s_{in}-m)}\Big)

    The :math:`[\cdot]_+` weights are constants (``stop_gradient``), as in the paper and PML.
    Anchors with no positive or no negative give 0.

    PML: ``CircleLoss(m=0.4, gamma=80)``, ``CosineSimilarity`` (required),
    ``AvgNonZeroReducer``.

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``, ``ref_emb``,
    ``ref_labels``, ``where``, ``ref_where``, ``axis_name``, ``block_size``): :ref:`shared-arguments`.
    """
    fn = "circle_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn, inverted=True)
    check_positive(gamma, "gamma", fn)
    b = _pairs.from_inputs(fn, embeddings, labels_or_mask, ref_emb=ref_emb, ref_labels=ref_labels, where=where, ref_where=ref_where, axis_name=axis_name, contrast=True)

    def elements(mat, pos, neg, aw):
        const = jax.lax.stop_gradient(mat)
        logit_p = -gamma * jax.nn.relu(1.0 + m - const) * (mat - (1.0 - m))
        logit_n = gamma * jax.nn.relu(const + m) * (mat - m)
        pos_w, neg_w = clip_weights(pos), clip_weights(neg)
        lse = masked_logsumexp(logit_p, pos_w) + masked_logsumexp(logit_n, neg_w)
        row_ok = has_any(pos_w, axis=1) & has_any(neg_w, axis=1)
        return [(jnp.where(row_ok, jax.nn.softplus(lse), 0.0), aw)], None

    return finish(evaluate(b, distance, red, elements, block_size=block_size, fn=fn), b.dtype)


@_public.front_door
def ntxent_loss(
    embeddings: ArrayLike,
    labels_or_mask: LabelsOrMask,
    *,
    temperature: Scalar = 0.07,
    distance: BaseDistance = CosineSimilarity(),
    reduction: ReductionLike = "mean",
    ref_emb: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None,
    where: ArrayLike | None = None,
    ref_where: ArrayLike | None = None,
    axis_name: AxisName | None = None,
    block_size: int | None = None,
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
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn)
    check_positive(temperature, "temperature", fn)
    b = _pairs.from_inputs(fn, embeddings, labels_or_mask, ref_emb=ref_emb, ref_labels=ref_labels, where=where, ref_where=ref_where, axis_name=axis_name, contrast=True)

    def elements(mat, pos, neg, aw):
        logits = (mat if distance.is_inverted else -mat) / temperature
        neg_lse = masked_logsumexp(logits, neg)[:, None]
        has_neg = has_any(neg, axis=1)[:, None]
        return [(jnp.where(has_neg, jax.nn.softplus(neg_lse - logits), 0.0), pos)], None

    return finish(evaluate(b, distance, red, elements, block_size=block_size, fn=fn), b.dtype)


@_public.front_door
def supcon_loss(
    embeddings: ArrayLike,
    labels_or_mask: LabelsOrMask,
    *,
    temperature: Scalar = 0.1,
    distance: BaseDistance = CosineSimilarity(),
    reduction: ReductionLike = "avg_nonzero",
    ref_emb: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None,
    where: ArrayLike | None = None,
    ref_where: ArrayLike | None = None,
    axis_name: AxisName | None = None,
    block_size: int | None = None,
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
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn)
    check_positive(temperature, "temperature", fn)
    b = _pairs.from_inputs(fn, embeddings, labels_or_mask, ref_emb=ref_emb, ref_labels=ref_labels, where=where, ref_where=ref_where, axis_name=axis_name, contrast=True)

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
