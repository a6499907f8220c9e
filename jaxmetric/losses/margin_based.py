"""Losses with a distance boundary learned or fixed per batch: margin loss (learnable beta)
and ranked list loss.

Names, hyperparameters and defaults are PML 2.9's.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from jaxmetric._src import collectives, pairs as _pairs, triplets as _triplets, validate
from jaxmetric import reduce
from jaxmetric._src.engine import evaluate
from jaxmetric._src.front_door import front_door
from jaxmetric._src.engine import triplet_partials
from jaxmetric.distances import LpDistance
from jaxmetric._src.labels import require_class_ids, resolve_labelled
from jaxmetric.masks import TripletMask
from jaxmetric._src.validate import check_block_size, check_distance, reject_ref
from jaxmetric._src.numerics import finish

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, AxisName, LabelsOrMask, ReductionLike, Scalar
    from jaxmetric.distances import BaseDistance

def _triplet_elements(pl, nl, p_w, n_w, c):
    """A block of anchors' triplet elements ``pos_l[a, p] + neg_l[a, n]`` and their weights
    ``cube[a, p, n]`` (or ``wp[a, p] * wn[a, n]``)."""
    w = c if c is not None else p_w[:, :, None] * n_w[:, None, :]
    return pl[:, :, None] + nl[:, None, :], w


def _reg_elements(reg_a, p_w, n_w, c):
    """The per-class regulariser ``nu beta[y_a]`` of every triplet of a block, and the weights."""
    w = c if c is not None else p_w[:, :, None] * n_w[:, None, :]
    return jnp.broadcast_to(reg_a[:, None, None], w.shape), w


def _check_beta(beta, fn):
    if not hasattr(beta, "shape"):
        try:
            beta = jnp.asarray(beta)
        except TypeError as e:
            raise TypeError(f"{fn}: `beta` must be a float scalar or a (num_classes,) float array; got {type(beta).__name__}") from e
    if not (jnp.issubdtype(beta.dtype, jnp.floating) or jnp.issubdtype(beta.dtype, jnp.integer)):
        raise TypeError(f"{fn}: `beta` must be a float scalar or a (num_classes,) float array; got dtype {beta.dtype}")
    if beta.ndim > 1:
        raise ValueError(f"{fn}: `beta` must be a scalar or a (num_classes,) array; got shape {tuple(beta.shape)}")
    if beta.ndim == 1 and beta.shape[0] == 0:
        raise ValueError(f"{fn}: `beta` must have at least one entry; got shape {tuple(beta.shape)}")
    return beta


@front_door
def margin_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, beta: Scalar = 1.2, *, margin: Scalar = 0.2,
    nu: Scalar = 0.0, triplets_per_anchor: str = "all", key: Array | None = None, labels: ArrayLike | None = None,
    distance: BaseDistance = LpDistance(), reduction: ReductionLike = "divisor", ref_emb: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None, where: ArrayLike | None = None, ref_where: ArrayLike | None = None,
    axis_name: AxisName | None = None,
) -> Array:
    r"""Margin loss (Wu, Manmatha, Smola & Krähenbühl, "Sampling Matters in Deep Embedding
    Learning", ICCV 2017), per triplet :math:`(a, p, n)` with boundary :math:`\beta`:

    .. math::
        \ell_{apn} = [d_{ap} - \beta_a + \alpha]_+ + [\beta_a - d_{an} + \alpha]_+ ,
        \qquad L = \frac{\sum \ell_{apn}}{\#\{\text{non-zero terms}\}} + \nu\,\beta

    with :math:`\alpha` = ``margin`` (sides swap for similarities). ``beta`` is a learned
    parameter passed explicitly: a scalar (or shape ``(1,)``), or ``(num_classes,)`` indexed
    by the anchor's class id (then class ids are required). Its gradient is the gradient of
    this function with respect to ``beta``: train it by passing it from your parameters.
    The regulariser :math:`\nu\beta` (PML's ``beta_reg_loss``) is added whenever ``nu`` is
    non-zero: for a scalar beta as is, for per-class beta as :math:`\nu\beta_{y_a}` per
    triplet, reduced like the margin terms.

    Triplets: all of them (``triplets_per_anchor="all"``; memory ``O(B R)``: the sums factor
    per anchor) or ``triplets_per_anchor`` random draws per anchor from PRNG ``key``; a
    :class:`~jaxmetric.PairMask` means every selected positive with every selected negative of
    the anchor (PML's ``convert_to_triplets``), a :class:`~jaxmetric.TripletMask` its triplets.
    With a mask and per-class ``beta``, pass the class ids as ``labels=``.

    ``reduction``: ``"divisor"`` (default; PML's ``DivisorReducer``: the sum over triplets
    divided by the number of non-zero positive terms plus non-zero negative terms), or any
    other reduction over the per-triplet losses :math:`\ell_{apn}` (``"none"``: the
    ``[B, R, R]`` per-triplet losses without the regulariser, or ``[B, t]`` when sampling).
    Threshold reductions and callables need every triplet and work a block of anchors at a
    time. No triplet at all gives 0 (the regulariser included), as PML.

    PML: ``MarginLoss(margin=0.2, nu=0, beta=1.2, triplets_per_anchor="all",
    learn_beta=False, num_classes=None)``, ``LpDistance()``, ``DivisorReducer``. Deliberate
    difference: PML adds :math:`\nu\beta` only with ``learn_beta=True``; jaxmetric has no such
    flag (any argument can be differentiated), so keep ``nu=0`` for a fixed beta. Random
    triplets follow jaxmetric's sampler, not torch's RNG.

    ``axis_name``: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``, local rows are the
    anchors and the references are gathered over that axis; every device returns the loss of
    the concatenated global batch: the divisor (non-zero terms) and the other reductions'
    counts are ``psum``-ed, and the "no triplet" gate is global. A scalar ``beta``'s regulariser
    is added once. With ``triplets_per_anchor`` sampling each device draws its anchors'
    triplets independently (``key`` folded with the device index), so the draws differ from
    one device's. ``class_weighted``, ``per_anchor`` and ``divisor(d)`` are summed over devices
    from their partial sums; plain callable reductions are rejected.

    Returns:
      Scalar loss (``"none"``: per-triplet losses, see above).

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``,
    ``ref_emb``, ``ref_labels``, ``where``, ``ref_where``, ``axis_name``):
    :ref:`shared-arguments`.
    """
    fn = "margin_loss"
    use_divisor = isinstance(reduction, str) and reduction == "divisor"
    red = None if use_divisor else reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn)
    if not (triplets_per_anchor == "all" or (isinstance(triplets_per_anchor, int) and not isinstance(triplets_per_anchor, bool) and triplets_per_anchor > 0)):
        raise ValueError(f"{fn}: `triplets_per_anchor` must be 'all' or a positive int; got {triplets_per_anchor!r}")
    beta = _check_beta(beta, fn)
    per_class = beta.ndim == 1 and beta.shape[0] > 1
    is_cube = isinstance(labels_or_mask, TripletMask)
    b, lab, _ = resolve_labelled(
        fn, embeddings, labels_or_mask, labels=labels, ref_emb=ref_emb, ref_labels=ref_labels, where=where,
        ref_where=ref_where, required=per_class, need_ref=False, allow_triplets=is_cube,
        why=" and a per-class `beta` (it is indexed by the anchor's class)", axis_name=axis_name, contrast=True,
    )
    if axis_name is not None and red is not None and red != "none" and not reduce.is_additive(red):
        raise ValueError(
            f"{fn}: a callable `reduction` cannot be combined with `axis_name`: use \"divisor\", a reduction "
            "whose partial sums are summed over devices (built-in or jaxmetric.reduce's) or reduce the 'none' "
            "output yourself"
        )
    dt = b.dtype
    beta = beta.astype(dt)
    beta_a = _beta_per_anchor(beta, lab, per_class, b.emb.shape[0], fn)
    mat = distance(b.emb, b.ref)
    bcol = beta_a[:, None]
    pos_l = jax.nn.relu(distance.margin(mat, bcol) + margin)  # [B, R]
    neg_l = jax.nn.relu(distance.margin(bcol, mat) + margin)
    # PML's beta_reg_loss: nu * beta as is (scalar beta), or the per-triplet elements
    # nu * beta[y_a] reduced like the margin terms.
    context = reduce.Context(labels=lab, anchor_weight=b.anchor_weight)
    terms = _MarginTerms(pos_l, neg_l, nu * beta_a, None if per_class else nu * jnp.reshape(beta, ()), red, axis_name, context)
    if triplets_per_anchor == "all":
        return finish(_all_triplets(terms, b, is_cube), dt)
    if is_cube:
        raise ValueError(f"{fn}: `triplets_per_anchor` sampling needs labels or a PairMask, not a TripletMask")
    if key is None:
        raise ValueError(f"{fn}: `key` (a jax.random key) is required when `triplets_per_anchor` is an int; got key=None")
    key = collectives.fold_in_device(key, axis_name)  # independent draws on each device
    return finish(_sampled_triplets(terms, b, key, triplets_per_anchor), dt)


def _beta_per_anchor(beta, lab, per_class: bool, n: int, fn: str):
    """``beta_a``: the scalar beta for every anchor, or the per-class beta at its class id."""
    if not per_class:
        return jnp.broadcast_to(jnp.reshape(beta, ()), (n,))
    require_class_ids(lab, fn, why=" for a per-class `beta`")
    if validate.is_concrete(lab) and lab.shape[0] > 0:
        lab_np = np.asarray(lab)
        if lab_np.min() < 0 or lab_np.max() >= beta.shape[0]:
            raise ValueError(
                f"{fn}: class ids must lie in [0, {beta.shape[0]}) to index a per-class `beta` of shape "
                f"{tuple(beta.shape)}; got ids from {lab_np.min()} to {lab_np.max()}"
            )
    return beta[lab.astype(jnp.int32)]  # [B]


@dataclasses.dataclass(frozen=True)
class _MarginTerms:
    """The margin loss's terms: ``pos_l[a, p] = [d_ap - beta_a + margin]_+``, ``neg_l[a, n]``
    likewise, the per-anchor regulariser elements ``reg_a = nu beta_a``, and ``reg_scalar``
    (``nu beta`` for a scalar beta, added once; None for per-class beta); ``red`` is None for
    PML's divisor reduction."""

    pos_l: jax.Array
    neg_l: jax.Array
    reg_a: jax.Array
    reg_scalar: jax.Array | None
    red: object
    axis_name: object
    context: reduce.Context  # the anchors' labels and validity, for the context reductions

    def with_reg(self, value, per_class_reg):
        return value + (per_class_reg() if self.reg_scalar is None else self.reg_scalar)

    def gdiv(self, num, den):
        """``num / den`` over the global batch (``den`` carries no gradient)."""
        ax = self.axis_name
        return reduce.safe_divide(collectives.psum(num, ax), collectives.psum(jax.lax.stop_gradient(den), ax))


def _sampled_triplets(t: _MarginTerms, b, key, triplets_per_anchor: int):
    """The loss over ``triplets_per_anchor`` random triplets per anchor."""
    p_idx, n_idx, valid = _triplets.sample_triplets(key, b.pos, b.neg, triplets_per_anchor)
    w = valid.astype(b.dtype)
    tp = jnp.take_along_axis(t.pos_l, p_idx, axis=1)
    tn = jnp.take_along_axis(t.neg_l, n_idx, axis=1)
    elements = tp + tn
    reg_el = jnp.broadcast_to(t.reg_a[:, None], elements.shape)
    red, ax = t.red, t.axis_name
    if red == "none":
        return reduce.apply(red, elements, w)
    if red is None:
        den = jnp.sum(w * (tp > 0)) + jnp.sum(w * (tn > 0))
        value = t.with_reg(t.gdiv(jnp.sum(w * elements), den), lambda: t.gdiv(jnp.sum(w * reg_el), den))
    else:
        value = t.with_reg(reduce.apply(red, elements, w, ax, t.context), lambda: reduce.apply(red, reg_el, w, ax, t.context))
    return jnp.where(reduce.global_any(w, ax), value, 0.0)


def _all_triplets(t: _MarginTerms, b, is_cube: bool):
    """The loss over every selected triplet, from per-anchor sums (``O(B R)``) where the
    reduction allows, else a block of anchors' triplets at a time."""
    pos_l, neg_l, red, ax = t.pos_l, t.neg_l, t.red, t.axis_name
    if is_cube:
        pw, nw = b.pos, b.neg  # triplet counts per (a, p) and per (a, n)
    else:
        pw = b.pos * jnp.sum(b.neg, axis=1, keepdims=True)
        nw = b.neg * jnp.sum(b.pos, axis=1, keepdims=True)
    t_a = jnp.sum(pw, axis=1)  # triplets per anchor
    gate = reduce.global_any(t_a, ax)

    def wsum(w, x):
        return jnp.sum(jnp.where(w > 0, w * x, 0.0))

    num = wsum(pw, pos_l) + wsum(nw, neg_l)
    cube = b.triplets if is_cube else None
    if red == "none" or (red is not None and not reduce.is_additive(red)):
        # "none" or a plain callable sees every triplet at once: the cube.
        elements, cube_w = _triplet_elements(pos_l, neg_l, b.pos, b.neg, cube)
        if red == "none":
            return jnp.where(gate, reduce.apply(red, elements, cube_w), 0.0)
        reg_el = jnp.broadcast_to(t.reg_a[:, None, None], elements.shape)
        value = t.with_reg(reduce.apply(red, elements, cube_w, ax, t.context), lambda: reduce.apply(red, reg_el, cube_w, ax, t.context))
        return jnp.where(gate, value, 0.0)
    if red is not None and not reduce.is_builtin(red):
        # A context reduction: block by block, each block with its anchors' labels and validity.
        def blocks(elements, rows):
            return reduce.finalize(red, *triplet_partials(red, elements, rows, context=t.context), ax)

        value = t.with_reg(blocks(_triplet_elements, (pos_l, neg_l, b.pos, b.neg, cube)),
                           lambda: blocks(_reg_elements, (t.reg_a, b.pos, b.neg, cube)))
        return jnp.where(gate, value, 0.0)
    if red is None:
        den = wsum(pw, (pos_l > 0).astype(b.dtype)) + wsum(nw, (neg_l > 0).astype(b.dtype))
        value = t.with_reg(t.gdiv(num, den), lambda: t.gdiv(wsum(t_a, t.reg_a), den))
        return jnp.where(gate, value, 0.0)
    if red.high is None and red.low is None:
        value = reduce.finalize(red, num, jnp.sum(t_a), ax)
    elif red.high is None and red.low == 0.0 and not is_cube:
        # avg_nonzero: a triplet is zero only when both of its terms are.
        zero_p = jnp.sum(jnp.where(pos_l > 0, 0.0, b.pos), axis=1)
        zero_n = jnp.sum(jnp.where(neg_l > 0, 0.0, b.neg), axis=1)
        value = reduce.finalize(red, num, jnp.sum(t_a) - jnp.sum(zero_p * zero_n), ax)
    else:
        value = reduce.finalize(red, *triplet_partials(red, _triplet_elements, (pos_l, neg_l, b.pos, b.neg, cube)), ax)
    value = t.with_reg(value, lambda: reduce.apply(red, t.reg_a, t_a, ax))
    return jnp.where(gate, value, 0.0)


@front_door
def ranked_list_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, margin: Scalar, Tn: Scalar, imbalance: Scalar = 0.5,
    alpha: Scalar | None = None, Tp: Scalar = 0.0, distance: BaseDistance = LpDistance(),
    reduction: ReductionLike = "mean", ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None,
    where: ArrayLike | None = None, ref_where: ArrayLike | None = None, axis_name: AxisName | None = None,
    block_size: int | None = None,
) -> Array:
    r"""Ranked list loss (Wang, Hua, Kodirov, Hu, Garnier & Robertson, "Ranked List Loss for
    Deep Metric Learning", CVPR 2019), per anchor :math:`i` with boundary :math:`\alpha`
    (default :math:`1 + m/2`) and margin :math:`m`:

    .. math::
        L_P = \frac{\sum_{j\in P^*_i} w_{ij}\,(d_{ij} - (\alpha - m))}{\sum_{j\in P^*_i} w_{ij} + B\cdot 10^{-5}},
        \quad w_{ij} = e^{T_p (d_{ij} - (\alpha - m))}

    .. math::
        L_N = \frac{\sum_{j\in N^*_i} w_{ij}\,(\alpha - d_{ij})}{\sum_{j\in N^*_i} w_{ij} + B\cdot 10^{-5}},
        \quad w_{ij} = e^{T_n (\alpha - d_{ij})}, \qquad \ell_i = (1-\lambda) L_P + \lambda L_N

    with :math:`P^*_i` the positives farther than :math:`\alpha - m`, :math:`N^*_i` the
    negatives closer than :math:`\alpha`, both also requiring :math:`d_{ij} > 0` as PML's
    value-based membership does, :math:`\lambda` = ``imbalance``. The weights carry
    gradients, as in PML; they are computed with a per-row shift, so a large temperature
    does not overflow (PML warns above 5; jaxmetric needs no warning). With ``where``,
    :math:`B` counts the real rows.

    ``margin`` and ``Tn`` have no default (as in PML). Labels: class ids or multi-hot
    (positive = shares a label). A :class:`~jaxmetric.PairMask` / :class:`~jaxmetric.TripletMask`
    is accepted as the positive/negative relation (a jaxmetric extension: PML rejects an
    ``indices_tuple`` here).

    PML: ``RankedListLoss(margin, Tn, imbalance=0.5, alpha=None, Tp=0)``, ``LpDistance()``,
    ``MeanReducer`` over all anchors; ``ref_emb`` is rejected (``ValueError``).

    ``axis_name``: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``, local rows are the
    anchors ranked against the gathered global batch (:math:`B` counts the global real rows);
    every device returns the loss of the concatenated global batch.

    ``block_size``: anchors per block, each block rematerialised in the backward pass (memory
    ``O(block_size * B)``); an anchor's loss reads its own row alone, so any reduction blocks.

    Returns:
      Scalar loss (``"none"``: the ``[B]`` per-anchor losses).

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``, ``where``,
    ``axis_name``, ``block_size``): :ref:`shared-arguments`.
    """
    fn = "ranked_list_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn)
    block_size = check_block_size(block_size, fn)
    reject_ref(fn, ref_emb, ref_labels, ref_where)
    if isinstance(imbalance, (int, float)) and not 0 <= imbalance <= 1:
        raise ValueError(f"{fn}: `imbalance` must be in [0, 1]; got {imbalance!r}")
    if alpha is None:
        alpha = 1.0 + margin / 2.0
    b = _pairs.from_inputs(fn, embeddings, labels_or_mask, where=where, axis_name=axis_name)
    pos_thr = alpha - margin
    cols = jnp.sum(b.ref_weight)

    def weighted(member, x, t):
        # sum_j e^{t x} x / (sum_j e^{t x} + cols * 1e-5), shifted by the row max of t x.
        tx = jnp.where(member, t * x, 0.0)
        m = jax.lax.stop_gradient(jnp.maximum(jnp.max(jnp.where(member, tx, -jnp.inf), axis=1, keepdims=True), 0.0))
        e = jnp.where(member, jnp.exp(tx - m), 0.0)
        num = jnp.sum(jnp.where(member, e * x, 0.0), axis=1)
        den = jnp.sum(e, axis=1) + cols * 1e-5 * jnp.exp(-m[:, 0])
        return reduce.safe_divide(num, den)

    def elements(mat, pos, neg, aw, self_cols):
        mat = mat * _pairs._not_self(self_cols, mat.shape[1], mat.dtype)  # PML zeroes the diagonal
        in_p = (pos > 0) & (mat > pos_thr) & (mat > 0)
        in_n = (neg > 0) & (mat < alpha) & (mat > 0)
        loss_p = weighted(in_p, mat - pos_thr, Tp)
        loss_n = weighted(in_n, alpha - mat, Tn)
        return [((1.0 - imbalance) * loss_p + imbalance * loss_n, aw)], None

    value = evaluate(b, distance, red, elements, rows=(b.self_cols,), block_size=block_size, fn=fn, one_per_anchor=True)
    return finish(value, b.dtype)
