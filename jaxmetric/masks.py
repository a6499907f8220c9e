"""Typed, static-shape selections of pairs and triplets.

PML selects pairs and triplets as variable-length index tuples; jaxmetric uses arrays whose
shapes depend only on the batch: :class:`PairMask` holds ``[B, R]`` positive and negative
weights, :class:`TripletMask` holds triplet weights, either as a dense ``[B, R, R]`` array or in
a compact ``O(B R)`` form (candidate pairs plus a margin or angle rule, or per-anchor index
lists). A weight is a multiplicity: 0 leaves the pair out, 1 counts it once, 2 counts it twice
(what a PML index tuple that repeats a pair does), and a fraction in (0, 1) down-weights it
(multi-label Jaccard rules).

Both are pytrees, so they pass through ``jit``, ``vmap``, ``pmap`` and ``shard_map``, and
every loss accepts them in the labels slot. A raw array in that slot is always labels.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmetric._src import triplets as _triplets, validate
from jaxmetric import checks
from jaxmetric._src.front_door import front_door
from jaxmetric._src.selections import Selection
from jaxmetric.reduce import safe_divide

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import ArrayLike, DTypeLike


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PairMask(Selection):
    """Positive and negative pairs between ``B`` queries and ``R`` references.

    Attributes:
      pos: ``[B, R]`` bool or non-negative float weights of positive pairs (anchor, ref).
      neg: ``[B, R]`` bool or non-negative float weights of negative pairs.
      one_pair_per_anchor: static: True when, by construction, each anchor has at most one
        pair (its partner, positive or negative), as :func:`paired_mask` with
        ``other_pairs="ignore"`` builds. A loss whose every term contrasts a positive with a
        negative of the same anchor (``ntxent_loss``, ``supcon_loss``, triplet losses, ...)
        could never select a term with such a mask, and refuses it while tracing.
    """

    pos: jax.Array
    neg: jax.Array
    one_pair_per_anchor: bool = dataclasses.field(default=False, metadata=dict(static=True))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.pos.shape)

    def astype(self, dtype) -> "PairMask":
        return PairMask(jnp.asarray(self.pos).astype(dtype), jnp.asarray(self.neg).astype(dtype), self.one_pair_per_anchor)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TripletMask(Selection):
    """Selected (anchor, positive, negative) triplets, in one of four static-shape forms.

    A triplet ``(a, p, n)`` has an anchor ``a`` (a query row) and a positive ``p`` and negative
    ``n`` (reference rows); its weight is a multiplicity (0 = not selected). The form is fixed
    by which fields are set (see :attr:`form`); build one with the class methods.

    ============  ==========================================  ===============================
    form          fields                                      triplet weight
    ============  ==========================================  ===============================
    ``"dense"``   ``weights [B, R, R]``                       ``weights[a, p, n]``
    ``"margin"``  ``pos, neg, x [B, R]``, scalars ``lo, hi``  ``pos[a,p] neg[a,n]`` if
                                                              ``lo < x[a,n] - x[a,p] <= hi``
    ``"angle"``   ``pos, neg [B, R]``, ``query [B, D]``,      ``pos[a,p] neg[a,n]`` if the
                  ``ref [R, D]``, scalar ``angle`` (radians)  angle of (a, p, n) > ``angle``
    ``"list"``    ``p_idx, n_idx, weights [B, K]``, static    ``weights[a, k]`` for
                  ``num_refs``                                ``(a, p_idx[a,k], n_idx[a,k])``
    ============  ==========================================  ===============================

    The dense form costs ``B R^2`` memory (8 GB of bools at ``B = R = 2048``); the others cost
    ``O(B R)``. ``x`` in the margin form holds oriented distances (distances, or negated
    similarities), so ``x[a,n] - x[a,p]`` is PML's triplet margin ``d_an - d_ap`` (``s_ap - s_an``
    for similarities); the angle form is PML ``AngularMiner``'s rule
    ``atan(||a - p|| / (2 ||n - (a + p)/2||)) > angle`` on the raw ``query``/``ref`` rows.
    Losses read every form without building the cube where they can (pair conversion by
    sorting, triplet sums by sorting or by anchor blocks).

    A selection that factors per anchor (every chosen positive with every chosen negative of the
    same anchor) is better passed as a :class:`PairMask`, which triplet losses expand implicitly.
    ``TripletMask(w)`` with one positional array is the dense form, as before.
    """

    weights: jax.Array | None = None
    pos: jax.Array | None = None
    neg: jax.Array | None = None
    x: jax.Array | None = None
    lo: jax.Array | None = None
    hi: jax.Array | None = None
    query: jax.Array | None = None
    ref: jax.Array | None = None
    angle: jax.Array | None = None
    p_idx: jax.Array | None = None
    n_idx: jax.Array | None = None
    num_refs: int | None = dataclasses.field(default=None, metadata=dict(static=True))

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def dense(cls, weights) -> "TripletMask":
        """The dense form: ``weights[a, p, n]`` (bool or non-negative multiplicities)."""
        return cls(weights=jnp.asarray(weights))

    @classmethod
    def from_margin(cls, pos, neg, x, lo=-jnp.inf, hi=jnp.inf) -> "TripletMask":
        """The margin form: triplet ``(a, p, n)`` has weight ``pos[a, p] * neg[a, n]`` when
        ``lo < x[a, n] - x[a, p] <= hi`` (``x``: oriented distances ``[B, R]``)."""
        x = jnp.asarray(x)
        dt = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
        return cls(pos=jnp.asarray(pos), neg=jnp.asarray(neg), x=x, lo=jnp.asarray(lo, dt), hi=jnp.asarray(hi, dt))

    @classmethod
    def from_angle(cls, pos, neg, query, ref, angle) -> "TripletMask":
        """The angle form: weight ``pos[a, p] * neg[a, n]`` when
        ``atan(||q_a - r_p|| / (2 ||r_n - (q_a + r_p)/2||)) > angle`` (radians)."""
        query = jnp.asarray(query)
        return cls(pos=jnp.asarray(pos), neg=jnp.asarray(neg), query=query, ref=jnp.asarray(ref), angle=jnp.asarray(angle, query.dtype))

    @classmethod
    def from_lists(cls, p_idx, n_idx, weights=None, *, num_refs: int) -> "TripletMask":
        """The list form: anchor ``a`` has the triplets ``(a, p_idx[a, k], n_idx[a, k])`` with
        multiplicity ``weights[a, k]`` (default 1); ``num_refs`` is ``R``."""
        p_idx, n_idx = jnp.asarray(p_idx), jnp.asarray(n_idx)
        w = jnp.ones(p_idx.shape, jnp.float32) if weights is None else jnp.asarray(weights)
        return cls(weights=w, p_idx=p_idx, n_idx=n_idx, num_refs=int(num_refs))

    # -- inspection -----------------------------------------------------------------------
    @property
    def form(self) -> str:
        """``"dense"``, ``"margin"``, ``"angle"`` or ``"list"`` (static)."""
        if self.p_idx is not None:
            return "list"
        if self.x is not None:
            return "margin"
        if self.query is not None:
            return "angle"
        return "dense"

    @property
    def shape(self) -> tuple[int, int, int]:
        form = self.form
        if form == "dense":
            return tuple(self.weights.shape)
        if form == "list":
            return (self.p_idx.shape[0], self.num_refs, self.num_refs)
        b, r = self.pos.shape
        return (b, r, r)

    def without_bounds(self) -> "TripletMask":
        """``lo = -inf`` and ``hi = inf`` of the margin form are open ranges, not bad values."""
        return dataclasses.replace(self, lo=None, hi=None)

    # -- conversions ----------------------------------------------------------------------
    def to_pairs(self) -> PairMask:
        """PML's ``convert_to_pairs``: each triplet gives one positive pair ``(a, p)`` and one
        negative pair ``(a, n)``, duplicates counted. Never builds the cube for the margin and
        list forms (sorting: ``O(B R log R)`` time, ``O(B R)`` memory); the angle form is
        summed over anchor blocks."""
        form = self.form
        if form == "dense":
            w = as_float(jnp.asarray(self.weights))
            return PairMask(pos=jnp.sum(w, axis=2), neg=jnp.sum(w, axis=1))
        if form == "list":
            pos, neg = _triplets.list_pair_counts(self.p_idx, self.n_idx, as_float(self.weights), self.num_refs)
            return PairMask(pos=pos, neg=neg)
        pos, neg = float_pair(self.pos, self.neg, self.x if form == "margin" else self.query)
        if form == "margin":
            p, n = _triplets.margin_pair_counts(pos, neg, self.x, self.lo, self.hi)
        else:
            p, n = _triplets.angle_pair_counts(pos, neg, self.query, self.ref, self.angle)
        return PairMask(pos=p, neg=n)

    def anchor_blocks(self):
        """``(weights_of, rows, shared)``: the dense float weights of a block of anchors are
        ``weights_of(*(r[block] for r in rows), *shared)``, ``[blk, R, R]``. A triplet loss
        sums over anchor blocks with it, whatever the form, without the whole cube."""
        form = self.form
        if form == "dense":
            return _same, (as_float(jnp.asarray(self.weights)),), ()
        if form == "list":
            return _triplets.list_cube, (self.p_idx, self.n_idx, as_float(self.weights)), (self.num_refs,)
        if form == "margin":
            return _triplets.margin_cube, (*float_pair(self.pos, self.neg, self.x), self.x), (self.lo, self.hi)
        pos, neg = float_pair(self.pos, self.neg, self.query)
        return _triplets.angle_cube, (pos, neg, self.query), (self.ref, self.angle)

    def to_dense(self) -> jax.Array:
        """The ``[B, R, R]`` weights (float). Memory ``B R^2``: for inspection and small batches."""
        weights_of, rows, shared = self.anchor_blocks()
        return weights_of(*rows, *shared)


def _same(weights):
    return weights


def as_float(w: jax.Array) -> jax.Array:
    return w if jnp.issubdtype(w.dtype, jnp.floating) else w.astype(jnp.float32)


def float_pair(pos, neg, like):
    dt = like.dtype if jnp.issubdtype(like.dtype, jnp.floating) else jnp.float32
    dt = jnp.promote_types(dt, jnp.float32)
    return jnp.asarray(pos).astype(dt), jnp.asarray(neg).astype(dt)


PAIR_RULES = ("any", "exact", "jaccard", "dice", "cosine", "shared_count")
_WEIGHTED_RULES = ("jaccard", "dice", "cosine")
NEGATIVE_RULES = ("complement", "disjoint")


def _overlap_stats(labels: jax.Array, ref_labels: jax.Array):
    """``shared[i, j] = |y_i ∧ y_j|`` and the label-set sizes ``|y_i|``, ``|y_j|`` (float32,
    float64 for float64 labels)."""
    dtype = validate.compute_dtype(labels, ref_labels)
    a = labels.astype(dtype)
    r = ref_labels.astype(dtype)
    shared = a @ r.T
    return shared, jnp.sum(a, axis=1)[:, None], jnp.sum(r, axis=1)[None, :]


def _rule_similarity(rule: str, shared, na, nr):
    """Jaccard, Dice or cosine similarity of multi-hot rows; 0 where both sets are empty."""
    if rule == "jaccard":
        return safe_divide(shared, na + nr - shared)
    if rule == "dice":
        return safe_divide(2.0 * shared, na + nr)
    # cosine of the 0/1 vectors: |a ∧ b| / sqrt(|a| |b|)
    prod = na * nr
    ok = prod > 0
    return jnp.where(ok, shared / jnp.sqrt(jnp.where(ok, prod, 1.0)), 0.0)


@front_door(nonfinite=False)
def pair_mask(
    labels: ArrayLike, ref_labels: ArrayLike | None = None, *, where: ArrayLike | None = None,
    ref_where: ArrayLike | None = None, exclude_self: bool | None = None, rule: str = "any",
    threshold: float | None = None, weighted: bool = True, negatives: str = "complement",
) -> PairMask:
    """Builds the :class:`PairMask` of all positive and negative pairs from labels.

    Args:
      labels: class ids ``[B]`` (integer) or multi-hot ``[B, C]`` ({0, 1}, bool/int/float).
      ref_labels: labels of the reference set ``[R]`` / ``[R, C]``; ``None`` compares
        ``labels`` with itself.
      where, ref_where: optional bool ``[B]`` / ``[R]`` marking real rows; pairs touching a
        padded row are neither positive nor negative.
      exclude_self: drop the diagonal ``(i, i)`` from both masks. Defaults to True when
        ``ref_labels`` is None (a sample is never its own positive) and False otherwise
        (PML only drops it when the reference *is* the query set).
      rule: how multi-hot rows ``a = y_i``, ``b = y_j`` pair up (class ids: positive when
        equal, for every rule):

        ==================  ======================================================  ==========
        rule                positive when                                           pos weight
        ==================  ======================================================  ==========
        ``"any"``           ``|a ∧ b| >= 1`` (share a label; the default)           1
        ``"exact"``         ``a == b`` (same label set; two empty sets are equal)   1
        ``"jaccard"``       ``J = |a ∧ b| / |a ∨ b| >= threshold`` and ``J > 0``    ``J``
        ``"dice"``          ``D = 2|a ∧ b| / (|a| + |b|) >= threshold``, ``D > 0``  ``D``
        ``"cosine"``        ``K = |a ∧ b| / sqrt(|a||b|) >= threshold``, ``K > 0``  ``K``
        ``"shared_count"``  ``|a ∧ b| >= threshold`` (an integer, default 1)        1
        ==================  ======================================================  ==========

      threshold: the rule's minimum (``None``: any overlap, i.e. similarity > 0 or one shared
        label). Only for ``"jaccard"``, ``"dice"``, ``"cosine"`` (a float in [0, 1]) and
        ``"shared_count"`` (an integer >= 1). May be a traced value.
      weighted: for ``"jaccard"``, ``"dice"``, ``"cosine"``: positives carry the similarity
        as a float weight in (0, 1] (True, the default) or weight 1 (False; thresholded
        positives, MultiSupCon's ``multi=False``).
      negatives: ``"complement"`` (default): every pair that is not positive is negative
        (MultiSupCon's convention); ``"disjoint"``: only pairs sharing no label are negative,
        pairs that overlap below the threshold are left out of both masks. For ``"any"`` the
        two coincide.

    Returns:
      ``PairMask`` of shape ``[B, R]``: bool ``pos`` and ``neg``, except a float ``pos``
      (float32; float64 for float64 labels) for the weighted rules with ``weighted=True``.
    """
    fn = "pair_mask"
    validate.check_choice(rule, PAIR_RULES, "rule", fn=fn)
    validate.check_choice(negatives, NEGATIVE_RULES, "negatives", fn=fn)
    if threshold is not None:
        if rule in ("any", "exact"):
            raise ValueError(f"{fn}: `threshold` is only used by rules 'jaccard', 'dice', 'cosine' and 'shared_count'; got threshold={threshold!r} with rule={rule!r}")
        if isinstance(threshold, (int, float)):
            if rule == "shared_count" and not (threshold >= 1 and float(threshold).is_integer()):
                raise ValueError(f"{fn}: `threshold` for rule 'shared_count' must be an integer >= 1; got {threshold!r}")
            if rule != "shared_count" and not 0.0 <= threshold <= 1.0:
                raise ValueError(f"{fn}: `threshold` for rule {rule!r} must be in [0, 1]; got {threshold!r}")
    if not hasattr(labels, "shape"):
        labels = jnp.asarray(labels)
    if labels.ndim not in (1, 2):
        raise ValueError(
            f"{fn}: `labels` must be class ids [B] or multi-hot [B, C]; got shape {tuple(labels.shape)}"
        )
    labels = validate.check_labels(labels, labels.shape[0], "labels", fn=fn)
    same_set = ref_labels is None
    if same_set:
        ref_labels = labels
        if ref_where is None:
            ref_where = where
    else:
        if not hasattr(ref_labels, "shape"):
            ref_labels = jnp.asarray(ref_labels)
        ref_labels = validate.check_labels(ref_labels, ref_labels.shape[0], "ref_labels", fn=fn)
        if ref_labels.ndim != labels.ndim or (labels.ndim == 2 and ref_labels.shape[1] != labels.shape[1]):
            raise ValueError(
                f"{fn}: `ref_labels` must be of the same kind as `labels` ({'[R]' if labels.ndim == 1 else f'[R, {labels.shape[1]}]'}); "
                f"got shape {tuple(ref_labels.shape)}"
            )
    if exclude_self is None:
        exclude_self = same_set
    where = validate.check_where(where, labels.shape[0], "where", fn=fn)
    ref_where = validate.check_where(ref_where, ref_labels.shape[0], "ref_where", fn=fn)

    if labels.ndim == 1:
        pos = labels[:, None] == ref_labels[None, :]
        neg = ~pos
    else:
        shared, na, nr = _overlap_stats(labels, ref_labels)
        if rule == "any":
            pos = shared > 0
        elif rule == "exact":
            pos = (shared == na) & (shared == nr)  # a == b  <=>  |a ∧ b| = |a| = |b| (no [B, R, C])
        elif rule == "shared_count":
            pos = shared >= (1.0 if threshold is None else threshold)
        else:
            sim = _rule_similarity(rule, shared, na, nr)
            pos = sim > 0
            if threshold is not None:
                pos = pos & (sim >= threshold)
            if weighted:
                pos = jnp.where(pos, sim, 0.0)
        if negatives == "disjoint":
            neg = shared == 0
            if rule == "exact":
                neg = neg & ~pos  # two empty label sets are equal: positive, not negative
        else:
            neg = ~(pos > 0)
    valid = jnp.ones(neg.shape, bool)
    if exclude_self:
        if neg.shape[0] != neg.shape[1]:
            raise ValueError(f"{fn}: `exclude_self=True` needs a square mask; got shape {neg.shape}")
        valid = valid & ~jnp.eye(neg.shape[0], dtype=bool)
    if where is not None:
        valid = valid & where[:, None]
    if ref_where is not None:
        valid = valid & ref_where[None, :]
    if pos.dtype == jnp.bool_:
        pos = pos & valid
    else:
        pos = jnp.where(valid, pos, 0.0)
    return PairMask(pos=pos, neg=neg & valid)


def _check_index_array(x, name: str, fn: str, bound: int, bound_name: str) -> jax.Array:
    """A 1-D integer index array with entries in ``[0, bound)`` or -1 (padding); the range is
    checked when the indices are concrete (traced ones: see :func:`from_indices`)."""
    if not hasattr(x, "shape"):
        x = jnp.asarray(x)
    if x.ndim != 1 or not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{fn}: `{name}` must be a 1-D integer index array; got shape {tuple(x.shape)} dtype {x.dtype}")
    if validate.is_concrete(x) and x.size:
        v = np.asarray(x)
        bad = np.flatnonzero((v < -1) | (v >= bound))
        if bad.size:
            raise ValueError(
                f"{fn}: `{name}` must hold indices in [0, {bound}) or -1 (padding); got {v[bad[0]].item()} at "
                f"position {bad[0].item()} ({bound_name} = {bound})"
            )
    return x


def _in_range(x, bound):
    return (x >= -1) & (x < bound)


def _check_lengths(fn, arrays, names):
    first = arrays[0].shape[0]
    for x, name in zip(arrays[1:], names[1:]):
        if x.shape[0] != first:
            raise ValueError(
                f"{fn}: `{name}` must have the length of `{names[0]}` ({first}: one entry per pair or triplet); "
                f"got length {x.shape[0]}"
            )


def _scatter_counts(rows, cols, shape, dtype):
    # -1 marks padding (a static maximum length): padded entries add nothing.
    valid = (rows >= 0) & (cols >= 0)
    counts = jnp.zeros(shape, dtype)
    return counts.at[jnp.where(valid, rows, 0), jnp.where(valid, cols, 0)].add(valid.astype(dtype))


def _check_size(value, name: str, fn: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{fn}: `{name}` must be a positive int (it fixes the mask's shape); got {value!r}")
    return int(value)


@front_door(nonfinite=False)
def from_indices(
    indices_tuple: Sequence[jax.Array], batch_size: int, num_refs: int | None = None, *,
    dtype: DTypeLike = jnp.float32,
) -> PairMask | TripletMask:
    """Converts a PML ``indices_tuple`` into a mask, so PML code ports line by line.

    ``(a1, p, a2, n)`` gives a :class:`PairMask` of pair counts; ``(a, p, n)`` gives a
    :class:`TripletMask` of triplet counts. Anchors index the ``batch_size`` embeddings;
    positives and negatives index the ``num_refs`` references (default: the embeddings; for
    pairs concatenated as ``jnp.concatenate([x1, x2])`` that is ``2 * len(x1)``). Entries equal
    to -1 are padding and ignored, so a tuple can have a static maximum length. ``a1`` and
    ``p`` (``a2`` and ``n``; ``a``, ``p`` and ``n``) must have equal lengths.

    Any other index outside ``[0, batch_size)`` (``[0, num_refs)``) is an error: a
    ``ValueError`` naming the tuple element, the index and the size, when the indices are
    concrete. Traced indices (inside ``jit``) cannot be checked while tracing: an out-of-range
    one makes every weight of the mask NaN (float ``dtype``), so the loss is NaN rather than
    silently smaller; :func:`jaxmetric.checkify_finite` around the function that calls
    ``from_indices`` turns it into a located checkify error instead::

        def step(emb, a, p, n):
            return jaxmetric.triplet_margin_loss(emb, jaxmetric.from_indices((a, p, n), emb.shape[0]))

        err, loss = jax.jit(jaxmetric.checkify_finite(step))(emb, a, p, n)
        err.throw()  # from_indices: `p` must hold indices in [0, 16) or -1 (padding); got 99 ...
    """
    fn = "from_indices"
    batch_size = _check_size(batch_size, "batch_size", fn)
    refs_name = "batch_size" if num_refs is None else "num_refs"
    num_refs = batch_size if num_refs is None else _check_size(num_refs, "num_refs", fn)
    if hasattr(indices_tuple, "ndim") and indices_tuple.ndim == 2:  # a stacked [3 or 4, k] array
        indices_tuple = tuple(indices_tuple)
    if not isinstance(indices_tuple, (tuple, list)) or len(indices_tuple) not in (3, 4):
        got = f"a {type(indices_tuple).__name__} of length {len(indices_tuple)}" if isinstance(indices_tuple, (tuple, list)) else f"a {type(indices_tuple).__name__}"
        raise ValueError(f"{fn}: `indices_tuple` must be (a1, p, a2, n) or (a, p, n); got {got}")
    names = ("a1", "p", "a2", "n") if len(indices_tuple) == 4 else ("a", "p", "n")
    bounds = {"a1": (batch_size, "batch_size"), "a2": (batch_size, "batch_size"), "a": (batch_size, "batch_size")}
    arrays = [
        _check_index_array(x, nm, fn, *bounds.get(nm, (num_refs, refs_name))) for x, nm in zip(indices_tuple, names)
    ]
    if len(arrays) == 4:
        _check_lengths(fn, arrays[:2], names[:2])
        _check_lengths(fn, arrays[2:], names[2:])
    else:
        _check_lengths(fn, arrays, names)
    # Traced indices: an out-of-range entry poisons the mask (NaN weights) instead of vanishing.
    traced = [(x, nm) for x, nm in zip(arrays, names) if not validate.is_concrete(x)]
    ok = None
    for x, nm in traced:
        bound, bound_name = bounds.get(nm, (num_refs, refs_name))
        good = _in_range(x, bound)
        checks.check_indices(good, x, nm, bound, bound_name, fn)
        ok = jnp.all(good) if ok is None else ok & jnp.all(good)

    def poisoned(w):
        if ok is None or not jnp.issubdtype(w.dtype, jnp.floating):
            return w
        return jnp.where(ok, w, jnp.nan)

    if len(arrays) == 4:
        a1, p, a2, n = arrays
        shape = (batch_size, num_refs)
        return PairMask(pos=poisoned(_scatter_counts(a1, p, shape, dtype)), neg=poisoned(_scatter_counts(a2, n, shape, dtype)))
    a, p, n = arrays
    valid = (a >= 0) & (p >= 0) & (n >= 0)
    w = jnp.zeros((batch_size, num_refs, num_refs), dtype)
    w = w.at[jnp.where(valid, a, 0), jnp.where(valid, p, 0), jnp.where(valid, n, 0)].add(valid.astype(dtype))
    return TripletMask(weights=poisoned(w))


@front_door(nonfinite=False)
def to_pairs(mask: PairMask | TripletMask) -> PairMask:
    """A :class:`PairMask` of the pairs a mask implies (triplets converted as PML does)."""
    if not isinstance(mask, (PairMask, TripletMask)):
        raise TypeError(f"to_pairs: `mask` must be a PairMask or a TripletMask; got {type(mask).__name__}")
    return mask.to_pairs() if isinstance(mask, TripletMask) else mask


PAIRED_OPTIONS = ("negative", "ignore")
PAIRED_LAYOUTS = ("concat", "cross")


@front_door(nonfinite=False)
def paired_mask(
    pair_labels: ArrayLike, *, other_pairs: str = "negative", same_side: str = "ignore", layout: str = "concat",
    where: ArrayLike | None = None,
) -> PairMask:
    """The :class:`PairMask` of explicitly paired data: ``x1[i]`` and ``x2[i]`` with a pair
    label ``pair_labels[i]`` in {0, 1} (1: a positive pair, 0: a negative pair).

    With ``layout="concat"`` (default) the mask is over the concatenated embeddings
    ``jnp.concatenate([x1, x2])`` (``[2B, 2B]``, both directions), to pass with them to any
    loss: ``contrastive_loss(jnp.concatenate([x1, x2]), paired_mask(y))``. With
    ``layout="cross"`` it is the ``[B, B]`` mask of queries ``x1`` against references ``x2``,
    to pass with ``ref_emb=x2``.

    ======================================  ===================================================
    pair                                    role
    ======================================  ===================================================
    ``(x1[i], x2[i])``, ``y[i] = 1``        positive
    ``(x1[i], x2[i])``, ``y[i] = 0``        negative
    ``(x1[i], x2[j])``, ``i != j``          ``other_pairs``: negative (in-batch negatives, the
                                            default) or ignored (only the explicit pairs count:
                                            the classic siamese contrastive loss)
    ``(x1[i], x1[j])``, ``(x2[i], x2[j])``  ``same_side``: ignored (default) or negative
                                            (SimCLR-style, both views as candidates); concat
                                            layout only
    ======================================  ===================================================

    Args:
      pair_labels: ``[B]`` bool or integer {0, 1} (or float 0./1.) pair labels.
      where: optional bool ``[B]`` marking real pairs; a padded pair and every pair touching
        its two rows is neither positive nor negative.

    Returns:
      ``PairMask`` with bool ``pos`` and ``neg``: ``[2B, 2B]`` (concat) or ``[B, B]`` (cross).
    """
    fn = "paired_mask"
    validate.check_choice(other_pairs, PAIRED_OPTIONS, "other_pairs", fn=fn)
    validate.check_choice(same_side, PAIRED_OPTIONS, "same_side", fn=fn)
    validate.check_choice(layout, PAIRED_LAYOUTS, "layout", fn=fn)
    if not hasattr(pair_labels, "shape"):
        pair_labels = jnp.asarray(pair_labels)
    if pair_labels.ndim != 1:
        raise ValueError(f"{fn}: `pair_labels` must be a 1-D array [B] of 0/1 pair labels; got shape {tuple(pair_labels.shape)}")
    if not (pair_labels.dtype == jnp.bool_ or jnp.issubdtype(pair_labels.dtype, jnp.number)):
        raise TypeError(f"{fn}: `pair_labels` must be bool, integer or float 0/1; got dtype {pair_labels.dtype}")
    if pair_labels.dtype != jnp.bool_ and validate.is_concrete(pair_labels):
        v = np.asarray(pair_labels)
        bad = ~((v == 0) | (v == 1))
        if bad.any():
            raise ValueError(f"{fn}: `pair_labels` must hold only 0 and 1; got shape {tuple(v.shape)} with value {v[bad].flat[0].item()!r}")
    b = pair_labels.shape[0]
    where = validate.check_where(where, b, "where", fn=fn)
    y = pair_labels.astype(bool)
    eye = jnp.eye(b, dtype=bool)
    cross_pos = eye & y[None, :]  # [i, i] with y[i] = 1 (y indexed by the column = row)
    cross_neg = eye & ~y[None, :]
    if other_pairs == "negative":
        cross_neg = cross_neg | ~eye
    valid = jnp.ones((b, b), bool) if where is None else where[:, None] & where[None, :]
    cross_pos, cross_neg = cross_pos & valid, cross_neg & valid
    # Only the explicit pairs: every anchor has its partner and nothing else (static).
    one_pair = other_pairs == "ignore" and (layout == "cross" or same_side == "ignore")
    if layout == "cross":
        return PairMask(pos=cross_pos, neg=cross_neg, one_pair_per_anchor=one_pair)
    side_neg = (~eye & valid) if same_side == "negative" else jnp.zeros((b, b), bool)
    no = jnp.zeros((b, b), bool)
    pos = jnp.block([[no, cross_pos], [cross_pos.T, no]])
    neg = jnp.block([[side_neg, cross_neg], [cross_neg.T, side_neg]])
    return PairMask(pos=pos, neg=neg, one_pair_per_anchor=one_pair)
