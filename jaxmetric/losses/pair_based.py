"""Pair-based losses: every term is a function of anchor-to-reference similarities, each
positive and negative pair weighted (multi-similarity, circle) or hinged separately (intra-pair
variance, threshold-consistent margin).

All take ``(embeddings, labels_or_mask)`` where ``labels_or_mask`` is class ids ``[B]``,
multi-hot ``[B, C]`` (positive = shares a label), a :class:`~jaxmetric.PairMask` or a
:class:`~jaxmetric.TripletMask` (converted to pairs as PML's ``convert_to_pairs``); pair
multiplicities count, as PML's index lists do. Names, hyperparameters and defaults are PML 2.9's.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from jaxmetric._src import collectives, pairs as _pairs
from jaxmetric import reduce
from jaxmetric._src.front_door import front_door
from jaxmetric._src.validate import check_distance, check_positive
from jaxmetric._src.numerics import clip_weights, finish, has_any, masked_logsumexp
from jaxmetric.distances import CosineSimilarity
from jaxmetric._src.engine import evaluate

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, AxisName, LabelsOrMask, ReductionLike, Scalar
    from jaxmetric.distances import BaseDistance


@front_door
def multi_similarity_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, alpha: Scalar = 2.0, beta: Scalar = 50.0,
    base: Scalar = 0.5, distance: BaseDistance = CosineSimilarity(), reduction: ReductionLike = "mean",
    ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None, where: ArrayLike | None = None,
    ref_where: ArrayLike | None = None, axis_name: AxisName | None = None, block_size: int | None = None,
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


@front_door
def circle_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, m: Scalar = 0.4, gamma: Scalar = 80.0,
    distance: BaseDistance = CosineSimilarity(), reduction: ReductionLike = "avg_nonzero",
    ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None, where: ArrayLike | None = None,
    ref_where: ArrayLike | None = None, axis_name: AxisName | None = None, block_size: int | None = None,
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


@front_door
def intra_pair_variance_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, pos_eps: Scalar = 0.01, neg_eps: Scalar = 0.01,
    distance: BaseDistance = CosineSimilarity(), reduction: ReductionLike = "mean", ref_emb: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None, where: ArrayLike | None = None, ref_where: ArrayLike | None = None,
    axis_name: AxisName | None = None,
) -> Array:
    r"""Intra-pair variance loss (Yu & Tao, "Deep Metric Learning with Tuplet Margin Loss",
    ICCV 2019, eq. 6). With :math:`\mu^+`, :math:`\mu^-` the means of the positive and negative
    pair similarities over the whole batch (gradients flow through them):

    .. math::
        L_{pos} = [(1-\epsilon^+)\mu^+ - s_{ap}]_+^2 ,\qquad L_{neg} = [s_{an} - (1+\epsilon^-)\mu^-]_+^2

    each reduced with ``reduction`` and summed. For distances the directions flip:
    :math:`[d_{ap} - (1+\epsilon^+)\mu^+]_+^2` and :math:`[(1-\epsilon^-)\mu^- - d_{an}]_+^2`.

    PML: ``IntraPairVarianceLoss(pos_eps=0.01, neg_eps=0.01)``, ``CosineSimilarity``,
    ``MeanReducer`` per sub-loss. Deliberate difference: PML returns 0 when every index list
    has at most one entry; jaxmetric computes the loss.

    With ``axis_name``, :math:`\mu^+` and :math:`\mu^-` are global means (``psum`` of the sums
    and counts).

    Returns:
      Scalar loss (``"none"``: the ``[B, R]`` per-pair losses).

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``, ``ref_emb``,
    ``ref_labels``, ``where``, ``ref_where``, ``axis_name``): :ref:`shared-arguments`.
    """
    fn = "intra_pair_variance_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn)
    b = _pairs.from_inputs(fn, embeddings, labels_or_mask, ref_emb=ref_emb, ref_labels=ref_labels, where=where, ref_where=ref_where, axis_name=axis_name)

    def elements(mat, pos, neg, aw):  # the whole [B, R] matrix: the means are the batch's
        def mean_over(w):  # over the global batch with axis_name: psum of sums and counts
            num = collectives.psum(jnp.sum(jnp.where(w > 0, w * mat, 0.0)), axis_name)
            den = collectives.psum(jax.lax.stop_gradient(jnp.sum(w)), axis_name)
            return reduce.safe_divide(num, den)

        mu_pos, mu_neg = mean_over(pos), mean_over(neg)
        if distance.is_inverted:
            pos_var = (1.0 - pos_eps) * mu_pos - mat
            neg_var = mat - (1.0 + neg_eps) * mu_neg
        else:
            pos_var = mat - (1.0 + pos_eps) * mu_pos
            neg_var = (1.0 - neg_eps) * mu_neg - mat
        return [(jax.nn.relu(pos_var) ** 2, pos), (jax.nn.relu(neg_var) ** 2, neg)], None

    return finish(evaluate(b, distance, red, elements, fn=fn), b.dtype)


@front_door
def threshold_consistent_margin_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, lambda_plus: Scalar = 1.0, lambda_minus: Scalar = 1.0,
    margin_plus: Scalar = 0.9, margin_minus: Scalar = 0.5, distance: BaseDistance = CosineSimilarity(),
    reduction: ReductionLike = "mean", ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None,
    where: ArrayLike | None = None, ref_where: ArrayLike | None = None, axis_name: AxisName | None = None,
    block_size: int | None = None,
) -> Array:
    r"""Threshold-consistent margin loss (Zhang, Wu, Wang, Xiong, Li & Wang, "Threshold-
    Consistent Margin Loss for Open-World Deep Metric Learning", arXiv 2307.04047, 2023):

    .. math::
        \lambda^+ \operatorname*{mean}_{(a,p):\, s_{ap}\le m^+} (m^+ - s_{ap})
        + \lambda^- \operatorname*{mean}_{(a,n):\, s_{an}\ge m^-} (s_{an} - m^-)

    with cosine similarities :math:`s`; an empty side gives 0. ``reduction`` reduces each
    side over its selected pairs (the default ``"mean"`` is the formula above; ``"sum"`` sums).
    Meant as a regulariser added to another loss.

    PML: ``ThresholdConsistentMarginLoss(lambda_plus=1.0, lambda_minus=1.0, margin_plus=0.9,
    margin_minus=0.5)``, ``CosineSimilarity`` (asserted), already reduced (PML's reducer has no
    effect). Deliberate difference: with ``ref_emb`` PML reads the positives and negatives from
    ``embeddings`` at the reference indices (ignoring ``ref_emb``); jaxmetric reads them from
    ``ref_emb``. Both agree without ``ref_emb``.

    Both means are over the global batch's selected pairs with ``axis_name``.

    Returns:
      Scalar loss (``"none"``: the ``[B, R]`` per-pair terms, times the lambdas).

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``, ``ref_emb``,
    ``ref_labels``, ``where``, ``ref_where``, ``axis_name``, ``block_size``): :ref:`shared-arguments`.
    """
    fn = "threshold_consistent_margin_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn, kind=CosineSimilarity)
    b = _pairs.from_inputs(fn, embeddings, labels_or_mask, ref_emb=ref_emb, ref_labels=ref_labels, where=where, ref_where=ref_where, axis_name=axis_name)

    def elements(s, pos, neg, aw):
        pos_w = jnp.where(s <= margin_plus, pos, 0.0)
        neg_w = jnp.where(s >= margin_minus, neg, 0.0)
        return [(lambda_plus * (margin_plus - s), pos_w), (lambda_minus * (s - margin_minus), neg_w)], None

    return finish(evaluate(b, distance, red, elements, block_size=block_size, fn=fn), b.dtype)
