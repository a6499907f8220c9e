"""Softmax-over-the-batch losses: N-pairs, NCA and instance loss.

Each is a cross-entropy whose "classes" are other samples of the batch, so each needs labels
in its formula (N-pairs: one pair per class; NCA: the same-class samples; instance: the
class's rank). Names, hyperparameters and defaults are PML 2.9's. Memory ``O(B R)``;
``block_size`` (NCA, instance) bounds it by ``O(B D + block_size R)``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from jaxmetric._src import collectives, pairs as _pairs
from jaxmetric import reduce
from jaxmetric._src.engine import evaluate, map_row_blocks
from jaxmetric._src.front_door import front_door
from jaxmetric._src.numerics import finish, has_any, masked_logsumexp
from jaxmetric.distances import CosineSimilarity, DotProductSimilarity, LpDistance
from jaxmetric._src.labels import reject_mask, relation, require_class_ids, resolve_labelled
from jaxmetric.masks import PairMask, TripletMask
from jaxmetric._src.validate import check_distance, check_positive, reject_ref

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, AxisName, LabelsOrMask, ReductionLike, Scalar
    from jaxmetric.distances import BaseDistance


@front_door
def npairs_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, labels: ArrayLike | None = None,
    distance: BaseDistance = DotProductSimilarity(), reduction: ReductionLike = "mean",
    ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None, where: ArrayLike | None = None,
    ref_where: ArrayLike | None = None, axis_name: AxisName | None = None,
) -> Array:
    r"""N-pair loss (Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss
    Objective", NeurIPS 2016). One positive pair :math:`(a_c, p_c)` is taken per class
    :math:`c`; with :math:`K` such pairs, per pair:

    .. math::
        \ell_c = -\log \frac{e^{s(a_c, p_c)}}{\sum_{c'} e^{s(a_c, p_{c'})}}

    The pair of a class is its first positive pair in row-major (anchor, positive) order
    among the selected pairs, as PML's ``np.unique`` on the anchors' labels picks it from
    ``get_all_pairs_indices`` or a ``TripletMarginMiner`` tuple (both list pairs in that
    order). A mask has no order, so where a PML miner lists an anchor's positives in another
    order (``MultiSimilarityMiner``: hardest first) PML may pick another positive of the
    same anchor. Distances are negated.

    Labels: class ids ``[B]`` in ``labels_or_mask``; or a :class:`~jaxmetric.PairMask` /
    :class:`~jaxmetric.TripletMask` selecting the candidate pairs with the class ids as
    ``labels=`` (required; multi-hot labels are rejected, a class is not defined there).

    PML: ``NPairsLoss()``, ``DotProductSimilarity()`` (normalising, so cosine), ``MeanReducer``
    over the chosen pairs; ``ref_emb`` is rejected (``ValueError``).

    ``axis_name``: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``, local rows are the
    anchors against the gathered global batch. The choice of one pair per class is global:
    each device gathers every row's "has a positive" flag, first positive and class id, so the
    chosen pairs (and the softmax over them) are exactly the single-device ones on the
    concatenated batch; every device returns that loss.

    Returns:
      Scalar loss (``"none"``: ``[B]``, the loss at each chosen anchor, 0 elsewhere).

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``,
    ``ref_emb``, ``ref_labels``, ``where``, ``ref_where``, ``axis_name``):
    :ref:`shared-arguments`.
    """
    fn = "npairs_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn)
    reject_ref(fn, ref_emb, ref_labels, ref_where)
    b, lab, _ = resolve_labelled(
        fn, embeddings, labels_or_mask, labels=labels, where=where,
        why=" (N-pairs picks one positive pair per class)", axis_name=axis_name,
    )
    require_class_ids(lab, fn, why=" (N-pairs picks one positive pair per class)")
    # The pairs are chosen over the (global) batch before the terms: every anchor's class,
    # whether it has a positive, and its first positive (a column of the global batch).
    r = b.ref.shape[0]
    has_pos = has_any(b.pos, axis=1)
    first_p = jnp.minimum(jnp.min(jnp.where(b.pos > 0, jnp.arange(r)[None, :], r), axis=1), r - 1)
    lab_all = collectives.gather(lab, axis_name)
    has_all = collectives.gather(has_pos, axis_name)
    first_all = collectives.gather(first_p, axis_name)
    idx_all = jnp.arange(lab_all.shape[0])
    # An anchor is chosen when no earlier anchor of its class has a positive pair.
    same_all = lab_all[:, None] == lab_all[None, :]
    blocked_all = jnp.any(same_all & has_all[None, :] & (idx_all[None, :] < idx_all[:, None]), axis=1)
    chosen_all = (has_all & ~blocked_all).astype(b.dtype)
    chosen = collectives.local_rows(chosen_all, b.emb.shape[0], axis_name)

    def elements(mat, pos, neg, aw, chosen, first_p):
        logits = mat if distance.is_inverted else -mat
        pair_logits = logits[:, first_all]  # [a, c]: s(anchor a, positive of the pair chosen at c)
        lse = masked_logsumexp(pair_logits, jnp.broadcast_to(chosen_all[None, :], pair_logits.shape))
        return [(lse - logits[jnp.arange(logits.shape[0]), first_p], chosen)], None

    value = evaluate(b, distance, red, elements, rows=(chosen, first_p), context_labels=lab, fn=fn)
    return finish(value, b.dtype)


def _mask_sample_weights(mask, b, same_set, axis_name=None):
    """PML's ``convert_to_weights``: how often each query row appears in the index tuple
    (anchors only with ``ref_emb``), over the largest count. With ``axis_name`` the column
    counts are summed over devices and the largest count is global."""
    n = b.emb.shape[0]

    def col_counts(c):  # [R_global] summed over every device's rows -> this device's rows
        return collectives.local_rows(collectives.psum(c, axis_name), n, axis_name)

    if isinstance(mask, TripletMask):
        cube = b.triplets
        count = jnp.sum(cube, axis=(1, 2))
        if same_set:
            count = count + col_counts(jnp.sum(cube, axis=(0, 2)) + jnp.sum(cube, axis=(0, 1)))
    else:
        count = jnp.sum(b.pos, axis=1) + jnp.sum(b.neg, axis=1)
        if same_set:
            count = count + col_counts(jnp.sum(b.pos, axis=0) + jnp.sum(b.neg, axis=0))
    count = jax.lax.stop_gradient(count)
    return reduce.safe_divide(count, collectives.pmax(jnp.max(count), axis_name))


@front_door
def nca_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, softmax_scale: Scalar = 1.0,
    labels: ArrayLike | None = None, distance: BaseDistance = LpDistance(power=2), reduction: ReductionLike = "mean",
    ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None, where: ArrayLike | None = None,
    ref_where: ArrayLike | None = None, axis_name: AxisName | None = None, block_size: int | None = None,
) -> Array:
    r"""Neighbourhood components analysis loss (Goldberger, Roweis, Hinton & Salakhutdinov,
    NeurIPS 2004), per query :math:`i`:

    .. math::
        \ell_i = -\log \sum_{j:\, y_j = y_i} \operatorname{softmax}_j(-\sigma\, d_{ij})
        = \log\sum_{j} e^{-\sigma d_{ij}} - \log\sum_{j:\, y_j = y_i} e^{-\sigma d_{ij}}

    with :math:`\sigma` = ``softmax_scale``; :math:`j` runs over the references (the batch
    without :math:`i` when there is no ``ref_emb``); similarities are not negated. Queries
    without a same-class reference are left out of the mean, as PML drops them. Multi-hot:
    same class = shares a label. Computed in log space (no underflow of the probability).

    Masks: as PML's ``indices_tuple`` for NCA, a :class:`~jaxmetric.PairMask` or
    :class:`~jaxmetric.TripletMask` only weights the queries, by how often each appears in it
    (as anchor, positive or negative; anchors only with ``ref_emb``) over the largest count.
    The classes still come from labels: pass them as ``labels=`` (and ``ref_labels=`` with
    ``ref_emb``); without them a ``ValueError`` is raised.

    PML: ``NCALoss(softmax_scale=1)``, ``LpDistance(power=2)`` (squared Euclidean on normalised
    embeddings), ``MeanReducer`` over the queries kept. Deliberate differences: an empty mask
    gives 0 (PML then weights every query by 1); PML returns 0 for a single query even with
    ``ref_emb``.

    ``axis_name``: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``, local queries against
    the gathered global references (mask weights use global counts and a global maximum);
    every device returns the loss of the concatenated global batch.

    Returns:
      Scalar loss (``"none"``: the ``[B]`` per-query losses).

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``, ``ref_emb``,
    ``ref_labels``, ``where``, ``ref_where``, ``axis_name``, ``block_size``): :ref:`shared-arguments`.
    """
    fn = "nca_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_positive(softmax_scale, "softmax_scale", fn)
    check_distance(distance, fn)
    is_mask = isinstance(labels_or_mask, (PairMask, TripletMask))
    b, lab, rlab = resolve_labelled(
        fn, embeddings, labels_or_mask, labels=labels, ref_emb=ref_emb, ref_labels=ref_labels,
        where=where, ref_where=ref_where, allow_triplets=True,
        why=" (NCA's positives are the same-class samples; a mask only weights the queries)",
        axis_name=axis_name,
    )
    # A mask only weights the queries (PML's convert_to_weights), by counts over the whole batch.
    weight = _mask_sample_weights(labels_or_mask, b, ref_emb is None, axis_name) if is_mask else None

    def elements(mat, pos, neg, aw, lab, self_cols, weight):
        logits = softmax_scale * (mat if distance.is_inverted else -mat)
        members = aw[:, None] * b.ref_weight[None, :]
        if self_cols is not None:  # the batch without the query itself
            members = members * _pairs._not_self(self_cols, mat.shape[1], members.dtype)
        pos = jnp.where(relation(lab, rlab, b.same_set), members, 0.0)  # same class, from the labels
        losses = masked_logsumexp(logits, members) - masked_logsumexp(logits, pos)
        if weight is not None:
            losses = losses * weight
        return [(losses, has_any(pos, axis=1).astype(b.dtype))], None

    value = evaluate(
        b, distance, red, elements, rows=(lab, b.self_cols, weight), block_size=block_size, context_labels=lab, fn=fn,
    )
    return finish(value, b.dtype)


@front_door
def instance_loss(
    embeddings: ArrayLike, labels: ArrayLike, *, gamma: Scalar = 64.0, distance: BaseDistance = CosineSimilarity(),
    reduction: ReductionLike = "mean", ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None,
    where: ArrayLike | None = None, ref_where: ArrayLike | None = None, axis_name: AxisName | None = None,
    block_size: int | None = None,
) -> Array:
    r"""Instance loss (Zheng, Zheng, Garrett, Yang, Xu & Shen, "Dual-Path Convolutional
    Image-Text Embeddings with Instance Loss", ACM TOMM 2020), as PML implements it: a
    cross-entropy over the batch's scaled cosine matrix,

    .. math::
        \ell_i = -\log \operatorname{softmax}_j(\gamma\, s_{ij})\big|_{j = t_i}

    where :math:`j` runs over the whole batch (including :math:`i`) and the target
    :math:`t_i` is the rank of :math:`y_i` among the batch's distinct labels (so batch
    column :math:`t_i` plays the class; faithful to the authors' code). With ``where``, ranks
    and columns count the real rows only, so a padded batch equals the unpadded one.

    Labels: class ids ``[B]`` only (multi-hot and masks raise; PML rejects ``indices_tuple``).

    PML: ``InstanceLoss(gamma=64)``, ``CosineSimilarity`` (asserted), ``MeanReducer``;
    ``ref_emb`` is rejected (``ValueError``).

    ``axis_name``: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``, the labels and real
    rows of the whole batch are gathered, so each local row's target (its class's rank among
    the global batch's labels) and its logits (over every column of the global batch) are the
    single-device ones on the concatenated batch; every device returns that loss.

    Returns:
      Scalar loss (``"none"``: the ``[B]`` per-sample losses).

    Shared arguments (``embeddings``, ``distance``, ``reduction``, ``where``, ``axis_name``,
    ``block_size``): :ref:`shared-arguments`.
    """
    fn = "instance_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_positive(gamma, "gamma", fn)
    check_distance(distance, fn, kind=CosineSimilarity)
    reject_ref(fn, ref_emb, ref_labels, ref_where)
    reject_mask(fn, labels, " (class ids [B]; PML's InstanceLoss rejects indices_tuple)")
    b = _pairs.from_inputs(fn, embeddings, labels, where=where, axis_name=axis_name)
    lab = require_class_ids(b.labels, fn, why=" (the target is the rank of the class)").astype(jnp.int32)
    lab_all = b.ref_labels.astype(jnp.int32)  # the global batch's labels (lab without axis_name)
    real = b.ref_weight > 0  # the global batch's real rows
    idx = jnp.arange(lab_all.shape[0])

    def seen_before(lab_j, j):  # a real row before row j has its class (with block_size, rows j in blocks: no [R, R])
        return jnp.any((lab_all[None, :] == lab_j[:, None]) & (idx[None, :] < j[:, None]) & real[None, :], axis=1)

    first = real & ~map_row_blocks(seen_before, (lab_all, idx), block_size, fn=fn)  # first real row of each class
    column = jnp.cumsum(real) - 1  # position of each real row among the real rows

    def elements(mat, pos, neg, aw, lab):
        logits = gamma * mat  # [blk, R]: local rows against the (global) batch
        rank = jnp.sum(first[None, :] & (lab_all[None, :] < lab[:, None]), axis=1)  # of the anchor's class
        target = real[None, :] & (column[None, :] == rank[:, None])
        cols = jnp.broadcast_to(real[None, :], logits.shape).astype(logits.dtype)
        losses = masked_logsumexp(logits, cols) - jnp.sum(jnp.where(target, logits, 0.0), axis=1)
        return [(losses, aw)], None

    value = evaluate(b, distance, red, elements, rows=(lab,), block_size=block_size, fn=fn)
    return finish(value, b.dtype)
