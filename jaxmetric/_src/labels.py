"""Labels beside a mask: for losses whose formula reads the labels themselves.

PML lets a loss take ``labels`` and an ``indices_tuple`` together; a few losses then use the
tuple for the pairs and the labels for something else (AngularLoss's negatives, NCA's
positives, NPairs' one-pair-per-class choice, MarginLoss's per-class beta). In jaxmetric a raw
array in the labels slot is always labels, so those losses take the labels beside a mask
through the ``labels=`` keyword (and ``ref_labels=`` with ``ref_emb``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmetric._src import collectives, pairs as _pairs, validate
from jaxmetric.masks import PairMask, TripletMask


def is_mask(x) -> bool:
    return isinstance(x, (PairMask, TripletMask))


def resolve_labelled(
    fn: str, embeddings, labels_or_mask, *, labels=None, ref_emb=None, ref_labels=None, where=None, ref_where=None,
    required: bool = True, why: str = "", allow_triplets: bool = False, need_ref: bool = True, axis_name=None,
    contrast: bool = False,
):
    """``_pairs.resolve`` (``contrast`` passed on) plus the labels the formula needs.

    Returns ``(batch, lab, rlab)``: ``lab``/``rlab`` are the query and reference labels
    (``rlab is lab`` without ``ref_emb``), or ``None`` when a mask came without ``labels=`` and
    ``required`` is False. With ``need_ref=False`` (the formula reads only the anchors'
    labels) ``ref_labels`` may be left out beside a mask, and ``rlab`` is then None.
    """
    if is_mask(labels_or_mask):
        b = _pairs.from_inputs(
            fn, embeddings, labels_or_mask, ref_emb=ref_emb, ref_labels=None, where=where,
            ref_where=ref_where, allow_triplets=allow_triplets, axis_name=axis_name, contrast=contrast,
        )
        if labels is None:
            if required:
                raise ValueError(
                    f"{fn}: `labels` is required with a {type(labels_or_mask).__name__}{why}: pass "
                    f"labels=<class ids [{b.emb.shape[0]}] or multi-hot [{b.emb.shape[0]}, C]> beside the mask"
                    + (" (and ref_labels=... with ref_emb)" if ref_emb is not None else "")
                )
            if ref_labels is not None:
                raise ValueError(f"{fn}: `ref_labels` needs `labels`; got ref_labels without labels")
            return b, None, None
        lab = validate.check_labels(labels, b.emb.shape[0], "labels", fn=fn)
        if ref_emb is None:
            if ref_labels is not None:
                raise ValueError(f"{fn}: `ref_labels` needs `ref_emb`; without a reference set pass `labels` alone")
            if axis_name is not None:
                return b, lab, collectives.gather(lab, axis_name)
            return b, lab, lab
        if ref_labels is None:
            if not need_ref:
                return b, lab, None
            raise ValueError(f"{fn}: `ref_labels` is required with `ref_emb` when `labels` are given beside a mask")
        rlab = validate.check_labels(ref_labels, jnp.shape(ref_emb)[0], "ref_labels", fn=fn)
        if rlab.ndim != lab.ndim or (lab.ndim == 2 and rlab.shape[1] != lab.shape[1]):
            raise ValueError(
                f"{fn}: `ref_labels` must be of the same kind as `labels` (shape {tuple(lab.shape)}); got shape {tuple(rlab.shape)}"
            )
        if axis_name is not None:
            rlab = collectives.gather(rlab, axis_name)
        return b, lab, rlab
    if labels is not None:
        raise ValueError(
            f"{fn}: `labels=` is only for use beside a PairMask/TripletMask; labels are already in "
            f"`labels_or_mask` (got an array there and labels={validate._describe(labels)})"
        )
    b = _pairs.from_inputs(
        fn, embeddings, labels_or_mask, ref_emb=ref_emb, ref_labels=ref_labels, where=where,
        ref_where=ref_where, allow_triplets=allow_triplets, axis_name=axis_name, contrast=contrast,
    )
    return b, b.labels, b.ref_labels


def relation(lab: jax.Array, rlab: jax.Array, same_set: bool) -> jax.Array:
    """``[B, R]`` bool: the rows share a class (class ids: equal; multi-hot: a common label).
    The diagonal is kept; callers drop self-pairs where the formula needs it."""
    if lab.ndim == 1:
        return lab[:, None] == rlab[None, :]
    return (lab.astype(jnp.float32) @ rlab.astype(jnp.float32).T) > 0


def require_class_ids(lab: jax.Array, fn: str, name: str = "labels", why: str = "") -> jax.Array:
    if lab.ndim != 1:
        raise ValueError(f"{fn}: `{name}` must be class ids [{lab.shape[0]}]{why}; got multi-hot shape {tuple(lab.shape)}")
    return lab


def reject_mask(fn: str, labels_or_mask, why: str) -> None:
    if is_mask(labels_or_mask):
        raise TypeError(f"{fn}: `labels_or_mask` must be labels{why}; got a {type(labels_or_mask).__name__}")
