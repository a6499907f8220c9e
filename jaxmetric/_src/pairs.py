"""The pairs object of a batch: :func:`from_inputs` turns a loss's inputs ``(embeddings,
labels_or_mask, ref_emb, ref_labels, where, ref_where)`` into a :class:`Batch` (queries,
references gathered over ``axis_name``, ``[B, R]`` positive and negative pair weights,
validity, each anchor's own column); :func:`two_views` is the same for two-view losses, whose
positive pairs are the diagonal.

Shared by every embedding loss and miner so that validation, dtype policy, self-pair
exclusion and ``where`` handling are identical everywhere.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxmetric import reduce
from jaxmetric._src import collectives, validate
from jaxmetric.masks import PairMask, TripletMask, pair_mask


@dataclasses.dataclass(frozen=True)
class Batch:
    """Resolved inputs. ``pos``/``neg`` are ``[B, R]`` weights in the compute dtype.

    When the caller passed a :class:`TripletMask`: ``triplets`` is its ``[B, R, R]`` weight
    cube (``allow_triplets=True``), or ``triplet_mask`` is the mask itself in any form, with
    ``where``/``ref_where`` and self-pairs applied (``allow_triplets="mask"``; ``pos``/``neg``
    are then the pairs that can occur, not counts, for the margin and angle forms)."""

    emb: jax.Array
    ref: jax.Array
    pos: jax.Array
    neg: jax.Array
    anchor_weight: jax.Array  # [B]: 1 for real rows, 0 for padded rows
    ref_weight: jax.Array  # [R]
    same_set: bool  # the references are the embeddings themselves
    triplets: jax.Array | None = None
    triplet_mask: TripletMask | None = None
    labels: jax.Array | None = None
    ref_labels: jax.Array | None = None
    axis_name: Any = None  # references were gathered over this mapped axis
    self_cols: jax.Array | None = None  # [B]: each anchor's own column among the references

    def block_masks(self, rows: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(pos, neg, anchor_weight)`` for the anchor ``rows`` (``[blk]``; rows past the batch
        are padding and get zero weight). From labels, the ``[blk, R]`` masks are built on the
        spot, so a blocked loss never holds the ``[B, R]`` masks."""
        b = self.emb.shape[0]
        in_batch = rows < b
        rows = jnp.minimum(rows, b - 1)
        aw = self.anchor_weight[rows] * in_batch.astype(self.dtype)
        if self.labels is None:
            return self.pos[rows] * aw[:, None], self.neg[rows] * aw[:, None], aw
        m = pair_mask(self.labels[rows], self.ref_labels, exclude_self=False)
        valid = aw[:, None] * self.ref_weight[None, :]
        if self.self_cols is not None:
            valid = valid * _not_self(self.self_cols[rows], self.ref.shape[0], self.dtype)
        return m.pos.astype(self.dtype) * valid, m.neg.astype(self.dtype) * valid, aw

    @property
    def dtype(self):
        return self.emb.dtype

    @property
    def context(self) -> reduce.Context:
        """What a context reduction reads of the anchors: their labels and which rows are real."""
        return reduce.Context(labels=self.labels, anchor_weight=self.anchor_weight)


def _mask_array(x: Any, shape: tuple, name: str, fn: str, dtype, weights: bool = True) -> jax.Array:
    """``x`` checked to have ``shape`` and a bool/numeric dtype; ``weights``: also no negative
    entry (when concrete)."""
    if not hasattr(x, "shape"):
        x = jnp.asarray(x)
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{fn}: `{name}` must have shape {tuple(shape)} (queries x references); got shape {tuple(x.shape)}")
    if not (x.dtype == jnp.bool_ or jnp.issubdtype(x.dtype, jnp.number)):
        raise TypeError(f"{fn}: `{name}` must be bool or numeric weights; got dtype {x.dtype}")
    if weights:
        validate.check_weights(x, name, fn)
    return x.astype(dtype)


