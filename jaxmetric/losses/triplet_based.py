"""Triplet-based losses.

A triplet loss takes class ids, multi-hot labels, a :class:`~jaxmetric.PairMask` (every
selected positive of an anchor with every selected negative of the same anchor, as PML's
``convert_to_triplets`` expands an ``(a1, p, a2, n)`` tuple) or a
:class:`~jaxmetric.TripletMask` (explicit triplet weights).

Memory: the default hinge with "all" triplets never builds the ``[B, R, R]`` cube. For each
anchor the negatives are sorted once; the hinge sum over negatives for a positive ``p`` is then
``count * (x_ap + margin) - sum(x_an)`` over the negatives below the threshold, read from prefix
sums. Time ``O(B R log R)``, memory ``O(B R)``, value and gradient equal to the dense sum.
Variants that need every triplet (``swap``, ``smooth_loss``, a ``TripletMask``, thresholds other
than 0) are computed over blocks of anchors, memory ``O(block R^2)``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmetric import _resolve, reduce
from jaxmetric._checks import check_choice
from jaxmetric.distances import LpDistance
from jaxmetric.losses._common import check_distance, finish

# Elements per anchor block in the cube path (about 64 MB of float32 temporaries per term).
_BLOCK_ELEMENTS = 1 << 24


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
    k = jax.vmap(lambda s, q: jnp.searchsorted(s, q, side="left", method="sort"))(key, jax.lax.stop_gradient(thr))
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


def _blocked_partial(red, x_ap, wp, x_an, wn, cube, x_pn, margin, smooth_loss):
    b, r = x_ap.shape
    blk = int(max(1, min(b, _BLOCK_ELEMENTS // max(r * r, 1))))
    nblk = -(-b // blk)
    pad = nblk * blk - b

    def padded(x):
        if x is None:
            return None
        return jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape((nblk, blk) + x.shape[1:])

    xs = (padded(x_ap), padded(wp), padded(x_an), padded(wn), padded(cube))

    def block(args):
        ap, p_w, an, n_w, c = args
        w = c if c is not None else p_w[:, :, None] * n_w[:, None, :]
        return red.partial(_cube_terms(ap, an, x_pn, margin, smooth_loss), w)

    nums, dens = jax.lax.map(block, xs)
    return jnp.sum(nums), jnp.sum(dens)


def _sample_triplets(key, wp, wn, t):
    """``t`` random (positive, negative) index pairs per anchor, uniform over the selection."""
    kp, kn = jax.random.split(key)
    neg_inf = jnp.asarray(-jnp.inf, wp.dtype)
    lp = jnp.where(wp > 0, jnp.log(jnp.where(wp > 0, wp, 1.0)), neg_inf)
    ln = jnp.where(wn > 0, jnp.log(jnp.where(wn > 0, wn, 1.0)), neg_inf)
    p_idx = jax.random.categorical(kp, lp[:, None, :], axis=-1, shape=(wp.shape[0], t))
    n_idx = jax.random.categorical(kn, ln[:, None, :], axis=-1, shape=(wn.shape[0], t))
    valid = (jnp.any(wp > 0, axis=1) & jnp.any(wn > 0, axis=1))[:, None]
    return jnp.clip(p_idx, 0, wp.shape[1] - 1), jnp.clip(n_idx, 0, wn.shape[1] - 1), jnp.broadcast_to(valid, p_idx.shape)


def triplet_margin_loss(
    embeddings,
    labels_or_mask,
    *,
    margin=0.05,
    swap=False,
    smooth_loss=False,
    triplets_per_anchor="all",
    key=None,
    distance=LpDistance(),
    reduction="avg_nonzero",
    ref_emb=None,
    ref_labels=None,
    where=None,
    ref_where=None,
    axis_name=None,
):
    r"""Triplet margin loss (Weinberger & Saul 2009; Schroff et al., FaceNet, CVPR 2015):

    .. math::
        \ell_{apn} = [d_{ap} - d_{an} + \text{margin}]_+ \quad(\text{softplus if smooth\_loss})

    over all triplets (``triplets_per_anchor="all"``) or ``triplets_per_anchor`` random
    (positive, negative) draws per anchor, uniform with replacement, from PRNG ``key``. With
    ``swap`` (Balntas et al., BMVC 2016) :math:`d_{an}` is replaced by the smaller of
    :math:`d_{an}` and :math:`d_{pn}`. For similarities the sign flips (:math:`s_{an} - s_{ap}`).

    PML: ``TripletMarginLoss(margin=0.05, swap=False, smooth_loss=False,
    triplets_per_anchor="all")``, ``LpDistance()``, ``AvgNonZeroReducer`` over triplets.
    Deliberate difference: with ``swap`` and ``ref_emb``, :math:`d_{pn}` is the distance between
    the two references; PML reads the query row ``p`` instead (its index is a reference index).

    Returns:
      Scalar loss (``"none"``: the ``[B, R, R]`` per-triplet losses, or ``[B, t]`` when
      sampling).
    """
    fn = "triplet_margin_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn)
    if not (triplets_per_anchor == "all" or (isinstance(triplets_per_anchor, int) and triplets_per_anchor > 0)):
        raise ValueError(f"{fn}: `triplets_per_anchor` must be 'all' or a positive int; got {triplets_per_anchor!r}")
    check_choice(bool(swap), (True, False), "swap", fn=fn)
    b = _resolve.resolve(fn, embeddings, labels_or_mask, ref_emb=ref_emb, ref_labels=ref_labels, where=where, ref_where=ref_where, allow_triplets=True, axis_name=axis_name)
    mat = distance(b.emb, b.ref)
    sign = -1.0 if distance.is_inverted else 1.0
    x = sign * mat  # oriented so that the violation is x_ap - x_an + margin
    x_pn = None
    if swap:
        x_pn = x if b.same_set else sign * distance(b.ref, b.ref)

    if triplets_per_anchor != "all":
        if b.triplets is not None:
            raise ValueError(f"{fn}: `triplets_per_anchor` sampling needs labels or a PairMask, not a TripletMask")
        if key is None:
            raise ValueError(f"{fn}: `key` (a jax.random key) is required when `triplets_per_anchor` is an int")
        if axis_name is not None:  # independent draws on each device
            key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
        p_idx, n_idx, valid = _sample_triplets(key, b.pos, b.neg, triplets_per_anchor)
        x_ap = jnp.take_along_axis(x, p_idx, axis=1)
        x_an = jnp.take_along_axis(x, n_idx, axis=1)
        if x_pn is not None:
            x_an = jnp.minimum(x_an, x_pn[p_idx, n_idx])
        violation = x_ap - x_an + margin
        losses = jax.nn.softplus(violation) if smooth_loss else jax.nn.relu(violation)
        context = reduce.Context(labels=b.labels, anchor_weight=b.anchor_weight)
        return finish(reduce.apply(red, losses, valid.astype(x.dtype), axis_name, context=context), b.dtype)

    if not reduce.is_builtin(red):
        # "none" or a callable reducer needs every element: build the cube.
        w = b.triplets if b.triplets is not None else b.pos[:, :, None] * b.neg[:, None, :]
        context = reduce.Context(labels=b.labels, anchor_weight=b.anchor_weight)
        return finish(reduce.apply(red, _cube_terms(x, x, x_pn, margin, smooth_loss), w, axis_name, context=context), b.dtype)

    fast = b.triplets is None and not swap and not smooth_loss and red.high is None and red.low in (None, 0.0)
    if fast:
        num, den = _hinge_sorted(x, b.pos, x, b.neg, margin, nonzero_only=red.low is not None)
    else:
        num, den = _blocked_partial(red, x, b.pos, x, b.neg, b.triplets, x_pn, margin, smooth_loss)
    return finish(reduce.finalize(red, num, den, axis_name), b.dtype)
