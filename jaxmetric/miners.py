r"""Miners: embeddings (+ labels or a mask) -> a static-shape :class:`~jaxmetric.PairMask` or
:class:`~jaxmetric.TripletMask`.

PML's miners return variable-length index tuples; a jaxmetric miner returns a mask whose shape
depends only on the batch, so it jits, vmaps and never syncs with the host. Every loss accepts a
mined mask in the labels slot, as PML's losses accept an ``indices_tuple``:

.. code-block:: python

    mined = jaxmetric.batch_hard_miner(emb, labels)
    loss = jaxmetric.triplet_margin_loss(emb, mined)

Common contract of every miner:

* ``labels_or_mask``: class ids ``[B]``, multi-hot ``[B, C]`` (positive = shares a label) or a
  :class:`PairMask` (your own pair definition; a :class:`TripletMask` is first converted to its
  pairs as PML's ``convert_to_pairs``). Mining selects among those pairs; the selected pairs keep
  their input weight (0/1 for labels, fractions for weighted pairs, counts for duplicates).
* ``distance`` (static), ``ref_emb``/``ref_labels`` (mine queries against a reference set, as
  PML), ``where``/``ref_where`` (padded rows are never selected).
* Computed under ``stop_gradient``: the mask carries no gradient, as PML mines under
  ``torch.no_grad``.
* Float hyperparameters may be traced; strategies, distances and sizes are static.
* Random miners take a PRNG ``key``.

Outputs: miners whose triplets factor per anchor (``batch_hard_miner``,
``batch_easy_hard_miner``) and pair miners return a :class:`PairMask`; ``triplet_margin_miner``
and ``angular_miner`` return a compact :class:`TripletMask` (pairs + rule, ``O(B R)`` memory);
``distance_weighted_miner`` and ``embeddings_already_packaged_as_triplets`` return its list form.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from jaxmetric._src import collectives, pairs as _pairs, triplets as _triplets, validate
from jaxmetric._src.front_door import front_door
from jaxmetric.distances import CosineSimilarity, LpDistance
from jaxmetric.masks import PairMask, TripletMask
from jaxmetric._src.validate import check_distance

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, AxisName, LabelsOrMask, Scalar
    from jaxmetric.distances import BaseDistance

__all__ = [
    "angular_miner",
    "batch_easy_hard_miner",
    "batch_hard_miner",
    "distance_weighted_miner",
    "embeddings_already_packaged_as_triplets",
    "hdc_miner",
    "multi_similarity_miner",
    "pair_margin_miner",
    "triplet_margin_miner",
    "uniform_histogram_miner",
]

_sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class _MinerInputs:
    """A miner's inputs, checked and resolved once, all gradient-free: the batch, the candidate
    pair weights ``pos``/``neg`` (``[B, R]``) and the distance matrix ``mat`` (None for a miner
    that computes no distance). ``n_local`` is set when the whole batch was gathered over
    ``axis_name``: :meth:`own_rows` then cuts a result down to this device's anchors."""

    batch: _pairs.Batch
    mat: jax.Array | None
    pos: jax.Array
    neg: jax.Array
    axis_name: AxisName | None = None
    n_local: int | None = None

    def select(self, pos_sel, neg_sel) -> PairMask:
        """The candidate pairs where ``pos_sel``/``neg_sel`` hold, with their input weights
        (``None``: every candidate pair of that side)."""
        return PairMask(pos=_keep(pos_sel, self.pos), neg=_keep(neg_sel, self.neg))

    def own_rows(self, out):
        """``out`` (mined on the gathered whole batch) reduced to this device's rows,
        ``[B_local, R_global]``; ``out`` itself when nothing was gathered whole."""
        if self.n_local is None:
            return out
        rows = functools.partial(collectives.local_rows, n_local=self.n_local, axis_name=self.axis_name)
        if isinstance(out, PairMask):
            return PairMask(pos=rows(out.pos), neg=rows(out.neg))
        return TripletMask.from_lists(rows(out.p_idx), rows(out.n_idx), rows(out.weights), num_refs=out.num_refs)


def _keep(sel, w):
    return w if sel is None else jnp.where(sel & (w > 0), w, jnp.zeros((), w.dtype))