def from_inputs(
    fn: str, embeddings, labels_or_mask, *, ref_emb=None, ref_labels=None, where=None, ref_where=None,
    allow_triplets: bool | str = False, axis_name=None, contrast: bool = False,
) -> Batch:
    """Validates and resolves the common loss inputs.

    With ``allow_triplets=False`` a :class:`TripletMask` (any form) is converted to pair counts
    as PML's ``convert_to_pairs`` does, without the cube for the compact forms; with ``True``
    its dense cube is kept in ``Batch.triplets``; with ``"mask"`` the mask itself is kept in
    ``Batch.triplet_mask`` (for losses that read the compact forms).

    ``contrast``: every term of the loss compares a positive of an anchor with a negative of
    the same anchor, so a mask with one pair per anchor by construction
    (``PairMask.one_pair_per_anchor``) could never select a term: it is refused.

    With ``axis_name`` (inside ``pmap``, ``shard_map`` or ``vmap(axis_name=...)``) the local
    rows stay the anchors and the references (``embeddings`` themselves, or ``ref_emb``) with
    their labels and validity are gathered over the axis, so every anchor sees the global
    batch; a sample is still never its own positive. Masks passed in are then ``[B, R_global]``.
    """
    if allow_triplets not in (False, True, "mask"):
        raise ValueError(f"{fn}: internal: allow_triplets must be False, True or 'mask'; got {allow_triplets!r}")
    if contrast and isinstance(labels_or_mask, PairMask) and labels_or_mask.one_pair_per_anchor:
        raise ValueError(
            f"{fn}: `labels_or_mask` can never select a term: every term of {fn} compares a positive with a "
            "negative of the same anchor, and each anchor of this mask has one pair at most; got a PairMask with "
            "one_pair_per_anchor=True (e.g. paired_mask(..., other_pairs='ignore')). Use other_pairs='negative' "
            "(in-batch negatives) or same_side='negative', or a loss whose positive and negative terms stand "
            "alone (contrastive_loss)"
        )
    rows = _rows(fn, embeddings, ref_emb, ref_labels, where, ref_where, axis_name)
    if labels_or_mask is None:
        raise ValueError(f"{fn}: `labels_or_mask` is required: class ids [B], multi-hot [B, C], a PairMask or a TripletMask")
    pos, neg, triplets, tmask, lab, rlab = _pairs(fn, labels_or_mask, ref_labels, rows, allow_triplets, axis_name)
    return Batch(
        emb=rows.emb, ref=rows.ref, pos=pos, neg=neg, anchor_weight=rows.anchor_weight, ref_weight=rows.ref_weight,
        same_set=rows.same_set and axis_name is None, triplets=triplets, triplet_mask=tmask, labels=lab, ref_labels=rlab,
        axis_name=axis_name, self_cols=rows.self_cols,
    )


def two_views(fn: str, x, y, names=("x", "y"), where=None, params=()):
    """The two-view front door: ``x[i]`` and ``y[i]`` are two views of sample ``i`` (the
    positive pair is the diagonal). Checks both, the ``where`` mask and the learned scalar
    ``params`` (``(name, value)`` pairs); returns ``x, y, row weights, dtype, params`` in the
    compute dtype."""
    x = validate.check_embeddings(x, names[0], fn=fn)
    y = validate.check_embeddings(y, names[1], fn=fn)
    if x.shape != y.shape:
        raise ValueError(f"{fn}: `{names[1]}` must have the shape of `{names[0]}`, {tuple(x.shape)}; got shape {tuple(y.shape)}")
    dtype = validate.compute_dtype(x, y)
    where = validate.check_where(where, x.shape[0], "where", fn=fn)
    w = jnp.ones((x.shape[0],), dtype) if where is None else where.astype(dtype)
    out = []
    for name, p in params:
        p = jnp.asarray(p)
        if p.ndim != 0:
            raise ValueError(f"{fn}: `{name}` must be a scalar; got shape {tuple(p.shape)}")
        if not jnp.issubdtype(p.dtype, jnp.floating):
            raise TypeError(f"{fn}: `{name}` must be a float scalar; got dtype {p.dtype}")
        out.append(p.astype(dtype))
    return x.astype(dtype), y.astype(dtype), w, dtype, out



@dataclasses.dataclass(frozen=True)
class _Rows:
    """The checked rows of a batch: queries and references (gathered over ``axis_name``) in
    the compute dtype, their validity weights, and each anchor's own column among the
    references (None when the reference set is another one: no self-pairs)."""

    emb: jax.Array
    ref: jax.Array
    anchor_weight: jax.Array
    ref_weight: jax.Array
    self_cols: jax.Array | None
    same_set: bool
    r_local: int
    dtype: Any


