"""Softmax-over-the-batch losses: N-pairs, NCA and instance loss.

Each is a cross-entropy whose "classes" are other samples of the batch, so each needs labels
in its formula (N-pairs: one pair per class; NCA: the same-class samples; instance: the
class's rank). Names, hyperparameters and defaults are PML 2.9's. Memory ``O(B R)``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from jaxmetric._src import collectives, pairs as _pairs
from jaxmetric import reduce
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
    mat = distance(b.emb, b.ref)
    logits = mat if distance.is_inverted else -mat
    bsz, r = mat.shape
    rows = collectives.global_rows(bsz, axis_name)  # global index of each local anchor
    cols = jnp.arange(r)
    has_pos = has_any(b.pos, axis=1)
    first_p = jnp.min(jnp.where(b.pos > 0, cols[None, :], r), axis=1)
    first_p = jnp.minimum(first_p, r - 1)
    # Every anchor of the (global) batch: its class, whether it has a positive, its first positive.
    lab_all = collectives.gather(lab, axis_name)
    has_all = collectives.gather(has_pos, axis_name)
    first_all = collectives.gather(first_p, axis_name)
    idx_all = jnp.arange(lab_all.shape[0])
    # An anchor is chosen when no earlier anchor of its class has a positive pair.
    same = lab[:, None] == lab_all[None, :]
    blocked = jnp.any(same & has_all[None, :] & (idx_all[None, :] < rows[:, None]), axis=1)
    chosen = (has_pos & ~blocked).astype(b.dtype)
    same_all = lab_all[:, None] == lab_all[None, :]
    blocked_all = jnp.any(same_all & has_all[None, :] & (idx_all[None, :] < idx_all[:, None]), axis=1)
    chosen_all = (has_all & ~blocked_all).astype(b.dtype)
    pair_logits = logits[:, first_all]  # [a, c]: s(anchor a, positive of the pair chosen at c)
    lse = masked_logsumexp(pair_logits, jnp.broadcast_to(chosen_all[None, :], pair_logits.shape))
    losses = lse - logits[jnp.arange(bsz), first_p]
    return finish(reduce.apply(red, losses, chosen, axis_name), b.dtype)


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
    ref_where: ArrayLike | None = None, axis_name: AxisName | None = None,
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
    mat = distance(b.emb, b.ref)
    logits = softmax_scale * (mat if distance.is_inverted else -mat)
    members = b.anchor_weight[:, None] * b.ref_weight[None, :]
    if b.same_set:
        members = members * (1 - jnp.eye(mat.shape[0], dtype=members.dtype))
    elif b.self_cols is not None:
        members = members * _pairs._not_self(b.self_cols, mat.shape[1], members.dtype)
    pos = jnp.where(relation(lab, rlab, b.same_set), members, 0.0)
    losses = masked_logsumexp(logits, members) - masked_logsumexp(logits, pos)
    kept = has_any(pos, axis=1).astype(b.dtype)
    if is_mask:
        losses = losses * _mask_sample_weights(labels_or_mask, b, ref_emb is None, axis_name)
    return finish(reduce.apply(red, losses, kept, axis_name), b.dtype)


@front_door
def instance_loss(
    embeddings: ArrayLike, labels: ArrayLike, *, gamma: Scalar = 64.0, distance: BaseDistance = CosineSimilarity(),
    reduction: ReductionLike = "mean", ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None,
    where: ArrayLike | None = None, ref_where: ArrayLike | None = None, axis_name: AxisName | None = None,
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
    """
    fn = "instance_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_positive(gamma, "gamma", fn)
    check_distance(distance, fn, kind=CosineSimilarity)
    reject_ref(fn, ref_emb, ref_labels, ref_where)
    reject_mask(fn, labels, " (class ids [B]; PML's InstanceLoss rejects indices_tuple)")
    b = _pairs.from_inputs(fn, embeddings, labels, where=where, axis_name=axis_name)
    lab = require_class_ids(b.labels, fn, why=" (the target is the rank of the class)").astype(jnp.int32)
    logits = gamma * distance(b.emb, b.ref)  # [B, R]: local rows against the (global) batch
    lab_all = b.ref_labels.astype(jnp.int32)  # the global batch's labels (lab without axis_name)
    real = b.ref_weight > 0  # the global batch's real rows
    idx = jnp.arange(lab_all.shape[0])
    seen_before = jnp.any((lab_all[None, :] == lab_all[:, None]) & (idx[None, :] < idx[:, None]) & real[None, :], axis=1)
    first = real & ~seen_before  # first real occurrence of each class
    rank = jnp.sum(first[None, :] & (lab_all[None, :] < lab[:, None]), axis=1)
    column = jnp.cumsum(real) - 1  # position of each real row among the real rows
    target = real[None, :] & (column[None, :] == rank[:, None])
    cols = jnp.broadcast_to(real[None, :], logits.shape).astype(logits.dtype)
    losses = masked_logsumexp(logits, cols) - jnp.sum(jnp.where(target, logits, 0.0), axis=1)
    return finish(reduce.apply(red, losses, b.anchor_weight, axis_name), b.dtype)