def _miner_inputs(fn, distance, embeddings, labels_or_mask, ref_emb, ref_labels, where, ref_where, axis_name,
                  *, whole_batch: bool = False) -> _MinerInputs:
    """The one preamble of the miners: checks ``distance`` (None: no distance matrix) and the
    inputs, and resolves the candidate pairs.

    With ``axis_name`` the local rows are the anchors and the references are gathered
    (``[B_local, R_global]``). ``whole_batch`` is for the miners whose selection depends on
    statistics of every pair of the batch, or that draw at random: every input is gathered, the
    miner runs on the global batch (identical on every device, so equal to the single-device
    mask) and keeps this device's rows with :meth:`_MinerInputs.own_rows`."""
    if distance is not None:
        check_distance(distance, fn)
    n_local = None
    if whole_batch and axis_name is not None:
        n_local = validate.check_embeddings(embeddings, "embeddings", fn=fn).shape[0]
        embeddings, labels_or_mask, ref_emb, ref_labels, where, ref_where = _gather_whole_batch(
            fn, axis_name, embeddings, labels_or_mask, ref_emb, ref_labels, where, ref_where)
    b = _pairs.from_inputs(
        fn, embeddings, labels_or_mask, ref_emb=ref_emb, ref_labels=ref_labels, where=where, ref_where=ref_where,
        axis_name=None if n_local is not None else axis_name,  # a gathered batch is global already
    )
    mat = None if distance is None else distance(_sg(b.emb), _sg(b.ref))
    return _MinerInputs(batch=b, mat=mat, pos=_sg(b.pos), neg=_sg(b.neg), axis_name=axis_name, n_local=n_local)


def _gather_whole_batch(fn, axis_name, embeddings, labels_or_mask, ref_emb, ref_labels, where, ref_where):
    """Every device's rows of the miner inputs, gathered over ``axis_name``."""
    if isinstance(labels_or_mask, TripletMask):
        raise ValueError(
            f"{fn}: with `axis_name` pass labels or a PairMask (a TripletMask is not gathered); "
            "convert it first with `.to_pairs()`"
        )

    def g(x):
        return None if x is None else collectives.gather(_sg(jnp.asarray(x)), axis_name)

    lm = PairMask(pos=g(labels_or_mask.pos), neg=g(labels_or_mask.neg)) if isinstance(labels_or_mask, PairMask) else g(labels_or_mask)
    return g(embeddings), lm, g(ref_emb), g(ref_labels), g(where), g(ref_where)


def _check_lp2(distance, fn):
    check_distance(distance, fn)
    if not (isinstance(distance, LpDistance) and distance.p == 2 and distance.power == 1 and distance.normalize_embeddings):
        raise ValueError(
            f"{fn}: `distance` must be LpDistance(p=2, power=1, normalize_embeddings=True) (the formula "
            f"assumes unit-sphere Euclidean distances, as PML asserts); got {distance!r}"
        )


def _check_key(key, fn):
    if key is None:
        raise ValueError(f"{fn}: `key` (a jax.random key, e.g. jax.random.key(0)) is required: the miner samples; got key=None")
    return key


def _static_pos_int(value, name, fn):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{fn}: `{name}` must be a positive Python int (it fixes a shape); got {value!r}")


# --------------------------------------------------------------------------------------------
# Pair miners
# --------------------------------------------------------------------------------------------


@front_door(nonfinite=False)
def pair_margin_miner(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, pos_margin: Scalar = 0.2, neg_margin: Scalar = 0.8,
    distance: BaseDistance = LpDistance(), ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None,
    where: ArrayLike | None = None, ref_where: ArrayLike | None = None, axis_name: AxisName | None = None,
) -> PairMask:
    r"""Pairs that violate a margin: positives farther than ``pos_margin``, negatives closer
    than ``neg_margin``.

    .. math::
        P' = \{(a, p) \in P : d_{ap} > m_{pos}\},\qquad N' = \{(a, n) \in N : d_{an} < m_{neg}\}

    (for similarities: :math:`s_{ap} < m_{pos}`, :math:`s_{an} > m_{neg}`).

    PML: ``PairMarginMiner(pos_margin=0.2, neg_margin=0.8)``, ``LpDistance()``.

    Returns:
      :class:`PairMask` ``[B, R]``.

    ``axis_name``: mines the local anchors against the references gathered over the axis,
    ``[B_local, R_global]`` (:ref:`miners with axis_name <miners-axis-name>`).
    """
    fn = "pair_margin_miner"
    inputs = _miner_inputs(fn, distance, embeddings, labels_or_mask, ref_emb, ref_labels, where, ref_where, axis_name)
    if distance.is_inverted:
        return inputs.select(inputs.mat < pos_margin, inputs.mat > neg_margin)
    return inputs.select(inputs.mat > pos_margin, inputs.mat < neg_margin)


