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

The loss below is its terms and one engine call (``_src/engine.triplet_loss``), which reads
the selection whatever its form.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from jaxmetric._src import collectives, pairs as _pairs, triplets as _triplets
from jaxmetric import reduce
from jaxmetric._src.front_door import front_door
from jaxmetric._src.engine import triplet_loss
from jaxmetric._src.validate import check_choice, check_distance
from jaxmetric.distances import LpDistance
from jaxmetric.masks import TripletMask
from jaxmetric._src.numerics import finish

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, AxisName, LabelsOrMask, ReductionLike, Scalar
    from jaxmetric.distances import BaseDistance


def _hinge(x_ap, x_an, x_pn, margin):
    """``[x_ap - x_an + margin]_+``; with ``swap`` (``x_pn`` given) the closer of (a, n) and (p, n)."""
    return jax.nn.relu(x_ap - (x_an if x_pn is None else jnp.minimum(x_an, x_pn)) + margin)


def _soft_hinge(x_ap, x_an, x_pn, margin):
    """``softplus(x_ap - x_an + margin)`` (``smooth_loss``), swap as in :func:`_hinge`."""
    return jax.nn.softplus(x_ap - (x_an if x_pn is None else jnp.minimum(x_an, x_pn)) + margin)


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
    mask = b.triplet_mask
    if triplets_per_anchor != "all":
        if mask is not None:
            raise ValueError(f"{fn}: `triplets_per_anchor` sampling needs labels or a PairMask, not a TripletMask")
        if key is None:
            raise ValueError(f"{fn}: `key` (a jax.random key) is required when `triplets_per_anchor` is an int; got key=None")
        key = collectives.fold_in_device(key, axis_name)  # independent draws on each device
        p_idx, n_idx, valid = _triplets.sample_triplets(key, b.pos, b.neg, triplets_per_anchor)
        mask = TripletMask.from_lists(p_idx, n_idx, valid.astype(x.dtype), num_refs=x.shape[1])
    plain = not swap and not smooth_loss  # the hinge itself: sorted sums where the reduction allows
    value = triplet_loss(red, x, _soft_hinge if smooth_loss else _hinge, b.pos, b.neg, mask, x_pn=x_pn, params=(margin,),
                         hinge_margin=margin if plain else None, context=b.context, axis_name=axis_name)
    return finish(value, b.dtype)
