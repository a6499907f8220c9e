"""Triplet-based losses.

A triplet loss takes class ids, multi-hot labels, a :class:`~jaxmetric.PairMask` (every
selected positive of an anchor with every selected negative of the same anchor, as PML's
``convert_to_triplets`` expands an ``(a1, p, a2, n)`` tuple) or a
:class:`~jaxmetric.TripletMask` (explicit triplet weights).

Memory: the default hinge with "all" triplets never builds the ``[B, R, R]`` cube. For each
anchor the negatives are sorted once; the hinge sum over negatives for a positive ``p`` is then
``count * (x_ap + margin) - sum(x_an)`` over the negatives below the threshold, read from prefix
sums. Time ``O(B R log R)``, memory ``O(B R)``, value and gradient equal to the dense sum.
Variants that need every triplet (``swap``, ``smooth_loss``, a dense ``TripletMask``, thresholds
other than 0) are computed over blocks of anchors, memory ``O(block R^2)`` for the value and the
gradient (each block is rematerialised in the backward pass).

Compact :class:`~jaxmetric.TripletMask` forms: the *list* form (random miners) is gathered,
``O(B K)``. The *margin* form (``triplet_margin_miner``) uses the sorted path too: for each anchor
the negatives are sorted by the mask's distances, ties broken by the loss's; the selected
negatives of a positive are then one contiguous run, found by binary search with PML's exact
threshold expressions, and the hinge is read from prefix sums. That needs the loss's distances to
be non-decreasing along the mask's order -- true whenever the miner and the loss use the same
distance on the same embeddings; otherwise (checked on device, no host sync) the exact blocked
path runs instead (``lax.cond``). The *angle* form is evaluated by anchor blocks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import functools

import jax
import jax.numpy as jnp

from jaxmetric._src import collectives, pairs as _pairs, triplets as _triplets
from jaxmetric import reduce
from jaxmetric._src.front_door import front_door
from jaxmetric._src.engine import triplet_partials
from jaxmetric._src.validate import check_choice, check_distance
from jaxmetric.distances import LpDistance
from jaxmetric._src.numerics import finish

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, AxisName, LabelsOrMask, ReductionLike, Scalar
    from jaxmetric.distances import BaseDistance


@functools.partial(jax.jit, static_argnames=("nonzero_only",))
def _hinge_sorted(x_ap, wp, x_an, wn, margin, nonzero_only: bool):
    """Partial sums of ``sum_{a,p,n} wp wn relu(x_ap - x_an + margin)`` without the cube."""
    # Centre per anchor so the prefix-sum difference below does not lose precision.
    centre = jax.lax.stop_gradient(jnp.sum(jnp.where(wn > 0, x_an, 0.0), 1, keepdims=True) / jnp.maximum(jnp.sum(wn > 0, 1, keepdims=True), 1))
    x_an = x_an - centre
    thr = x_ap - centre + margin
    key = jnp.where(wn > 0, x_an, jnp.inf)
    wx = jnp.where(wn > 0, wn * x_an, 0.0)
    key, w_sorted, wx_sorted = jax.lax.sort((key, wn, wx), dimension=1, num_keys=1)
    zeros = jnp.zeros((x_an.shape[0], 1), x_an.dtype)
    cw = jnp.concatenate([zeros, jnp.cumsum(w_sorted, axis=1)], axis=1)
    cwx = jnp.concatenate([zeros, jnp.cumsum(wx_sorted, axis=1)], axis=1)
    # Number of negatives with x_an < thr (strictly: a hinge of exactly 0 is not "non-zero").
    # (searchsorted(side="left") by binary search: 3x faster than method="sort" on CPU at B=2048.)
    k = _triplets.first_false(key, jnp.full((key.shape[0],), key.shape[1]), jax.lax.stop_gradient(thr), "lt")
    s_w = jnp.take_along_axis(cw, k, axis=1)
    s_wx = jnp.take_along_axis(cwx, k, axis=1)
    wp = jnp.where(wp > 0, wp, 0.0)
    num = jnp.sum(jnp.where(wp > 0, wp * (s_w * thr - s_wx), 0.0))
    if nonzero_only:
        den = jnp.sum(wp * s_w)
    else:
        den = jnp.sum(jnp.sum(wp, axis=1) * jnp.sum(wn, axis=1))
    return num, den


def _cube_terms(x_ap, x_an, x_pn, margin, smooth_loss):
    """Triplet terms ``[blk, R, R]`` for a block of anchors."""
    an = x_an[:, None, :]
    if x_pn is not None:
        an = jnp.minimum(an, x_pn[None, :, :])  # swap: the closer of (a, n) and (p, n)
    violation = x_ap[:, :, None] - an + margin
    return jax.nn.softplus(violation) if smooth_loss else jax.nn.relu(violation)


def _blocked_partial(red, x, x_pn, margin, smooth_loss, weight_fn, rows, shared=(), context=None):
    """Partial sums of ``red`` (any additive reduction) over every triplet, block by block of
    anchors; ``context`` (the batch's) reaches a context reduction block by block.

    ``weight_fn(*row_blocks, *shared)`` gives the ``[blk, R, R]`` triplet weights of a block.
    (A built-in reduction is compiled once per shape and static options; its thresholds may be
    traced.)
    """
    labels, aw = (None, None) if context is None else (context.labels, context.anchor_weight)
    args = (x, x_pn, margin, smooth_loss, weight_fn, tuple(rows), tuple(shared), labels, aw)
    if reduce.is_builtin(red):
        return _builtin_blocked_partial(red.kind, red.low, red.high, *args)
    return _triplet_blocks(red, *args)


@functools.partial(jax.jit, static_argnames=("kind", "smooth_loss", "weight_fn"))
def _builtin_blocked_partial(kind, low, high, x, x_pn, margin, smooth_loss, weight_fn, rows, shared, labels, aw):
    red = reduce.Reduction(kind, low, high)
    return _triplet_blocks(red, x, x_pn, margin, smooth_loss, weight_fn, rows, shared, labels, aw)


def _triplet_blocks(red, x, x_pn, margin, smooth_loss, weight_fn, rows, shared, labels, aw):
    def cube(xb, *args):
        return _cube_terms(xb, xb, x_pn, margin, smooth_loss), weight_fn(*args)

    return triplet_partials(red, cube, (x, *rows), shared, context=reduce.Context(labels=labels, anchor_weight=aw))


def _factored_weights(wp, wn):
    return wp[:, :, None] * wn[:, None, :]


def _margin_form_partial(red, x, x_pn, tm, margin, nonzero_only, smooth_loss):
    """The sorted path for a margin-form mask, or the exact blocked path when the loss's
    distances are not monotone in the mask's (decided on device)."""
    return _margin_form_partial_jit(red.kind, red.low, red.high, x, x_pn, tm, margin, nonzero_only, smooth_loss)


@functools.partial(jax.jit, static_argnames=("kind", "nonzero_only", "smooth_loss"))
def _margin_form_partial_jit(kind, low, high, x, x_pn, tm, margin, nonzero_only, smooth_loss):
    red = reduce.Reduction(kind, low, high)
    num, den, ok = _hinge_sorted_margin(x, tm, margin, nonzero_only)
    weight_fn, rows, shared = tm.anchor_blocks()
    return jax.lax.cond(
        ok,
        lambda: (num, den),
        lambda: _blocked_partial(red, x, x_pn, margin, smooth_loss, weight_fn, rows, shared),
    )


def _hinge_sorted_margin(y, tm, margin, nonzero_only: bool):
    """``(num, den, ok)``: partial sums of the hinge over the triplets of a margin-form mask.

    Negatives are sorted per anchor by (mask distance, loss distance). ``ok`` says the loss's
    distances are non-decreasing along that order (then the result is exact); when it is False
    the caller uses the blocked path.
    """
    sg = jax.lax.stop_gradient
    wp, wn, xm = tm.pos, tm.neg, sg(tm.x)
    b, r = y.shape
    valid = wn > 0
    key1 = jnp.where(valid, xm, jnp.inf)
    key2 = jnp.where(valid, sg(y), jnp.inf)
    iota = jnp.broadcast_to(jnp.arange(r, dtype=jnp.int32)[None, :], (b, r))
    k1s, k2s, perm = jax.lax.sort((key1, key2, iota), dimension=1, num_keys=2)
    length = jnp.sum(valid, axis=1)
    ys = jnp.take_along_axis(y, perm, axis=1)
    ws = jnp.where(jnp.arange(r)[None, :] < length[:, None], jnp.take_along_axis(wn, perm, axis=1), 0.0)
    # Monotone check over the valid prefix of each row.
    inside = jnp.arange(1, r)[None, :] < length[:, None]
    ok = jnp.all(jnp.where(inside, k2s[:, 1:] >= k2s[:, :-1], True))
    # Centre per anchor so the prefix-sum difference below does not lose precision.
    centre = sg(jnp.sum(jnp.where(ws > 0, ys, 0.0), axis=1, keepdims=True) / jnp.maximum(length[:, None], 1))
    zeros = jnp.zeros((b, 1), y.dtype)
    cw = jnp.concatenate([zeros, jnp.cumsum(ws, axis=1)], axis=1)
    cwy = jnp.concatenate([zeros, jnp.cumsum(jnp.where(ws > 0, ws * (ys - centre), 0.0), axis=1)], axis=1)
    lo, hi = tm.lo, tm.hi
    k_hi = _triplets.first_false(k1s, length, xm, "sub_le", hi)
    k_lo = _triplets.first_false(k1s, length, xm, "sub_le", lo)
    # PML's violation (x_ap - x_an) + margin > 0, in its own rounding.
    k_nz = _triplets.first_false(k2s, length, sg(y), "hinge", jnp.asarray(margin, y.dtype))
    s_ = k_lo
    e_sel = jnp.maximum(s_, k_hi)
    e_nz = jnp.maximum(s_, jnp.minimum(k_hi, k_nz))

    def run(c, e):
        return jnp.take_along_axis(c, e, axis=1) - jnp.take_along_axis(c, s_, axis=1)

    wp_ = jnp.where(wp > 0, wp, 0.0)
    n_nz = run(cw, e_nz)
    num = jnp.sum(jnp.where(wp_ > 0, wp_ * (n_nz * (y - centre + margin) - run(cwy, e_nz)), 0.0))
    den = jnp.sum(wp_ * (n_nz if nonzero_only else run(cw, e_sel)))
    return num, den, ok


@front_door
def triplet_margin_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, margin: Scalar = 0.05, swap: bool = False,
    smooth_loss: bool = False, triplets_per_anchor: str = "all", key: Array | None = None,
    distance: BaseDistance = LpDistance(), reduction: ReductionLike = "avg_nonzero", ref_emb: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None, where: ArrayLike | None = None, ref_where: ArrayLike | None = None,
    axis_name: AxisName | None = None,
) -> Array:
    r"""Triplet margin loss (Weinberger & Saul 2009; Schroff et al., FaceNet, CVPR 2015):

    .. math::
        \ell_{apn} = [d_{ap} - d_{an} + \text{margin}]_+ \quad(\text{softplus if smooth\_loss})

    over all triplets (``triplets_per_anchor="all"``) or ``triplets_per_anchor`` random
    (positive, negative) draws per anchor, uniform with replacement, from PRNG ``key``. With
    ``swap`` (Balntas et al., BMVC 2016) :math:`d_{an}` is replaced by the smaller of
    :math:`d_{an}` and :math:`d_{pn}`. For similarities the sign flips (:math:`s_{an} - s_{ap}`).

    ``labels_or_mask`` may also be a mined mask: a :class:`~jaxmetric.PairMask` (every selected
    positive with every selected negative of the anchor, as PML's ``convert_to_triplets``) or a
    :class:`~jaxmetric.TripletMask` in any form; the compact forms are read without the
    ``[B, R, R]`` cube (see the module docstring).

    PML: ``TripletMarginLoss(margin=0.05, swap=False, smooth_loss=False,
    triplets_per_anchor="all")``, ``LpDistance()``, ``AvgNonZeroReducer`` over triplets.
    Deliberate difference: with ``swap`` and ``ref_emb``, :math:`d_{pn}` is the distance between
    the two references; PML reads the query row ``p`` instead (its index is a reference index).

    Returns:
      Scalar loss (``"none"``: the ``[B, R, R]`` per-triplet losses, ``[B, t]`` when
      sampling, ``[B, K]`` for a list-form TripletMask).

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``,
    ``ref_emb``, ``ref_labels``, ``where``, ``ref_where``, ``axis_name``):
    :ref:`shared-arguments`.
    """
    fn = "triplet_margin_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn)
    if not (triplets_per_anchor == "all" or (isinstance(triplets_per_anchor, int) and triplets_per_anchor > 0)):
        raise ValueError(f"{fn}: `triplets_per_anchor` must be 'all' or a positive int; got {triplets_per_anchor!r}")
    check_choice(bool(swap), (True, False), "swap", fn=fn)
    b = _pairs.from_inputs(
        fn, embeddings, labels_or_mask, ref_emb=ref_emb, ref_labels=ref_labels, where=where, ref_where=ref_where,
        allow_triplets="mask", axis_name=axis_name, contrast=True,
    )
    mat = distance(b.emb, b.ref)
    sign = -1.0 if distance.is_inverted else 1.0
    x = sign * mat  # oriented so that the violation is x_ap - x_an + margin
    x_pn = None
    if swap:
        x_pn = x if b.same_set else sign * distance(b.ref, b.ref)
    context = b.context

    tm = b.triplet_mask
    if triplets_per_anchor != "all":
        if tm is not None:
            raise ValueError(f"{fn}: `triplets_per_anchor` sampling needs labels or a PairMask, not a TripletMask")
        if key is None:
            raise ValueError(f"{fn}: `key` (a jax.random key) is required when `triplets_per_anchor` is an int; got key=None")
        key = collectives.fold_in_device(key, axis_name)  # independent draws on each device
        p_idx, n_idx, valid = _triplets.sample_triplets(key, b.pos, b.neg, triplets_per_anchor)
        value = _gathered(red, x, x_pn, p_idx, n_idx, valid.astype(x.dtype), margin, smooth_loss, axis_name, context)
        return finish(value, b.dtype)

    if tm is not None and tm.form == "list":
        value = _gathered(red, x, x_pn, tm.p_idx, tm.n_idx, tm.weights, margin, smooth_loss, axis_name, context)
        return finish(value, b.dtype)

    if not reduce.is_additive(red):
        # "none" or a plain callable needs every element: build the cube.
        w = tm.to_dense().astype(x.dtype) if tm is not None else b.pos[:, :, None] * b.neg[:, None, :]
        return finish(reduce.apply(red, _cube_terms(x, x, x_pn, margin, smooth_loss), w, axis_name, context=context), b.dtype)

    simple = reduce.is_builtin(red) and not swap and not smooth_loss and red.high is None and red.low in (None, 0.0)
    if tm is None:
        if simple:
            num, den = _hinge_sorted(x, b.pos, x, b.neg, margin, nonzero_only=red.low is not None)
        else:
            num, den = _blocked_partial(red, x, x_pn, margin, smooth_loss, _factored_weights, (b.pos, b.neg), context=context)
    elif tm.form == "margin" and simple:
        num, den = _margin_form_partial(red, x, x_pn, tm, margin, red.low is not None, smooth_loss)
    else:
        weight_fn, rows, shared = tm.anchor_blocks()
        num, den = _blocked_partial(red, x, x_pn, margin, smooth_loss, weight_fn, rows, shared, context=context)
    return finish(reduce.finalize(red, num, den, axis_name), b.dtype)


def _gathered(red, x, x_pn, p_idx, n_idx, weights, margin, smooth_loss, axis_name=None, context=None):
    """The loss over explicit per-anchor (positive, negative) index lists ``[B, K]``."""
    x_ap = jnp.take_along_axis(x, p_idx, axis=1)
    x_an = jnp.take_along_axis(x, n_idx, axis=1)
    if x_pn is not None:
        x_an = jnp.minimum(x_an, x_pn[p_idx, n_idx])
    violation = x_ap - x_an + margin
    losses = jax.nn.softplus(violation) if smooth_loss else jax.nn.relu(violation)
    return reduce.apply(red, losses, weights, axis_name, context=context)