def _rows(fn, embeddings, ref_emb, ref_labels, where, ref_where, axis_name) -> _Rows:
    embeddings = validate.check_embeddings(embeddings, "embeddings", fn=fn)
    same_set = ref_emb is None
    if same_set:
        ref = embeddings
    else:
        ref = validate.check_embeddings(ref_emb, "ref_emb", fn=fn)
        if ref.shape[1] != embeddings.shape[1]:
            raise ValueError(
                f"{fn}: `ref_emb` must have the embedding dim {embeddings.shape[1]}; got shape {tuple(ref.shape)}"
            )
    dtype = validate.compute_dtype(embeddings, None if same_set else ref)
    emb = embeddings.astype(dtype)
    ref = emb if same_set else ref.astype(dtype)
    b, r = emb.shape[0], ref.shape[0]
    where = validate.check_where(where, b, "where", fn=fn)
    if same_set:
        if ref_where is not None:
            raise ValueError(f"{fn}: `ref_where` needs `ref_emb`; without a reference set use `where` alone")
        if ref_labels is not None:
            raise ValueError(f"{fn}: `ref_labels` needs `ref_emb`; got ref_labels without ref_emb (the batch is its own reference set)")
        ref_where = where
    else:
        ref_where = validate.check_where(ref_where, r, "ref_where", fn=fn)
    anchor_weight = jnp.ones((b,), dtype) if where is None else where.astype(dtype)
    ref_weight = jnp.ones((r,), dtype) if ref_where is None else ref_where.astype(dtype)
    self_cols = collectives.global_rows(b, axis_name) if same_set else None
    return _Rows(emb, collectives.gather(ref, axis_name), anchor_weight, collectives.gather(ref_weight, axis_name),
                 self_cols, same_set, r, dtype)


def _pairs(fn, labels_or_mask, ref_labels, rows: _Rows, allow_triplets, axis_name):
    """``(pos, neg, triplets, triplet_mask, labels, ref_labels)``: the ``[B, R]`` pair weights
    of a mask or of labels, restricted to valid rows and without self-pairs."""
    dtype = rows.dtype
    b, r = rows.emb.shape[0], rows.ref.shape[0]
    valid = rows.anchor_weight[:, None] * rows.ref_weight[None, :]
    if rows.self_cols is not None:
        not_self = _not_self(rows.self_cols, r, dtype)
    if isinstance(labels_or_mask, PairMask):
        if ref_labels is not None:
            raise ValueError(f"{fn}: `ref_labels` is only used with labels; a PairMask already says which pairs count")
        pos = _mask_array(labels_or_mask.pos, (b, r), "PairMask.pos", fn, dtype) * valid
        neg = _mask_array(labels_or_mask.neg, (b, r), "PairMask.neg", fn, dtype) * valid
        if rows.self_cols is not None:
            pos = pos * not_self
        return pos, neg, None, None, None, None
    if isinstance(labels_or_mask, TripletMask):
        if ref_labels is not None:
            raise ValueError(f"{fn}: `ref_labels` is only used with labels; a TripletMask already says which pairs count")
        tm = restrict_triplets(labels_or_mask, b, r, rows.anchor_weight, rows.ref_weight, rows.self_cols, fn, dtype)
        if allow_triplets == "mask" and tm.form in ("margin", "angle"):
            return tm.pos, tm.neg, None, tm, None, None
        triplets = tm.to_dense().astype(dtype) if allow_triplets is True else None
        pairs = tm.to_pairs()
        return pairs.pos.astype(dtype), pairs.neg.astype(dtype), triplets, (tm if allow_triplets == "mask" else None), None, None
    lab = validate.check_labels(labels_or_mask, b, "labels", fn=fn)
    if rows.same_set:
        rlab = lab
    else:
        if ref_labels is None:
            raise ValueError(f"{fn}: `ref_labels` is required with `ref_emb` when labels are given (or pass a PairMask)")
        rlab = validate.check_labels(ref_labels, rows.r_local, "ref_labels", fn=fn)
        if rlab.ndim != lab.ndim or (lab.ndim == 2 and rlab.shape[1] != lab.shape[1]):
            raise ValueError(
                f"{fn}: `ref_labels` must be of the same kind as `labels` (shape {tuple(lab.shape)}); "
                f"got shape {tuple(rlab.shape)}"
            )
    rlab = collectives.gather(rlab, axis_name)
    m = pair_mask(lab, rlab, exclude_self=False)
    if rows.self_cols is not None:
        valid = valid * not_self
    return m.pos.astype(dtype) * valid, m.neg.astype(dtype) * valid, None, None, lab, rlab


def _scalar(x: Any, name: str, fn: str, dtype) -> jax.Array:
    x = jnp.asarray(x)
    if x.shape != ():
        raise ValueError(f"{fn}: `{name}` must be a scalar; got shape {tuple(x.shape)}")
    return x.astype(dtype)