@front_door(nonfinite=False)
def multi_similarity_miner(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, epsilon: Scalar = 0.1,
    distance: BaseDistance = CosineSimilarity(), ref_emb: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None, where: ArrayLike | None = None, ref_where: ArrayLike | None = None,
    axis_name: AxisName | None = None,
) -> PairMask:
    r"""Multi-similarity pair mining (Wang et al., "Multi-Similarity Loss with General Pair
    Weighting for Deep Metric Learning", CVPR 2019). For similarities :math:`s`:

    .. math::
        P' = \{(a, p): s_{ap} - \epsilon < \max_{n \in N_a} s_{an}\},\qquad
        N' = \{(a, n): s_{an} + \epsilon > \min_{p \in P_a} s_{ap}\}

    (for distances: :math:`d_{ap} + \epsilon > \min_n d_{an}`, :math:`d_{an} - \epsilon <
    \max_p d_{ap}`). An anchor without negatives keeps no positive and vice versa.

    PML: ``MultiSimilarityMiner(epsilon=0.1)``, ``CosineSimilarity()``.

    ``axis_name``: mines the local anchors against the references gathered over the axis,
    ``[B_local, R_global]`` (:ref:`miners with axis_name <miners-axis-name>`).
    """
    fn = "multi_similarity_miner"
    inputs = _miner_inputs(fn, distance, embeddings, labels_or_mask, ref_emb, ref_labels, where, ref_where, axis_name)
    mat, pos, neg = inputs.mat, inputs.pos, inputs.neg
    inf = jnp.asarray(jnp.inf, mat.dtype)
    if distance.is_inverted:
        hardest_neg = jnp.max(jnp.where(neg > 0, mat, -inf), axis=1, keepdims=True)
        hardest_pos = jnp.min(jnp.where(pos > 0, mat, inf), axis=1, keepdims=True)
        pos_sel = mat - epsilon < hardest_neg
        neg_sel = mat + epsilon > hardest_pos
    else:
        hardest_neg = jnp.min(jnp.where(neg > 0, mat, inf), axis=1, keepdims=True)
        hardest_pos = jnp.max(jnp.where(pos > 0, mat, -inf), axis=1, keepdims=True)
        pos_sel = mat + epsilon > hardest_neg
        neg_sel = mat - epsilon < hardest_pos
    return inputs.select(pos_sel, neg_sel)


@functools.partial(jax.jit, static_argnames=("largest",))
def _weighted_top(vals, w, frac, largest: bool):
    """Keeps the first ``ceil(frac * sum(w))`` units of weight of the pairs ordered by ``vals``
    (largest or smallest first); a pair's weight is its multiplicity, so a duplicated pair can be
    cut in two exactly as a top-k over PML's list cuts a run of equal entries."""
    shape = vals.shape
    key = jnp.where(w > 0, -vals if largest else vals, jnp.inf).ravel()
    wf = jnp.where(w > 0, w, 0.0).ravel()
    order = jnp.argsort(key, stable=True)
    ws = wf[order]
    k = jnp.ceil(frac * jnp.sum(wf))
    before = jnp.cumsum(ws) - ws
    take = jnp.clip(k - before, 0.0, ws)
    return jnp.zeros_like(wf).at[order].set(take).reshape(shape)


@front_door(nonfinite=False)
def hdc_miner(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, filter_percentage: Scalar = 0.5,
    distance: BaseDistance = LpDistance(), ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None,
    where: ArrayLike | None = None, ref_where: ArrayLike | None = None, axis_name: AxisName | None = None,
) -> PairMask:
    r"""Hard-aware deeply cascaded mining (Yuan, Yang & Zhang, "Hard-Aware Deeply Cascaded
    Embedding", ICCV 2017): over the whole batch, keep the hardest
    :math:`\lceil f\,|P|\rceil` positive pairs (largest distances) and the hardest
    :math:`\lceil f\,|N|\rceil` negative pairs (smallest distances), :math:`f` =
    ``filter_percentage`` (similarities: the reverse).

    Cascades: PML keeps state (``set_idx_externally``); here pass the previous stage's mask as
    ``labels_or_mask`` and this stage filters within it (pair weights count as multiplicities,
    so a triplet mask's repeated pairs behave like PML's list).

    PML: ``HDCMiner(filter_percentage=0.5)``, ``LpDistance()``. ``ceil`` is taken in the compute
    dtype (float32 unless x64): it can differ from PML's float64 by one pair when
    ``filter_percentage * count`` lies within float32 rounding of an integer.

    ``axis_name``: mines the gathered global batch and keeps this device's rows,
    ``[B_local, R_global]`` (:ref:`miners with axis_name <miners-axis-name>`).
    """
    fn = "hdc_miner"
    if isinstance(filter_percentage, (int, float)) and not 0 <= filter_percentage <= 1:
        raise ValueError(f"{fn}: `filter_percentage` must be in [0, 1]; got {filter_percentage!r}")
    inputs = _miner_inputs(fn, distance, embeddings, labels_or_mask, ref_emb, ref_labels, where, ref_where, axis_name,
                           whole_batch=True)
    inv = distance.is_inverted
    return inputs.own_rows(PairMask(
        pos=_weighted_top(inputs.mat, inputs.pos, filter_percentage, largest=not inv),
        neg=_weighted_top(inputs.mat, inputs.neg, filter_percentage, largest=inv),
    ))


# --------------------------------------------------------------------------------------------
# Batch hard / easy-hard: per-anchor selections (PairMask)
# --------------------------------------------------------------------------------------------

