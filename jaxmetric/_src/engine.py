"""Evaluation of losses whose terms are functions of rows of the similarity matrix.

A loss describes itself by an ``elements`` function::

    elements(mat, pos, neg, anchor_weight, *rows) -> (subs, gate)

where ``mat`` is the ``[blk, R]`` distance matrix of a block of anchors, ``rows`` the block's
slices of the loss's own per-anchor arrays (``evaluate(..., rows=...)``), ``subs`` is a list of
``(losses, weights)`` pairs (each sub-loss is reduced separately and the results summed, as
PML's ``MultipleReducers``), and ``gate`` is ``None`` or a list of arrays that must each have a
positive entry somewhere in the (global) batch for the loss to be non-zero.

:func:`evaluate` runs it on the whole ``[B, R]`` matrix, or with ``block_size`` over blocks of
anchors, each block rematerialised in the backward pass: memory ``O(B D + block R)`` in the forward *and* the
backward pass, value and gradient equal to the dense path. With ``axis_name`` the partial sums
are summed over devices. A loss with one element per anchor (``one_per_anchor``: the listwise
losses, whose ``[blk, R, ...]`` temporaries dwarf their ``[B]`` elements) computes its elements a
block at a time and reduces them together, so its ``block_size`` takes every reduction.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxmetric import reduce
from jaxmetric._src import collectives
from jaxmetric._src import triplets as _triplets
from jaxmetric._src.blocks import map_blocks
from jaxmetric._src.validate import check_block_size


_BATCH = object()  # context_labels' default: the batch's own labels


def evaluate(b, distance, red, elements, *, rows=(), block_size=None, context_labels=_BATCH, one_per_anchor=False, fn=""):
    """The reduced loss (or the ``"none"`` elements) of a row-decomposable loss. ``rows``: arrays
    with a leading anchor axis ``[B, ...]`` that ``elements`` receives block by block (padding
    rows are zeros). ``context_labels``: the class ids a context reduction reads (``[B]``; default
    the batch's labels, None when a mask was given), for losses whose classes come beside a mask.
    ``one_per_anchor``: every sub-loss, weight and gate array has a leading anchor axis whose
    entries read their anchor's row alone; blocks then give the elements themselves."""
    block_size = check_block_size(block_size, fn) if one_per_anchor else check_blockable(red, block_size, fn)
    axis_name = b.axis_name
    labels = b.labels if context_labels is _BATCH else context_labels
    if one_per_anchor or not reduce.is_additive(red):
        if block_size is None:
            subs, gate = elements(distance(b.emb, b.ref), b.pos, b.neg, b.anchor_weight, *rows)
        else:  # each block's elements, concatenated back to the anchors
            subs, gate = _blocks(b, distance, lambda mat, pos, neg, aw, _, *own: elements(mat, pos, neg, aw, *own),
                                 None, rows, block_size, "rows")
        if red == "none":
            value = sum(jnp.where(w > 0, l, 0.0) for l, w in subs)
        else:
            context = reduce.Context(labels=labels, anchor_weight=b.anchor_weight)
            value = sum(reduce.apply(red, l, w, axis_name, context=context) for l, w in subs)
        if gate is not None:
            value = jnp.where(_gate_open([jnp.sum(g > 0) for g in gate], axis_name), value, 0.0)
        return value

    def partials(mat, pos, neg, aw, labels, *own):
        subs, gate = elements(mat, pos, neg, aw, *own)
        context = reduce.Context(labels=labels, anchor_weight=aw)
        parts = [p for l, w in subs for p in reduce.partial(red, l, w, context)]
        counts = [] if gate is None else [jax.lax.stop_gradient(jnp.sum(g > 0).astype(mat.dtype)) for g in gate]
        return parts, counts

    if block_size is None:
        parts, counts = partials(distance(b.emb, b.ref), b.pos, b.neg, b.anchor_weight, labels, *rows)
    else:
        parts, counts = _blocks(b, distance, partials, labels, rows, block_size, "sum")
    value = sum(reduce.finalize(red, parts[i], parts[i + 1], axis_name) for i in range(0, len(parts), 2))
    if counts:
        value = jnp.where(_gate_open(counts, axis_name), value, 0.0)
    return value


def check_blockable(red, block_size, fn):
    """The checked ``block_size`` (None or a positive int), refused with a reduction that does not
    add up over blocks."""
    block_size = check_block_size(block_size, fn)
    if block_size is not None and not reduce.is_additive(red):
        raise ValueError(
            f"{fn}: `block_size` needs a reduction whose partial sums add up over blocks (any but 'none' "
            f"and a plain callable); got {red!r}"
        )
    return block_size


def _gate_open(counts, axis_name):
    if axis_name is not None:
        counts = [collectives.psum(c, axis_name) for c in counts]
    out = True
    for c in counts:
        out = jnp.logical_and(out, c > 0)
    return out


def _blocks(b, distance, f, labels, rows, block_size, combine):
    """``f(mat, pos, neg, anchor_weight, labels, *own)`` over blocks of anchors, its two outputs
    summed over blocks (``combine="sum"``) or concatenated back to the anchors (``"rows"``)."""
    n = b.emb.shape[0]

    def block(e_blk, r_blk, in_batch, *own):
        # Padding rows (in_batch False) get a row index past the batch: zero weight.
        pos, neg, aw = b.block_masks(jnp.where(in_batch, r_blk, n))
        return f(distance(e_blk, b.ref), pos, neg, aw, None if labels is None else labels[r_blk], *own)

    out, gate = map_blocks(block, (b.emb, jnp.arange(n), jnp.ones((n,), bool), *rows), block=block_size, combine=combine)
    return list(out), (None if gate is None else list(gate))


def triplet_partials(red, cube, rows, shared=(), *, context=None, block_size=None):
    """The additive ``(num, den)`` of ``red`` over every triplet, a block of anchors at a time.

    ``cube(*row_blocks, *shared) -> (losses, weights)``, both ``[blk, R, R]``, for a block of
    ``rows`` (arrays with a leading anchor axis, or None); ``context`` (the batch's) reaches a
    context reduction block by block. Each block is rematerialised in the backward pass, so
    memory is ``O(block R^2)``; by default a block holds about ``2^24`` elements.
    """
    labels, aw = (None, None) if context is None else (context.labels, context.anchor_weight)
    n, r = next(x.shape[:2] for x in rows if x is not None and x.ndim >= 2)  # [B, R, ...] rows
    block = _triplets.block_size(n, r) if block_size is None else block_size

    def one(lb, awb, *args):
        losses, weights = cube(*args)
        return reduce.partial(red, losses, weights, reduce.Context(labels=lb, anchor_weight=awb))

    return map_blocks(one, (labels, aw, *rows), tuple(shared), block=block)


def triplet_loss(red, x, terms, pos, neg, mask=None, *, x_pn=None, params=(), hinge_margin=None, context=None, axis_name=None):
    """The reduced loss (or the ``"none"`` elements) of a triplet loss over a selection.

    ``terms(x_ap, x_an, x_pn, *params)`` is the elementwise loss of triplets, from the oriented
    distances ``x`` ``[B, R]`` (and ``x_pn`` ``[R, R]`` or None). The selection is every positive
    with every negative of an anchor (``pos``, ``neg`` ``[B, R]``, ``mask`` None) or a
    :class:`~jaxmetric.TripletMask` of any form, each read the cheapest exact way: the list
    form gathered (``"none"``: ``[B, K]``), the others by blocks of anchors
    (:func:`triplet_partials`, ``"none"`` and plain callables: the ``[B, R, R]`` cube). When the
    terms are the plain hinge ``[x_ap - x_an + hinge_margin]_+`` and the reduction counts every
    or every non-zero term, sorting and prefix sums replace the blocks (factored pairs and the
    margin form: no cube, ``O(B R)`` memory).
    """
    if mask is not None and mask.form == "list":
        x_pn_l = None if x_pn is None else x_pn[mask.p_idx, mask.n_idx]
        losses = terms(jnp.take_along_axis(x, mask.p_idx, axis=1), jnp.take_along_axis(x, mask.n_idx, axis=1), x_pn_l, *params)
        return reduce.apply(red, losses, mask.weights, axis_name, context=context)
    weight_fn, rows, shared = (_factored_weights, (pos, neg), ()) if mask is None else mask.anchor_blocks()
    if not reduce.is_additive(red):  # every element: the cube
        w = weight_fn(*rows, *shared).astype(x.dtype)
        return reduce.apply(red, _cube_terms(terms, x, x_pn, params), w, axis_name, context=context)
    sums = hinge_margin is not None and reduce.is_builtin(red) and red.high is None and red.low in (None, 0.0)
    if sums and mask is None:
        num, den = _triplets.hinge_sums(x, pos, x, neg, hinge_margin, nonzero_only=red.low is not None)
    elif sums and mask.form == "margin":
        num, den = _margin_form_sums(red.kind, red.low, red.high, x, mask, terms, tuple(params), hinge_margin)
    else:
        num, den = _blocked_triplets(red, x, x_pn, terms, params, weight_fn, rows, shared, context)
    return reduce.finalize(red, num, den, axis_name)


def _factored_weights(wp, wn):
    return wp[:, :, None] * wn[:, None, :]


def _cube_terms(terms, x, x_pn, params):
    """``terms`` of every triplet of a block of anchors ``x`` ``[blk, R]``: ``[blk, R, R]``."""
    return terms(x[:, :, None], x[:, None, :], None if x_pn is None else x_pn[None, :, :], *params)


def _blocked_triplets(red, x, x_pn, terms, params, weight_fn, rows, shared, context):
    """``(num, den)`` of ``red`` over the triplets of ``weight_fn``'s blocks. (A built-in
    reduction is compiled once per shape and static options; its thresholds may be traced.)"""
    labels, aw = (None, None) if context is None else (context.labels, context.anchor_weight)
    args = (x, x_pn, terms, tuple(params), weight_fn, tuple(rows), tuple(shared), labels, aw)
    if reduce.is_builtin(red):
        return _builtin_blocked_triplets(red.kind, red.low, red.high, *args)
    return _triplet_blocks(red, *args)


@functools.partial(jax.jit, static_argnames=("kind", "terms", "weight_fn"))
def _builtin_blocked_triplets(kind, low, high, x, x_pn, terms, params, weight_fn, rows, shared, labels, aw):
    return _triplet_blocks(reduce.Reduction(kind, low, high), x, x_pn, terms, params, weight_fn, rows, shared, labels, aw)


def _triplet_blocks(red, x, x_pn, terms, params, weight_fn, rows, shared, labels, aw):
    def cube(xb, *args):
        return _cube_terms(terms, xb, x_pn, params), weight_fn(*args)

    return triplet_partials(red, cube, (x, *rows), shared, context=reduce.Context(labels=labels, anchor_weight=aw))


@functools.partial(jax.jit, static_argnames=("kind", "terms"))
def _margin_form_sums(kind, low, high, x, mask, terms, params, margin):
    """The sorted sums of a margin-form mask, or the exact blocked path when the loss's
    distances are not monotone in the mask's (decided on device, ``lax.cond``)."""
    num, den, ok = _triplets.hinge_sums_margin_form(x, mask, margin, low is not None)
    weight_fn, rows, shared = mask.anchor_blocks()
    red = reduce.Reduction(kind, low, high)
    return jax.lax.cond(ok, lambda: (num, den), lambda: _triplet_blocks(red, x, None, terms, params, weight_fn, rows, shared, None, None))


def map_row_blocks(f, xs, block_size=None, *, fn=""):
    """``f(*xs)`` for arrays ``xs`` with a leading row axis, whose outputs (an array or a tuple
    of arrays) have the same leading row axis, computed over blocks of ``block_size`` rows.

    Each block is ``jax.checkpoint``-ed (:func:`~jaxmetric._src.blocks.map_blocks`), so the forward and the backward
    pass hold one block's temporaries (e.g. ``[block, R]`` logits) at a time; the outputs are
    the dense outputs exactly (rows are independent). Padding rows (zeros) are computed and
    dropped, so ``f`` must be finite on zero rows.
    """
    check_block_size(block_size, fn)
    if block_size is None:
        return f(*xs)
    return map_blocks(f, xs, block=block_size, combine="rows")
