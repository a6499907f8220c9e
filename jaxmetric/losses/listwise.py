"""Listwise (ranking / average-precision) losses: FastAP, Smooth-AP and PNP.

Each query ranks the rest of the batch. ``labels_or_mask`` says which items are relevant to a
query: class ids ``[B]``, multi-hot ``[B, C]`` (relevant = shares a label), a
:class:`~jaxmetric.PairMask` (``pos`` = relevant, ``neg`` = irrelevant; other items are not
ranked) or a :class:`~jaxmetric.TripletMask` (converted to pairs). Like PML, none of these
losses supports a reference set (``ref_emb`` raises ``ValueError``).

Each is a loss per query: a query's term reads its own row of distances and pair weights
alone. They run on the engine (``_src/engine.evaluate``) ``block_size`` queries at a time, each
block rematerialised in the backward pass, so memory is ``O(block_size * (num_bins + 1) * B)``
for FastAP and ``O(block_size * B^2)`` for Smooth-AP and PNP (which compare every pair of items
for every query: ``O(B^3)`` work), and labels never become a ``[B, B]`` matrix. Smooth-AP and PNP
block by default: ``block_size=None`` is as many queries as keep one ``[block, B, B]``
comparison tensor near 4M elements (16 MB in float32; one block up to ``B = 2048``); FastAP by
default takes all queries at once. Blocks give the dense value and gradient, and since a
query's loss is one element, ``block_size`` takes every reduction (``"none"`` and plain
callables too).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from jaxmetric._src import pairs as _pairs, validate
from jaxmetric import reduce
from jaxmetric._src.engine import evaluate
from jaxmetric._src.front_door import front_door
from jaxmetric._src.numerics import clip_weights, finish, mask_sample_weights
from jaxmetric.distances import CosineSimilarity, LpDistance
from jaxmetric._src.validate import check_block_size, check_distance, check_positive, check_static_int, reject_ref

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, AxisName, LabelsOrMask, ReductionLike, Scalar
    from jaxmetric.distances import BaseDistance
    from jaxmetric.masks import PairMask, TripletMask

# Elements of one [block, B, B] comparison tensor (float32: 16 MB): Smooth-AP's and PNP's
# default block of queries.
_RANK_BLOCK_ELEMENTS = 1 << 22

PNP_VARIANTS = ("Ds", "Dq", "Iu", "Ib", "O")


def _rank_block(block_size, b):
    """The queries per block: ``block_size``, or by default as many as keep a ``[block, R, R]``
    tensor near ``_RANK_BLOCK_ELEMENTS`` elements; None (no blocks) when one block holds them all."""
    r = b.ref.shape[0]
    if block_size is None:
        block_size = max(1, _RANK_BLOCK_ELEMENTS // max(r * r, 1))
    return None if block_size >= b.emb.shape[0] else block_size


def _rank_sums(sim, weights, temperature, sigmoid):
    """Soft counts of the items ranked above each item, per query.

    For every query ``q`` (a row of ``sim`` ``[blk, N]``), item ``i`` and weight set ``k``
    (``weights`` ``[k, blk, N]``):

        S[k, q, i] = sum_{j != i} weights[k, q, j] * sigmoid((sim[q, j] - sim[q, i]) / temperature)
    """
    n = sim.shape[1]
    d = (sim[:, None, :] - sim[:, :, None]) / temperature  # [q, i, j] = s_qj - s_qi
    g = sigmoid(d) * (1.0 - jnp.eye(n, dtype=sim.dtype))
    return jnp.moveaxis(jnp.einsum("qij,qkj->qki", g, jnp.moveaxis(weights, 0, 1)), 1, 0)


def _self_matrix(self_cols, num_refs, dtype):
    """``[blk, R]``: 1 at each query's own column (the identity on one device; the query's
    global column with ``axis_name``)."""
    return (self_cols[:, None] == jnp.arange(num_refs)[None, :]).astype(dtype)


def _pnp_sigmoid(x):
    """PML's PNP sigmoid: ``1 / (1 + exp(clamp(-x, -50, 50)))`` (the clamp also stops the
    gradient outside the range, as in PML)."""
    return 1.0 / (1.0 + jnp.exp(jnp.clip(-x, -50.0, 50.0)))


@front_door
def fast_ap_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, num_bins: int = 10,
    distance: BaseDistance = LpDistance(power=2), reduction: ReductionLike = "mean", ref_emb: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None, where: ArrayLike | None = None, ref_where: ArrayLike | None = None,
    miner_output: PairMask | TripletMask | None = None, axis_name: AxisName | None = None, block_size: int | None = None,
) -> Array:
    r"""FastAP (Cakir, He, Xia, Kulis & Sclaroff, "Deep Metric Learning to Rank", CVPR 2019).

    Distances are binned into soft histograms over ``num_bins + 1`` nodes
    :math:`c_k = k\Delta` on :math:`[0, 2^{p}]` (:math:`p` = ``distance.power``,
    :math:`\Delta = 2^{p}/\text{num\_bins}`) with triangular kernels
    :math:`\delta_k(d) = [1 - |d - c_k|/\Delta]_+`. Per query :math:`q` with
    :math:`N^+_q \ge 1` relevant items:

    .. math::
        h^{\pm}_{qk} = \sum_{j \in P_q / N_q} \delta_k(d_{qj}),\quad
        H^+_{qk} = \sum_{k' \le k} h^+_{qk'},\quad H_{qk} = \sum_{k' \le k} (h^+_{qk'} + h^-_{qk'})

    .. math::
        \ell_q = \Big(1 - \frac{1}{N^+_q}\sum_{k:\,h^+_{qk}H^+_{qk} > 0} \frac{h^+_{qk} H^+_{qk}}{H_{qk}}\Big)\, w_q

    reduced over the queries with a relevant item. :math:`w_q` are the per-sample weights
    from ``miner_output`` (1 without).

    PML: ``FastAPLoss(num_bins=10)``, ``LpDistance(power=2)`` (normalised, ``p=2`` required),
    ``MeanReducer``; ``loss(emb, labels, indices_tuple)`` turns the tuple into per-sample
    weights, which here is ``miner_output`` (a PairMask or TripletMask; weights
    ``count / max count``, as PML's ``convert_to_weights``). ``ref_emb`` is not supported.

    Args:
      miner_output: optional :class:`~jaxmetric.PairMask` / :class:`~jaxmetric.TripletMask`
        (a miner's output) converted to per-sample weights; ``labels_or_mask`` still defines
        the relevant items.

    Returns:
      Scalar loss (``"none"``: the ``[B]`` per-query losses, 0 for queries without a
      relevant item).

    Scale:
      axis_name: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``: this device's rows are the
        queries and the items they rank are gathered from every device; returns the single-device loss
        on the concatenated batch (gradients exact after ``pmean``). A mask or ``miner_output`` is then
        ``[B_local, B_global]`` (rows: this device's queries).

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``, ``where``,
    ``axis_name``, ``block_size``): :ref:`shared-arguments`; ``block_size`` takes any reduction here.
    """
    fn = "fast_ap_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn, kind=LpDistance)
    if not distance.normalize_embeddings or distance.p != 2:
        raise ValueError(f"{fn}: `distance` must be LpDistance with normalize_embeddings=True and p=2 (as PML asserts); got {distance!r}")
    num_bins = check_static_int(num_bins, "num_bins", fn)
    block_size = check_block_size(block_size, fn)
    reject_ref(fn, ref_emb, ref_labels, ref_where)
    b = _pairs.from_inputs(fn, embeddings, labels_or_mask, where=where, axis_name=axis_name, contrast=True)
    mw = mask_sample_weights(miner_output, b.emb.shape[0], b.dtype, valid=b.anchor_weight, fn=fn, axis_name=axis_name)
    hist_max = 2.0**distance.power
    delta = hist_max / num_bins

    def elements(dist, pos, neg, aw, mw):
        pos, neg = clip_weights(pos), clip_weights(neg)
        n_pos = jnp.sum(pos, axis=1)
        nodes = jnp.linspace(0.0, hist_max, num_bins + 1, dtype=dist.dtype)
        pulse = jax.nn.relu(1.0 - jnp.abs(dist[None, :, :] - nodes[:, None, None]) / delta)  # [K+1, blk, B]
        h_pos = jnp.einsum("kij,ij->ik", pulse, pos)
        h_neg = jnp.einsum("kij,ij->ik", pulse, neg)
        big_h_pos = jnp.cumsum(h_pos, axis=1)
        big_h = jnp.cumsum(h_pos + h_neg, axis=1)
        prod = h_pos * big_h_pos
        ok = (prod > 0) & (big_h > 0)
        fast_ap = jnp.sum(jnp.where(ok, prod / jnp.where(ok, big_h, 1.0), 0.0), axis=1)
        ap = reduce.safe_divide(fast_ap, n_pos)
        # PML returns 0 when no (query, bin) of the batch has positive mass (the gate).
        return [((1.0 - ap) * mw, (n_pos > 0).astype(dist.dtype))], [ok]

    value = evaluate(b, distance, red, elements, rows=(mw,), block_size=block_size, fn=fn, one_per_anchor=True)
    return finish(value, b.dtype)


@front_door
def smooth_ap_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, temperature: Scalar = 0.01,
    distance: BaseDistance = CosineSimilarity(), reduction: ReductionLike = "mean", ref_emb: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None, where: ArrayLike | None = None, ref_where: ArrayLike | None = None,
    miner_output: PairMask | TripletMask | None = None, block_size: int | None = None,
    axis_name: AxisName | None = None,
) -> Array:
    r"""Smooth-AP (Brown, Xie, Kalogeiton & Zisserman, ECCV 2020).

    For query :math:`q` let :math:`P_q = \{q\} \cup \text{pos}(q)` (the query counts as its own
    relevant item, as in the authors' code and PML) and :math:`A_q = P_q \cup \text{neg}(q)`
    (every item for labels), :math:`D_{qij} = s_{qj} - s_{qi}`:

    .. math::
        \mathrm{AP}_q = \frac{1}{|P_q|} \sum_{i\in P_q}
          \frac{1 + \sum_{j\in P_q, j\ne i} \sigma(D_{qij}/\tau)}
               {1 + \sum_{j\in A_q, j\ne i} \sigma(D_{qij}/\tau)},
        \qquad \ell_q = (1 - \mathrm{AP}_q)\, w_q

    with :math:`\tau` = ``temperature`` and :math:`w_q` the per-sample weights from
    ``miner_output``; reduced (mean) over all queries. Fractional mask weights weigh the sums.

    PML: ``SmoothAPLoss(temperature=0.01)``, ``CosineSimilarity`` (required), ``MeanReducer``;
    ``indices_tuple`` → per-sample weights (here ``miner_output``); no ``ref_emb``.

    Deliberate difference: PML 2.9.0 takes the relevant set of a query to be the *contiguous
    block* of size ``g = #classes`` around it (it requires equal class counts and ignores the
    label values otherwise); jaxmetric takes it from the labels (any order, any counts). The two
    agree when the batch is sorted into contiguous classes and ``#classes == samples per
    class`` (the authors' setting). To reproduce PML 2.9.0 exactly for any equal-count batch,
    pass a :class:`~jaxmetric.PairMask` whose ``pos`` is "same block of size ``g``" and
    ``neg`` its complement. jaxmetric also applies ``distance.power`` to every similarity
    (PML skips it inside the blocks).

    Args:
      miner_output: optional PairMask / TripletMask converted to per-sample weights
        (``count / max count``, PML's ``convert_to_weights``).
      block_size: queries per block (static); default: as many as keep one ``[block, B, B]``
        comparison tensor near 4M elements (see the module docstring). Takes any reduction.

    Returns:
      Scalar loss (``"none"``: the ``[B]`` per-query losses).

    Scale:
      axis_name: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``: this device's rows are the
        queries and the items they rank are gathered from every device; returns the single-device loss
        on the concatenated batch (gradients exact after ``pmean``). A mask or ``miner_output`` is then
        ``[B_local, B_global]``. Combines with ``block_size``.

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``, ``where``,
    ``axis_name``, ``block_size``): :ref:`shared-arguments`.
    """
    fn = "smooth_ap_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn, kind=CosineSimilarity)
    check_positive(temperature, "temperature", fn)
    block_size = check_block_size(block_size, fn)
    reject_ref(fn, ref_emb, ref_labels, ref_where)
    b = _pairs.from_inputs(fn, embeddings, labels_or_mask, where=where, axis_name=axis_name, contrast=True)
    mw = mask_sample_weights(miner_output, b.emb.shape[0], b.dtype, valid=b.anchor_weight, fn=fn, axis_name=axis_name)

    def elements(sim, pos, neg, aw, mw, self_cols):
        p_w = clip_weights(pos) + _self_matrix(self_cols, sim.shape[1], sim.dtype) * aw[:, None]  # P_q: the query too
        a_w = jnp.maximum(p_w, clip_weights(neg))
        sums = _rank_sums(sim, jnp.stack([p_w, a_w]), temperature, jax.nn.sigmoid)
        ratio = (1.0 + sums[0]) / (1.0 + sums[1])
        ap = reduce.safe_divide(jnp.sum(p_w * ratio, axis=1), jnp.sum(p_w, axis=1))
        return [((1.0 - ap) * mw, aw)], None

    block_size = _rank_block(block_size, b)
    value = evaluate(b, distance, red, elements, rows=(mw, b.self_cols), block_size=block_size, fn=fn, one_per_anchor=True)
    return finish(value, b.dtype)


@front_door
def pnp_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, b: Scalar = 2, alpha: Scalar = 1, anneal: Scalar = 0.01,
    variant: str = "O", distance: BaseDistance = CosineSimilarity(), reduction: ReductionLike = "mean",
    ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None, where: ArrayLike | None = None,
    ref_where: ArrayLike | None = None, block_size: int | None = None, axis_name: AxisName | None = None,
) -> Array:
    r"""PNP loss (Li, Zhao, Wang, Gao, Lu & Tian, "Rethinking the Optimization of Average
    Precision: Only Penalizing Negative Instances before Positive Ones is Enough", AAAI 2022).

    For a query :math:`q` with at least one relevant item, :math:`P_q = \{q\}\cup\text{pos}(q)`
    and the soft number of negatives ranked above item :math:`i`:

    .. math::
        R_{qi} = \sum_{j\in N_q} \sigma\big((s_{qj} - s_{qi})/\text{anneal}\big),\qquad
        \ell_q = \frac{1}{|P_q|}\sum_{i\in P_q} f(R_{qi})

    with :math:`\sigma(x) = 1/(1+e^{\operatorname{clamp}(-x,-50,50)})` and ``variant``
    :math:`f`: ``"O"`` :math:`R`; ``"Ds"`` :math:`\log(1+R)`; ``"Dq"``
    :math:`1/(1+R)^{\alpha}` (and :math:`\ell_q \to 1 - \ell_q`); ``"Iu"``
    :math:`(1+R)\log(1+R)`; ``"Ib"`` :math:`(bR - \log(1+bR))/b^2`. Reduced (mean) over the
    queries with a relevant item.

    PML: ``PNPLoss(b=2, alpha=1, anneal=0.01, variant="O")``, ``CosineSimilarity``
    (required); PML returns an already-reduced mean (its reducer is ignored); jaxmetric's
    default ``reduction="mean"`` gives the same value and other reductions act on the per-query
    losses. No ``ref_emb`` and no ``indices_tuple`` in PML; here a PairMask in the labels slot
    defines the relevant and irrelevant items. With multi-hot labels :math:`N_q` is the
    negatives of the query (PML's code uses the negatives of item :math:`i`, which is the same
    set for class ids).

    Returns:
      Scalar loss (``"none"``: the ``[B]`` per-query losses).

    Scale:
      axis_name: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``: this device's rows are the
        queries and the items they rank are gathered from every device; returns the single-device loss
        on the concatenated batch (gradients exact after ``pmean``). A mask is then ``[B_local, B_global]``.
      block_size: queries per block (static); default: as many as keep one ``[block, B, B]``
        comparison tensor near 4M elements (see the module docstring). Takes any reduction.

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``, ``where``,
    ``axis_name``, ``block_size``): :ref:`shared-arguments`.
    """
    fn = "pnp_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn, kind=CosineSimilarity)
    validate.check_choice(variant, PNP_VARIANTS, "variant", fn=fn)
    check_positive(anneal, "anneal", fn)
    if variant == "Ib":
        check_positive(b, "b", fn)
    block_size = check_block_size(block_size, fn)
    reject_ref(fn, ref_emb, ref_labels, ref_where)
    bt = _pairs.from_inputs(fn, embeddings, labels_or_mask, where=where, axis_name=axis_name, contrast=True)

    def elements(sim, pos, neg, aw, self_cols):
        pos = clip_weights(pos)
        has_pos = jnp.any(pos > 0, axis=1)
        p_w = pos + _self_matrix(self_cols, sim.shape[1], sim.dtype) * has_pos[:, None].astype(sim.dtype)
        rank = _rank_sums(sim, clip_weights(neg)[None], anneal, _pnp_sigmoid)[0]
        if variant == "Ds":
            f = jnp.log1p(rank)
        elif variant == "Dq":
            f = (1.0 + rank) ** (-alpha)
        elif variant == "Iu":
            f = (1.0 + rank) * jnp.log1p(rank)
        elif variant == "Ib":
            f = (b * rank - jnp.log1p(b * rank)) / b**2
        else:
            f = rank
        per_query = reduce.safe_divide(jnp.sum(jnp.where(p_w > 0, p_w * f, 0.0), axis=1), jnp.sum(p_w, axis=1))
        if variant == "Dq":
            per_query = 1.0 - per_query
        return [(per_query, has_pos.astype(sim.dtype))], None

    block_size = _rank_block(block_size, bt)
    value = evaluate(bt, distance, red, elements, rows=(bt.self_cols,), block_size=block_size, fn=fn, one_per_anchor=True)
    return finish(value, bt.dtype)