_STRATEGIES = ("hard", "semihard", "easy", "all")


def _pick(mat, ok, xtype):
    """Per row: (value, index, found) of the min or max of ``mat`` over ``ok``."""
    if xtype == "min":
        m = jnp.where(ok, mat, jnp.inf)
        idx = jnp.argmin(m, axis=1)
    else:
        m = jnp.where(ok, mat, -jnp.inf)
        idx = jnp.argmax(m, axis=1)
    val = jnp.take_along_axis(m, idx[:, None], axis=1)[:, 0]
    return val, idx, jnp.any(ok, axis=1)


def _in_range(mat, val_range, name, fn):
    if val_range is None:
        return True
    if not isinstance(val_range, (tuple, list)) or len(val_range) != 2:
        raise ValueError(f"{fn}: `{name}` must be None or a (low, high) pair; got {val_range!r}")
    return (mat >= val_range[0]) & (mat <= val_range[1])


@front_door(nonfinite=False)
def batch_easy_hard_miner(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, pos_strategy: str = "easy",
    neg_strategy: str = "semihard", allowed_pos_range: tuple[float, float] | None = None,
    allowed_neg_range: tuple[float, float] | None = None, distance: BaseDistance = LpDistance(),
    ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None, where: ArrayLike | None = None,
    ref_where: ArrayLike | None = None, axis_name: AxisName | None = None,
) -> PairMask:
    r"""Per anchor, one positive and one negative chosen by a strategy (Xuan, Stylianou & Pless,
    "Improved Embeddings with Easy Positive Triplet Mining", WACV 2020; Hermans et al. 2017).

    For distances (similarities mirror it):

    * positives: ``"easy"`` = closest, ``"hard"`` = farthest, ``"semihard"`` = farthest one that
      is still closer than the chosen negative, ``"all"`` = every positive pair;
    * negatives: ``"hard"`` = closest, ``"easy"`` = farthest, ``"semihard"`` = closest one that
      is farther than the chosen positive, ``"all"`` = every negative pair;
    * ``allowed_pos_range`` / ``allowed_neg_range`` = ``(low, high)``: candidates outside
      ``[low, high]`` are dropped first.

    When neither side is ``"all"``, an anchor is kept only if it found both. The triplets are
    every selected positive with every selected negative of the same anchor, so the result is a
    :class:`PairMask` (``[B, R]``, no cube).

    PML: ``BatchEasyHardMiner(pos_strategy="easy", neg_strategy="semihard",
    allowed_pos_range=None, allowed_neg_range=None)``, ``LpDistance()``; PML's ``ValueError``\ s
    for unknown strategies, for both ``"semihard"``, and for ``"semihard"`` with ``"all"``. Ties
    pick the lowest index.

    ``axis_name``: mines the local anchors against the references gathered over the axis,
    ``[B_local, R_global]`` (:ref:`miners with axis_name <miners-axis-name>`).
    """
    fn = "batch_easy_hard_miner"
    _check_strategies(pos_strategy, neg_strategy, fn)
    inputs = _miner_inputs(fn, distance, embeddings, labels_or_mask, ref_emb, ref_labels, where, ref_where, axis_name)
    return _easy_hard(inputs, pos_strategy, neg_strategy, allowed_pos_range, allowed_neg_range, distance.is_inverted, fn)


def _check_strategies(pos_strategy, neg_strategy, fn):
    if pos_strategy not in _STRATEGIES or neg_strategy not in _STRATEGIES:
        raise ValueError(
            f"{fn}: `pos_strategy` and `neg_strategy` must each be one of {list(_STRATEGIES)}; "
            f"got pos_strategy={pos_strategy!r}, neg_strategy={neg_strategy!r}"
        )
    if pos_strategy == neg_strategy == "semihard":
        raise ValueError(f'{fn}: `pos_strategy` and `neg_strategy` cannot both be "semihard"')
    if (pos_strategy == "all" and neg_strategy == "semihard") or (neg_strategy == "all" and pos_strategy == "semihard"):
        raise ValueError(f'{fn}: "semihard" cannot be used in combination with "all"; got pos_strategy={pos_strategy!r}, neg_strategy={neg_strategy!r}')