def restrict_triplets(m: TripletMask, b: int, r: int, anchor_weight, ref_weight, self_cols, fn: str, dtype) -> TripletMask:
    """Validates a :class:`TripletMask` of any form against ``B`` queries and ``R`` references,
    casts it to ``dtype`` and removes triplets that touch a padded row (``where``) or use the
    anchor as its own positive (``self_cols``: each anchor's own reference column, or None when
    the references are another set). The form is kept."""
    form = m.form
    valid = anchor_weight[:, None] * ref_weight[None, :]
    same_set = self_cols is not None
    not_self = _not_self(self_cols, r, dtype) if same_set else None
    if form == "dense":
        cube = _mask_array(m.weights, (b, r, r), "TripletMask.weights", fn, dtype)
        cube = cube * anchor_weight[:, None, None] * ref_weight[None, :, None] * ref_weight[None, None, :]
        if same_set:
            cube = cube * not_self[:, :, None]  # a sample is never its own positive
        return TripletMask(weights=cube)
    if form == "list":
        if m.num_refs != r:
            raise ValueError(f"{fn}: a list-form TripletMask must have `num_refs` = {r} (the number of references); got {m.num_refs}")
        for name, idx in (("p_idx", m.p_idx), ("n_idx", m.n_idx)):
            if not hasattr(idx, "shape") or idx.ndim != 2 or idx.shape[0] != b or not jnp.issubdtype(idx.dtype, jnp.integer):
                raise TypeError(
                    f"{fn}: `TripletMask.{name}` must be an integer array [{b}, K]; got "
                    f"shape {tuple(getattr(idx, 'shape', ()))} dtype {getattr(idx, 'dtype', type(idx).__name__)}"
                )
        k = m.p_idx.shape[1]
        w = _mask_array(m.weights, (b, k), "TripletMask.weights", fn, dtype)
        if m.n_idx.shape != m.p_idx.shape:
            raise ValueError(f"{fn}: `TripletMask.n_idx` must have the shape of `p_idx` {(b, k)}; got {tuple(m.n_idx.shape)}")
        ok = (m.p_idx >= 0) & (m.p_idx < r) & (m.n_idx >= 0) & (m.n_idx < r)
        p_idx = jnp.clip(m.p_idx, 0, r - 1).astype(jnp.int32)
        n_idx = jnp.clip(m.n_idx, 0, r - 1).astype(jnp.int32)
        w = w * ok * anchor_weight[:, None] * ref_weight[p_idx] * ref_weight[n_idx]
        if same_set:
            w = w * (p_idx != self_cols[:, None])
        return TripletMask(weights=w, p_idx=p_idx, n_idx=n_idx, num_refs=r)
    pos = _mask_array(m.pos, (b, r), "TripletMask.pos", fn, dtype) * valid
    neg = _mask_array(m.neg, (b, r), "TripletMask.neg", fn, dtype) * valid
    if same_set:
        pos = pos * not_self
    if form == "margin":
        x = _mask_array(m.x, (b, r), "TripletMask.x", fn, dtype, weights=False)
        return TripletMask(
            pos=pos, neg=neg, x=jax.lax.stop_gradient(x),
            lo=_scalar(m.lo, "TripletMask.lo", fn, dtype), hi=_scalar(m.hi, "TripletMask.hi", fn, dtype),
        )
    q = validate.check_embeddings(m.query, "TripletMask.query", fn=fn)
    rf = validate.check_embeddings(m.ref, "TripletMask.ref", fn=fn)
    if q.shape[0] != b or rf.shape[0] != r or q.shape[1] != rf.shape[1]:
        raise ValueError(
            f"{fn}: an angle-form TripletMask needs `query` [{b}, D] and `ref` [{r}, D]; got shapes "
            f"{tuple(q.shape)} and {tuple(rf.shape)}"
        )
    return TripletMask(
        pos=pos, neg=neg, query=jax.lax.stop_gradient(q.astype(dtype)), ref=jax.lax.stop_gradient(rf.astype(dtype)),
        angle=_scalar(m.angle, "TripletMask.angle", fn, dtype),
    )


def _not_self(self_cols, num_refs, dtype):
    """``[B, R]``: 0 where reference column is the anchor itself, else 1."""
    return (self_cols[:, None] != jnp.arange(num_refs)[None, :]).astype(dtype)
