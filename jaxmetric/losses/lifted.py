"""Lifted-structure losses: a smooth maximum (log-sum-exp) over the negatives of a pair or
an anchor, compared with the positive distance.

Both take class ids, multi-hot labels (positive = shares a label), a
:class:`~jaxmetric.PairMask` or a :class:`~jaxmetric.TripletMask` (converted to pairs as
PML's ``convert_to_pairs``). Names, hyperparameters and defaults are PML 2.9's. Memory is
``O(B R)``: neither loss builds a cube.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from jaxmetric._src import collectives, pairs as _pairs
from jaxmetric import reduce
from jaxmetric._src.engine import evaluate, map_row_blocks
from jaxmetric._src.front_door import front_door
from jaxmetric._src.numerics import clip_weights, finish, has_any, masked_logsumexp
from jaxmetric.distances import LpDistance
from jaxmetric._src.validate import check_distance

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, AxisName, LabelsOrMask, ReductionLike, Scalar
    from jaxmetric.distances import BaseDistance


@front_door
def lifted_structure_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, neg_margin: Scalar = 1.0, pos_margin: Scalar = 0.0,
    distance: BaseDistance = LpDistance(), reduction: ReductionLike = "mean", ref_emb: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None, where: ArrayLike | None = None, ref_where: ArrayLike | None = None,
    axis_name: AxisName | None = None, block_size: int | None = None,
) -> Array:
    r"""Lifted structured loss (Oh Song, Xiang, Jegelka & Savarese, CVPR 2016), per positive
    pair :math:`(a, p)`:

    .. math::
        \ell_{ap} = \tfrac12\Big[\log\!\!\sum_{(i,n)\in N_a\cup N_p}\!\! e^{m_{neg} - d_{in}}
        + (d_{ap} - m_{pos})\Big]_+^2

    where :math:`N_a` are the negative pairs whose anchor is ``a`` (sides of the margins swap
    for similarities). The log-sum-exp over the union factors into one per row, so memory is
    ``O(B R)`` (``O(B D + block_size R)`` with ``block_size``). Pair multiplicities count, as
    PML's index lists do (a negative pair listed twice enters the sum twice). As in PML, the
    loss is 0 when there is no negative pair at all.

    PML: ``LiftedStructureLoss(neg_margin=1, pos_margin=0)``, ``LpDistance()``,
    ``MeanReducer`` over positive pairs. Deliberate differences: with ``ref_emb``, PML also
    adds the negative pairs whose *query* index equals the positive's *reference* index (an
    index from another set); jaxmetric uses the anchor's negatives only there. PML returns 0
    when every index list has at most one entry; jaxmetric computes the loss.

    Without ``ref_emb`` the term of a positive's own row (:math:`N_p`) is gathered over
    ``axis_name`` too, and with ``block_size`` it comes from a first pass over the blocks (the
    similarities are computed twice).

    Returns:
      Scalar loss (``"none"``: the ``[B, R]`` per-positive-pair losses).

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``, ``ref_emb``,
    ``ref_labels``, ``where``, ``ref_where``, ``axis_name``, ``block_size``): :ref:`shared-arguments`.
    """
    fn = "lifted_structure_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn)
    b = _pairs.from_inputs(fn, embeddings, labels_or_mask, ref_emb=ref_emb, ref_labels=ref_labels, where=where, ref_where=ref_where, axis_name=axis_name)

    def row_negatives(mat, neg):  # per row: log-sum-exp over its negatives (0 without any), and whether it has any
        return masked_logsumexp(distance.margin(neg_margin, mat), neg), has_any(neg, axis=1)

    # Without ref_emb a positive p has negatives of its own, N_p: the pairs (p, n), row p of the
    # batch (of every device). A block of anchors does not hold row p, so with blocks every
    # row's term comes from a first pass over the blocks.
    first_pass = None
    if ref_emb is None and block_size is not None:
        first_pass = map_row_blocks(
            lambda e, i: row_negatives(distance(e, b.ref), b.block_masks(i)[1]), (b.emb, jnp.arange(b.emb.shape[0])),
            block_size, fn=fn,
        )

    def elements(mat, pos, neg, aw):
        lse_a, has_a = row_negatives(mat, neg)
        neg_term = lse_a[:, None]
        if ref_emb is None:
            lse_p, has_p = (lse_a, has_a) if first_pass is None else first_pass
            lse_p, has_p = collectives.gather(lse_p, axis_name), collectives.gather(has_p, axis_name)
            x = jnp.stack(jnp.broadcast_arrays(lse_a[:, None], lse_p[None, :]), axis=-1)
            w = jnp.stack(jnp.broadcast_arrays(has_a[:, None], has_p[None, :]), axis=-1).astype(mat.dtype)
            neg_term = masked_logsumexp(x, w)  # 0 when neither has negatives (PML's empty row)
        losses = 0.5 * jax.nn.relu(neg_term + distance.margin(mat, pos_margin)) ** 2
        return [(losses, pos)], [neg]  # PML: no negative pair -> zero loss

    return finish(evaluate(b, distance, red, elements, block_size=block_size, fn=fn), b.dtype)


@front_door
def generalized_lifted_structure_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, neg_margin: Scalar = 1.0, pos_margin: Scalar = 0.0,
    distance: BaseDistance = LpDistance(), reduction: ReductionLike = "mean", ref_emb: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None, where: ArrayLike | None = None, ref_where: ArrayLike | None = None,
    axis_name: AxisName | None = None, block_size: int | None = None,
) -> Array:
    r"""Generalized lifted structure loss (Hermans, Beyer & Leibe, "In Defense of the Triplet
    Loss", arXiv 2017, eq. 4), per anchor :math:`i`:

    .. math::
        \ell_i = \Big[\log\sum_{p\in P_i} e^{d_{ip} - m_{pos}}
        + \log\sum_{n\in N_i} e^{m_{neg} - d_{in}}\Big]_+

    (sides swap for similarities); an empty side contributes 0. The pairs are a set (a pair
    listed twice counts once; fractional weights :math:`w` enter as :math:`\log\sum w e^x`).

    PML: ``GeneralizedLiftedStructureLoss(neg_margin=1, pos_margin=0)``, ``LpDistance()``,
    ``MeanReducer`` over all anchors (anchors without pairs count as 0). Deliberate
    difference: PML returns 0 when every index list has at most one entry.

    Returns:
      Scalar loss (``"none"``: the ``[B]`` per-anchor losses).

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``, ``ref_emb``,
    ``ref_labels``, ``where``, ``ref_where``, ``axis_name``, ``block_size``): :ref:`shared-arguments`.
    """
    fn = "generalized_lifted_structure_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn)
    b = _pairs.from_inputs(fn, embeddings, labels_or_mask, ref_emb=ref_emb, ref_labels=ref_labels, where=where, ref_where=ref_where, axis_name=axis_name)

    def elements(mat, pos, neg, aw):
        pos_lse = masked_logsumexp(distance.margin(mat, pos_margin), clip_weights(pos))
        neg_lse = masked_logsumexp(distance.margin(neg_margin, mat), clip_weights(neg))
        return [(jax.nn.relu(pos_lse + neg_lse), aw)], None

    return finish(evaluate(b, distance, red, elements, block_size=block_size, fn=fn), b.dtype)
