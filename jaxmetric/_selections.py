"""The two selection types, :class:`PairMask` and :class:`TripletMask` (pytrees), below every
other module: validation, the front door and the losses recognise them without importing the
public constructors of :mod:`jaxmetric.masks` (which re-exports them and documents them)."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxmetric import _triplets


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PairMask:
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
class TripletMask:
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

    def to_dense(self) -> jax.Array:
        """The ``[B, R, R]`` weights (float). Memory ``B R^2``: for inspection and small batches."""
        form = self.form
        if form == "dense":
            return as_float(jnp.asarray(self.weights))
        if form == "list":
            return _triplets.list_cube(self.p_idx, self.n_idx, as_float(self.weights), self.num_refs)
        pos, neg = float_pair(self.pos, self.neg, self.x if form == "margin" else self.query)
        if form == "margin":
            return _triplets.margin_cube(pos, neg, self.x, self.lo, self.hi)
        return _triplets.angle_cube(pos, neg, self.query, self.ref, self.angle)


def as_float(w: jax.Array) -> jax.Array:
    return w if jnp.issubdtype(w.dtype, jnp.floating) else w.astype(jnp.float32)


def float_pair(pos, neg, like):
    dt = like.dtype if jnp.issubdtype(like.dtype, jnp.floating) else jnp.float32
    dt = jnp.promote_types(dt, jnp.float32)
    return jnp.asarray(pos).astype(dt), jnp.asarray(neg).astype(dt)