def _easy_hard(inputs: _MinerInputs, pos_strategy, neg_strategy, allowed_pos_range, allowed_neg_range, inverted, fn) -> PairMask:
    """The per-anchor selection of :func:`batch_easy_hard_miner` (strategies checked), under
    the public name ``fn`` (for error messages)."""
    mat = inputs.mat
    far, near = ("min", "max") if inverted else ("max", "min")
    pos_x = {"hard": far, "semihard": far, "easy": near}.get(pos_strategy)
    neg_x = {"hard": near, "semihard": near, "easy": far}.get(neg_strategy)
    pos_ok = (inputs.pos > 0) & _in_range(mat, allowed_pos_range, "allowed_pos_range", fn)
    neg_ok = (inputs.neg > 0) & _in_range(mat, allowed_neg_range, "allowed_neg_range", fn)

    def semihard(ok, xtype, thr):
        # PML drops candidates on the wrong side of the other side's chosen distance.
        return ok & ((mat > thr[:, None]) if xtype == "min" else (mat < thr[:, None]))

    p_val = p_idx = p_found = n_val = n_idx = n_found = None
    if pos_strategy == "semihard" and neg_strategy != "all":
        n_val, n_idx, n_found = _pick(mat, neg_ok, neg_x)
        p_val, p_idx, p_found = _pick(mat, semihard(pos_ok, pos_x, n_val), pos_x)
    elif neg_strategy == "semihard" and pos_strategy != "all":
        p_val, p_idx, p_found = _pick(mat, pos_ok, pos_x)
        n_val, n_idx, n_found = _pick(mat, semihard(neg_ok, neg_x, p_val), neg_x)
    else:
        if pos_strategy != "all":
            p_val, p_idx, p_found = _pick(mat, pos_ok, pos_x)
        if neg_strategy != "all":
            n_val, n_idx, n_found = _pick(mat, neg_ok, neg_x)

    if pos_strategy != "all" and neg_strategy != "all":
        keep = p_found & n_found
        p_found, n_found = keep, keep

    def chosen(strategy, idx, found):
        # "all" keeps every candidate; otherwise the chosen reference of each anchor that found one.
        return None if strategy == "all" else jax.nn.one_hot(idx, mat.shape[1], dtype=bool) & found[:, None]

    return inputs.select(chosen(pos_strategy, p_idx, p_found), chosen(neg_strategy, n_idx, n_found))


@front_door(nonfinite=False)
def batch_hard_miner(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, allowed_pos_range: tuple[float, float] | None = None,
    allowed_neg_range: tuple[float, float] | None = None, distance: BaseDistance = LpDistance(),
    ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None, where: ArrayLike | None = None,
    ref_where: ArrayLike | None = None, axis_name: AxisName | None = None,
) -> PairMask:
    r"""Batch-hard mining (Hermans, Beyer & Leibe, "In Defense of the Triplet Loss for Person
    Re-Identification", 2017): per anchor the farthest positive and the closest negative
    (similarities: the least and the most similar), one triplet per anchor that has both.

    .. math::
        p^*(a) = \arg\max_{p \in P_a} d_{ap},\qquad n^*(a) = \arg\min_{n \in N_a} d_{an}

    Returned as a :class:`PairMask` with one positive and one negative per kept anchor: its only
    triplet per anchor is ``(a, p*, n*)``, so every loss sees exactly PML's triplets (pair losses
    the pairs ``(a, p*)``, ``(a, n*)``), in ``O(B R)`` memory.

    PML: ``BatchHardMiner()`` (``BatchEasyHardMiner("hard", "hard")``, whose range arguments it
    passes through), ``LpDistance()``.

    ``axis_name``: mines the local anchors against the references gathered over the axis,
    ``[B_local, R_global]`` (:ref:`miners with axis_name <miners-axis-name>`).
    """
    fn = "batch_hard_miner"
    inputs = _miner_inputs(fn, distance, embeddings, labels_or_mask, ref_emb, ref_labels, where, ref_where, axis_name)
    return _easy_hard(inputs, "hard", "hard", allowed_pos_range, allowed_neg_range, distance.is_inverted, fn)


# --------------------------------------------------------------------------------------------
# Triplet miners (compact TripletMask)
# --------------------------------------------------------------------------------------------

_TRIPLET_TYPES = ("all", "hard", "semihard", "easy")


@front_door(nonfinite=False)
def triplet_margin_miner(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, margin: Scalar = 0.2, type_of_triplets: str = "all",
    distance: BaseDistance = LpDistance(), ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None,
    where: ArrayLike | None = None, ref_where: ArrayLike | None = None, axis_name: AxisName | None = None,
) -> TripletMask:
    r"""Triplets by their margin :math:`t_{apn} = d_{an} - d_{ap}` (:math:`s_{ap} - s_{an}` for
    similarities), FaceNet-style (Schroff, Kalenichenko & Philbin, CVPR 2015):

    ============== ==============================
    ``"all"``      :math:`t \le m` (violate the margin)
    ``"hard"``     :math:`t \le \min(m, 0)`
    ``"semihard"`` :math:`0 < t \le m`
    ``"easy"``     :math:`t > m`
    ============== ==============================

    The result is the compact margin form of :class:`TripletMask`: the candidate pairs plus the
    oriented distances and the interval ``(lo, hi]`` of :math:`t`, ``O(B R)`` memory instead of
    PML's ``B R^2`` cube. Losses evaluate the rule by sorting (pair conversion, the default
    triplet hinge) or by anchor blocks.

    PML: ``TripletMarginMiner(margin=0.2, type_of_triplets="all")``, ``LpDistance()``.
    Deliberate difference: an unknown ``type_of_triplets`` raises (PML treats it as ``"all"``).

    ``axis_name``: mines the local anchors against the references gathered over the axis,
    ``[B_local, R_global]`` (:ref:`miners with axis_name <miners-axis-name>`).
    """
    fn = "triplet_margin_miner"
    validate.check_choice(type_of_triplets, _TRIPLET_TYPES, "type_of_triplets", fn=fn)
    inputs = _miner_inputs(fn, distance, embeddings, labels_or_mask, ref_emb, ref_labels, where, ref_where, axis_name)
    x = -inputs.mat if distance.is_inverted else inputs.mat
    dt = inputs.mat.dtype
    m = jnp.asarray(margin, dt)
    inf = jnp.asarray(jnp.inf, dt)
    lo, hi = {
        "all": (-inf, m),
        "hard": (-inf, jnp.minimum(m, 0.0)),
        "semihard": (jnp.zeros((), dt), m),
        "easy": (m, inf),
    }[type_of_triplets]
    return TripletMask.from_margin(inputs.pos, inputs.neg, x, lo, hi)


@front_door(nonfinite=False)
def angular_miner(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, angle: Scalar = 20, distance: BaseDistance = LpDistance(),
    ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None, where: ArrayLike | None = None,
    ref_where: ArrayLike | None = None, axis_name: AxisName | None = None,
) -> TripletMask:
    r"""Triplets whose angle at the negative exceeds ``angle`` degrees (Wang et al., "Deep
    Metric Learning with Angular Loss", ICCV 2017):

    .. math::
        \angle_{apn} = \arctan \frac{\lVert x_a - x_p\rVert}{2\,\lVert x_n - (x_a + x_p)/2\rVert} > \alpha

    computed on the raw (not normalised) embeddings with torch's ``pairwise_distance`` epsilon,
    as PML does. The condition couples ``p`` and ``n``, so it does not factor per anchor: the
    result is the angle form of :class:`TripletMask` (pairs + embeddings + threshold, ``O(B R)``
    memory), which losses evaluate by anchor blocks (``O(B R^2)`` time, ``O(block R^2)``
    memory).

    PML: ``AngularMiner(angle=20)``; distance must be ``LpDistance(p=2, power=1,
    normalize_embeddings=True)`` (asserted, as in PML).

    ``axis_name``: mines the local anchors against the references gathered over the axis,
    ``[B_local, R_global]`` (:ref:`miners with axis_name <miners-axis-name>`).
    """
    fn = "angular_miner"
    _check_lp2(distance, fn)
    # The angle is computed from the embeddings themselves: no distance matrix.
    inputs = _miner_inputs(fn, None, embeddings, labels_or_mask, ref_emb, ref_labels, where, ref_where, axis_name)
    b = inputs.batch
    rad = jnp.asarray(angle, b.dtype) * jnp.asarray(math.pi / 180.0, b.dtype)
    return TripletMask.from_angle(inputs.pos, inputs.neg, _sg(b.emb), _sg(b.ref), rad)


@front_door(nonfinite=False)
def embeddings_already_packaged_as_triplets(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask | None = None, *, ref_emb: ArrayLike | None = None,
    where: ArrayLike | None = None, ref_where: ArrayLike | None = None, axis_name: AxisName | None = None,
) -> TripletMask:
    """The batch is already ``(anchor, positive, negative)`` triplets: rows ``3i, 3i+1, 3i+2``.

    Returns the list form of :class:`TripletMask` with one triplet per anchor row ``3i``
    (``labels_or_mask`` is ignored, as in PML). ``where`` drops a triplet touching a padded row.

    PML: ``EmbeddingsAlreadyPackagedAsTriplets()``. The batch size must be a multiple of 3 (PML
    fails its output assertion otherwise).

    ``axis_name``: every device's rows are packaged triplets (its batch a multiple of 3); the
    indices then point into the references gathered over that axis (``num_refs = R_global``),
    as losses called with the same ``axis_name`` expect.
    """
    fn = "embeddings_already_packaged_as_triplets"
    emb = validate.check_embeddings(embeddings, "embeddings", fn=fn)
    bsz = emb.shape[0]
    if bsz % 3 != 0:
        raise ValueError(f"{fn}: `embeddings` must have a multiple of 3 rows (anchor, positive, negative); got shape {tuple(emb.shape)}")
    r = bsz
    if ref_emb is not None:
        r = validate.check_embeddings(ref_emb, "ref_emb", fn=fn).shape[0]
        if r < bsz:
            raise ValueError(f"{fn}: `ref_emb` must have at least {bsz} rows (positives and negatives index it); got {r}")
    where = validate.check_where(where, bsz, "where", fn=fn)
    ref_where = validate.check_where(ref_where if ref_emb is not None else where, r, "ref_where", fn=fn)
    a = jnp.arange(bsz)
    p_idx = jnp.minimum(a + 1, r - 1)[:, None]
    n_idx = jnp.minimum(a + 2, r - 1)[:, None]
    w = (a % 3 == 0).astype(jnp.float32)
    if where is not None:
        w = w * where
    if ref_where is not None:
        w = w * ref_where[p_idx[:, 0]] * ref_where[n_idx[:, 0]]
    if axis_name is not None:  # indices into the gathered references
        off = collectives.row_offset(r, axis_name)
        p_idx, n_idx, r = p_idx + off, n_idx + off, r * collectives.axis_size(axis_name)
    return TripletMask.from_lists(p_idx, n_idx, w[:, None], num_refs=r)


# --------------------------------------------------------------------------------------------
# Random miners
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("k",))
def _sample_rows(key, w, k: int):
    """``k`` indices per row drawn with replacement with probability proportional to ``w``
    (``[B, R]``, non-negative) by inverse-CDF search: ``O(B (R + k log R))`` time and memory.
    Rows with zero total weight return index 0 (the caller masks them)."""
    b, r = w.shape
    cdf = jnp.cumsum(w, axis=1)
    total = cdf[:, -1:]
    u = jax.random.uniform(key, (b, k), dtype=w.dtype) * total
    idx = _triplets.first_false(cdf, jnp.full((b,), r), u, "le")
    # Rounding can push u to the total: fall back to the last index with positive weight.
    last = r - 1 - jnp.argmax((w > 0)[:, ::-1], axis=1)
    return jnp.minimum(idx, last[:, None])


@front_door(nonfinite=False)
def distance_weighted_miner(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, cutoff: Scalar = 0.5, nonzero_loss_cutoff: Scalar = 1.4,
    key: Array | None = None, distance: BaseDistance = LpDistance(), ref_emb: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None, where: ArrayLike | None = None, ref_where: ArrayLike | None = None,
    axis_name: AxisName | None = None,
) -> TripletMask:
    r"""Distance-weighted sampling (Wu, Manmatha, Smola & Krähenbühl, "Sampling Matters in Deep
    Embedding Learning", ICCV 2017). Negatives are drawn with probability proportional to the
    inverse of the density of distances between points on the unit sphere of dimension
    :math:`D`:

    .. math::
        w_{an} \propto \exp\Big((2 - D)\log d - \tfrac{D - 3}{2}\log(1 - d^2/4)\Big),
        \quad d = \max(d_{an}, \text{cutoff}),

    with :math:`w_{an} = 0` for same-label pairs, for :math:`d \ge` ``nonzero_loss_cutoff`` and
    for non-finite log-weights. As PML's ``get_random_triplet_indices``: every anchor gets
    :math:`k_a` triplets (:math:`k_a` = size of its class among the references, the anchor
    included when there is no reference set), the positive uniform among its positives and the
    negative drawn from :math:`w_{a\cdot}`, with replacement; anchors without a positive or
    without a positive-weight negative get none.

    Returns the list form of :class:`TripletMask` with ``K = R`` slots per anchor (slot ``k`` is
    used when ``k < k_a``).

    PML: ``DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4)``; distance must be
    ``LpDistance(p=2, power=1, normalize_embeddings=True)``. The draw uses ``key`` (PRNGs differ
    from torch, so only the distribution matches). Deliberate difference: PML shifts the
    log-weights by one maximum over the whole batch, so in float32 every weight of an anchor
    whose negatives are all far can underflow to 0 and the anchor is dropped; jaxmetric shifts
    per anchor, which gives PML's float64 distribution.

    ``axis_name``: mines the gathered global batch and keeps this device's rows,
    ``[B_local, R_global]`` (:ref:`miners with axis_name <miners-axis-name>`).
    """
    fn = "distance_weighted_miner"
    _check_lp2(distance, fn)
    _check_key(key, fn)
    inputs = _miner_inputs(fn, distance, embeddings, labels_or_mask, ref_emb, ref_labels, where, ref_where, axis_name,
                           whole_batch=True)
    pos, neg = inputs.pos, inputs.neg
    d = float(inputs.batch.emb.shape[1])
    mat = jnp.maximum(inputs.mat, cutoff)
    # The log-density's domain is 0 < d < 2; rounding puts antipodal rows at 2.0000002 in
    # float32, and cutoff may be 0: take the logs only inside it (outside, log_w was not finite).
    arg = 1.0 - 0.25 * mat**2
    dom = (mat > 0) & (arg > 0)
    log_w = (2.0 - d) * jnp.log(jnp.where(dom, mat, 1.0)) - ((d - 3.0) / 2.0) * jnp.log(jnp.where(dom, arg, 1.0))
    ok = (neg > 0) & dom & jnp.isfinite(log_w) & (mat < nonzero_loss_cutoff)
    # Input negative weights (fractions for weighted pairs) scale the sampling weight.
    log_w = jnp.where(ok, log_w + jnp.log(jnp.where(ok, neg, 1.0)), -jnp.inf)
    row_max = jnp.max(log_w, axis=1, keepdims=True)
    has_neg = jnp.isfinite(row_max[:, 0])
    wn = jnp.where(ok, jnp.exp(log_w - jnp.where(has_neg[:, None], row_max, 0.0)), 0.0)
    n_pos = jnp.sum(pos > 0, axis=1)
    k_a = n_pos + (1 if inputs.batch.same_set else 0)
    anchor_ok = (n_pos > 0) & has_neg
    r = mat.shape[1]
    kp, kn = jax.random.split(key)
    p_idx = _sample_rows(kp, jnp.where(pos > 0, pos, 0.0), r)
    n_idx = _sample_rows(kn, wn, r)
    slot = jnp.arange(r)[None, :]
    w = ((slot < k_a[:, None]) & anchor_ok[:, None]).astype(mat.dtype)
    return inputs.own_rows(TripletMask.from_lists(p_idx, n_idx, w, num_refs=r))


@functools.partial(jax.jit, static_argnames=("num_bins", "per_bin"))
def _histogram_pairs(key, vals, w, num_bins: int, per_bin: int):
    """``per_bin`` draws with replacement from every non-empty bin of ``num_bins`` equal-width
    bins between the min and max of ``vals`` over ``w > 0`` (last bin closed). Returns the
    ``[B, R]`` draw counts times the pair weights."""
    shape = vals.shape
    v = vals.ravel()
    wf = w.ravel()
    valid = wf > 0
    vmin = jnp.min(jnp.where(valid, v, jnp.inf))
    vmax = jnp.max(jnp.where(valid, v, -jnp.inf))
    edges = jnp.linspace(vmin, vmax, num_bins + 1)
    bins = jnp.clip(jnp.searchsorted(edges, v, side="right") - 1, 0, num_bins - 1)
    bins = jnp.where(valid, bins, num_bins)
    order = jnp.argsort(bins, stable=True)
    counts = jnp.bincount(bins, length=num_bins + 1)[:num_bins]
    start = jnp.cumsum(counts) - counts
    j = jax.random.randint(key, (num_bins, per_bin), 0, jnp.maximum(counts, 1)[:, None])
    flat = order[jnp.clip(start[:, None] + j, 0, v.shape[0] - 1)]
    drawn = jnp.broadcast_to(counts[:, None] > 0, (num_bins, per_bin)).astype(wf.dtype)
    out = jnp.zeros_like(wf).at[flat.ravel()].add(drawn.ravel())
    return (out * jnp.where(valid, wf, 0.0)).reshape(shape)


@front_door(nonfinite=False)
def uniform_histogram_miner(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, num_bins: int = 100, pos_per_bin: int = 10,
    neg_per_bin: int = 10, key: Array | None = None, distance: BaseDistance = LpDistance(),
    ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None, where: ArrayLike | None = None,
    ref_where: ArrayLike | None = None, axis_name: AxisName | None = None,
) -> PairMask:
    r"""Pairs spread uniformly over the range of distances: the positive-pair distances are
    binned into ``num_bins`` equal-width bins between their minimum and maximum, and
    ``pos_per_bin`` pairs are drawn with replacement from every non-empty bin; the same for
    negatives with ``neg_per_bin``.

    Returns a :class:`PairMask` of draw counts (a pair drawn twice has weight 2, as it appears
    twice in PML's tuple). Time ``O(B R log(B R))``, memory ``O(B R)``.

    PML: ``UniformHistogramMiner(num_bins=100, pos_per_bin=10, neg_per_bin=10)``,
    ``LpDistance()``. The draw uses ``key``; only the distribution matches PML's.

    ``axis_name``: mines the gathered global batch and keeps this device's rows,
    ``[B_local, R_global]`` (:ref:`miners with axis_name <miners-axis-name>`).
    """
    fn = "uniform_histogram_miner"
    _static_pos_int(num_bins, "num_bins", fn)
    _static_pos_int(pos_per_bin, "pos_per_bin", fn)
    _static_pos_int(neg_per_bin, "neg_per_bin", fn)
    _check_key(key, fn)
    inputs = _miner_inputs(fn, distance, embeddings, labels_or_mask, ref_emb, ref_labels, where, ref_where, axis_name,
                           whole_batch=True)
    kp, kn = jax.random.split(key)
    return inputs.own_rows(PairMask(
        pos=_histogram_pairs(kp, inputs.mat, inputs.pos, num_bins, pos_per_bin),
        neg=_histogram_pairs(kn, inputs.mat, inputs.neg, num_bins, neg_per_bin),
    ))
