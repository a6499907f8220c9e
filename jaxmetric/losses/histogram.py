"""Histogram-based losses: Histogram loss and the CDF-based dynamic soft margin loss.

:func:`dynamic_soft_margin_loss` keeps a running histogram; in PML it lives inside the loss
module, here it is an explicit pytree (:class:`DynamicSoftMarginState`) passed in and returned,
so the loss stays a pure function that runs under ``jit`` and ``vmap`` and inside a scanned training loop.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

from jaxmetric._src import collectives, pairs as _pairs, triplets as _triplets, validate
from jaxmetric import reduce
from jaxmetric._src.front_door import front_door
from jaxmetric._src.blocks import map_blocks
from jaxmetric._src.engine import check_blockable, triplet_partials
from jaxmetric._src.numerics import clip_weights, finish
from jaxmetric.distances import CosineSimilarity, LpDistance
from jaxmetric._src.validate import check_distance, check_static_int, is_concrete_number, reject_ref

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, AxisName, DTypeLike, LabelsOrMask, ReductionLike, Scalar
    from jaxmetric.distances import BaseDistance

def _reduce_scalar(red, value, present):
    """Reduces an already-reduced loss (PML's ``already_reduced``): one element."""
    out = reduce.apply(red, value[None], present[None].astype(value.dtype))
    return out[0] if red == "none" else out


@front_door
def histogram_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, n_bins: int | None = None, delta: Scalar | None = None,
    distance: BaseDistance = CosineSimilarity(), reduction: ReductionLike = "mean", ref_emb: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None, where: ArrayLike | None = None, ref_where: ArrayLike | None = None,
    axis_name: AxisName | None = None,
) -> Array:
    r"""Histogram loss (Ustinova & Lempitsky, "Learning Deep Embeddings with Histogram Loss",
    NeurIPS 2016).

    Similarities of the positive and the negative pairs are spread linearly onto the nodes
    :math:`t_r = -1 + r\Delta`, :math:`r = 0..\mathrm{round}(2/\Delta)`:

    .. math::
        p^{\pm}_r = \frac{1}{|S^{\pm}|}\sum_{(i,j)\in S^{\pm}} \big[1 - |s_{ij} - t_r|/\Delta\big]_+ ,
        \qquad L = \sum_r p^-_r \sum_{r' \le r} p^+_{r'}

    :math:`S^+` / :math:`S^-` are the unordered pairs ``{a, p}`` / ``{a, n}`` of all triplets
    (as PML: a positive pair counts only if its anchor has a negative, and vice versa), each
    counted once.

    PML: ``HistogramLoss(n_bins=None, delta=None)`` (``n_bins=100`` when neither is given,
    ``delta = 2 / n_bins``), ``CosineSimilarity``, already reduced (the reducer is ignored;
    here ``reduction`` acts on the single value, so "mean" and "sum" return it). No
    ``ref_emb``. Deliberate difference: a similarity of exactly 1 (duplicate embeddings) or
    outside ``[-1, 1]`` goes to the end node; PML indexes past its histogram and raises.

    Returns:
      Scalar loss.

    Scale:
      axis_name: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``: each device bins the pairs
        ``{i, j}`` (``j >= i``, global indices) of its rows ``i`` against the gathered batch and the
        two pair histograms (and their totals) are summed over devices, so the value is the
        single-device loss on the concatenated batch. A mask is then ``[B_local, B_global]``.

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``,
    ``ref_emb``, ``ref_labels``, ``where``, ``ref_where``, ``axis_name``):
    :ref:`shared-arguments`.
    """
    fn = "histogram_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn)
    if n_bins is not None:
        n_bins = check_static_int(n_bins, "n_bins", fn)
    if delta is not None:
        if not is_concrete_number(delta) or not delta > 0:
            raise ValueError(f"{fn}: `delta` must be a positive Python float (it fixes the number of bins); got {delta!r}")
    if n_bins is not None and delta is not None and delta != 2 / n_bins:
        raise ValueError(f"{fn}: `delta` and `n_bins` must satisfy delta == 2 / n_bins; got delta={delta!r}, n_bins={n_bins!r}")
    if n_bins is None and delta is None:
        n_bins = 100
    delta = float(delta) if delta is not None else 2 / n_bins
    n_nodes = round(1 + 2 / delta)
    if n_nodes < 2:
        raise ValueError(f"{fn}: `delta` must give at least 2 histogram nodes (delta <= 2); got delta={delta!r}")
    reject_ref(fn, ref_emb, ref_labels, ref_where)
    b = _pairs.from_inputs(fn, embeddings, labels_or_mask, where=where, axis_name=axis_name, contrast=True)
    mat = distance(b.emb, b.ref)
    pos, neg = clip_weights(b.pos), clip_weights(b.neg)
    has_pos = jnp.any(pos > 0, axis=1, keepdims=True)
    has_neg = jnp.any(neg > 0, axis=1, keepdims=True)
    # Pairs of the triplets (a, p, n): (a, p) needs a negative of a, (a, n) a positive of a.
    o_ap = jnp.where(has_neg, pos, 0.0)
    o_an = jnp.where(has_pos, neg, 0.0)
    if axis_name is None:
        o_ap_t, o_an_t = o_ap.T, o_an.T
        upper = jnp.triu(jnp.ones_like(mat))  # unordered pairs {i, j}, read as (min, max)
    else:
        # This device's rows i hold the pairs {i, j} with j >= i (global indices); the
        # transposed selection o[j, i] comes from the row of j.
        if b.labels is not None:  # label masks are symmetric: o[j, i] = pos[i, j] * has_neg[j]
            o_ap_t = jnp.where(collectives.gather(has_neg[:, 0], axis_name)[None, :], pos, 0.0)
            o_an_t = jnp.where(collectives.gather(has_pos[:, 0], axis_name)[None, :], neg, 0.0)
        else:  # a mask may be asymmetric: gather its rows
            o_ap_t = collectives.gather(o_ap, axis_name)[:, b.self_cols].T
            o_an_t = collectives.gather(o_an, axis_name)[:, b.self_cols].T
        upper = (jnp.arange(mat.shape[1])[None, :] >= b.self_cols[:, None]).astype(mat.dtype)
    w_ap = jnp.maximum(o_ap, o_ap_t) * upper
    w_an = jnp.maximum(o_an, o_an_t) * upper

    r_star = jnp.clip(jnp.floor(jax.lax.stop_gradient(mat + 1.0) / delta), 0, n_nodes - 2).astype(jnp.int32)
    lower_frac = (mat + 1.0 - r_star * delta) / delta  # weight of node r* + 1
    upper_frac = ((r_star + 1) * delta - 1.0 - mat) / delta  # weight of node r*

    def density(w):  # the pair histogram of the global batch (psum of the devices' pairs)
        d = jnp.zeros((n_nodes,), mat.dtype)
        d = d.at[(r_star + 1).ravel()].add((w * lower_frac).ravel())
        d = d.at[r_star.ravel()].add((w * upper_frac).ravel())
        return reduce.safe_divide(collectives.psum(d, axis_name), collectives.psum(jnp.sum(w), axis_name))

    p_pos, p_neg = density(w_ap), density(w_an)
    loss = jnp.sum(p_neg * jnp.cumsum(p_pos))
    present = reduce.global_any(w_ap, axis_name)
    return finish(_reduce_scalar(red, loss, present), b.dtype)


class DynamicSoftMarginState(NamedTuple):
    """Running histogram of :math:`x = d_{ap} - d_{an}` for :func:`dynamic_soft_margin_loss`.

    Attributes:
      hist: ``[num_bins]``, normalised to sum 1 after the first update (zeros before it).
    """

    hist: jax.Array


@front_door
def init_dynamic_soft_margin_state(num_bins: int = 10, dtype: DTypeLike = jnp.float32) -> DynamicSoftMarginState:
    """The empty histogram (PML initialises ``hist_`` to zeros); the first update then uses
    momentum 1."""
    num_bins = check_static_int(num_bins, "num_bins", "init_dynamic_soft_margin_state")
    return DynamicSoftMarginState(hist=jnp.zeros((num_bins,), dtype))


def _bins(x, min_val, delta, num_bins):
    """Bin index and fraction of ``x`` on bins of width ``delta`` from ``min_val``, clamped to
    the histogram (PML's floor / frac inside its valid range)."""
    t = jnp.clip((x - min_val) / delta, 0.0, num_bins - 1)
    idx = jnp.floor(t)
    return idx.astype(jnp.int32), t - idx


def _hist_increment(x, w, min_val, delta, num_bins):
    """``sum_e w_e [(1 - a_e) onehot(i_e) + a_e onehot(i_e + 1)]`` (no gradient)."""
    x, w = jax.lax.stop_gradient(x), jax.lax.stop_gradient(w)
    idx, frac = _bins(x, min_val, delta, num_bins)
    w = jnp.where(w > 0, w, 0.0)
    inc = jax.ops.segment_sum((w * (1.0 - frac)).ravel(), idx.ravel(), num_segments=num_bins)
    nxt = jnp.minimum(idx + 1, num_bins - 1)
    return inc + jax.ops.segment_sum((w * frac).ravel(), nxt.ravel(), num_segments=num_bins)


def _weigh(x, cdf, min_val, delta, num_bins):
    idx, _ = _bins(jax.lax.stop_gradient(x), min_val, delta, num_bins)
    return cdf[idx] * x


@front_door
def dynamic_soft_margin_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, state: DynamicSoftMarginState, *, min_val: Scalar = -2.0,
    num_bins: int = 10, momentum: Scalar = 0.01, distance: BaseDistance = LpDistance(),
    reduction: ReductionLike = "mean", ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None,
    where: ArrayLike | None = None, ref_where: ArrayLike | None = None, block_size: int | None = None,
    axis_name: AxisName | None = None,
) -> tuple[Array, DynamicSoftMarginState]:
    r"""Dynamic soft margin loss (Zhang & Rusinkiewicz, "Learning Local Descriptors with a
    CDF-Based Dynamic Soft Margin", ICCV 2019).

    For every triplet :math:`x = d_{ap} - d_{an}`. A running histogram :math:`h` over
    ``num_bins`` bins of width :math:`\Delta = 2|\text{min\_val}|/\text{num\_bins}` from
    ``min_val`` is updated with the batch (linear split between bins :math:`\lfloor t\rfloor`
    and :math:`\lfloor t\rfloor + 1`, :math:`t = (x - \text{min\_val})/\Delta`):

    .. math::
        h \leftarrow \operatorname{normalise}\Big((1-m)\,h + m\sum_x \big[(1-\{t\})e_{\lfloor t\rfloor}
        + \{t\}\,e_{\lfloor t\rfloor+1}\big]\Big),\qquad
        L = \operatorname{mean}_x\, \mathrm{CDF}_h(\lfloor t\rfloor)\, x

    with :math:`m` = ``momentum`` (1 on the first update, while :math:`h = 0`).

    Labels (or a mask) give all triplets (anchor in ``embeddings``, positive and negative in
    ``ref_emb``). With ``labels_or_mask=None`` (descriptor matching, PML's labels-free path)
    ``embeddings[i]`` and ``ref_emb[i]`` are the positive pairs and the negative is the closest
    non-matching item of row or column ``i``; when the two sets differ in size the missing
    entries are 0, as in PML.

    PML: ``DynamicSoftMarginLoss(min_val=-2.0, num_bins=10, momentum=0.01)``, ``LpDistance``
    (normalised, ``p=2`` required), already reduced (mean over triplets; jaxmetric's
    ``reduction`` acts on the triplet losses, default "mean" = PML). PML keeps ``hist_`` in
    the module; here it is ``state`` in and the updated state out.

    Deliberate differences: the histogram update carries no gradient (PML builds ``hist_``
    from the loss values without ``detach``, so its gradient also differentiates the CDF
    weights, and the autograd history leaks into later steps); values outside the
    histogram range are clamped to the end bins (PML raises an index error when
    :math:`t \ge` ``num_bins - 1``, i.e. :math:`x \ge 1.6` with the defaults, or
    :math:`x <` ``min_val``).

    Args:
      state: a :class:`DynamicSoftMarginState` (``init_dynamic_soft_margin_state(num_bins)``).
      block_size: anchors per block of the triplet cube (static; default: auto).

    Returns:
      ``(loss, new_state)``; ``new_state.hist`` keeps the dtype of ``state.hist``. An empty
      selection gives 0 and leaves the state unchanged, as PML.

    Scale:
      axis_name: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``: anchors are this device's
        rows, positives and negatives come from the gathered batch (or ``ref_emb``); the histogram
        increment and its total are summed over devices before the update, so every device returns
        the same new state, equal to the single-device state on the concatenated batch (return it
        with ``out_specs=P()``). Labels-free path: the pairs ``(embeddings[k], ref_emb[k])`` are
        per device and the hardest negative is searched in the global rows and columns (``ref_emb``
        must then have as many rows as ``embeddings``). Combines with ``block_size``.

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``,
    ``ref_emb``, ``ref_labels``, ``where``, ``ref_where``, ``axis_name``, ``block_size``):
    :ref:`shared-arguments`.
    """
    fn = "dynamic_soft_margin_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn, kind=LpDistance)
    if not distance.normalize_embeddings or distance.p != 2:
        raise ValueError(f"{fn}: `distance` must be LpDistance with normalize_embeddings=True and p=2 (as PML asserts); got {distance!r}")
    num_bins = check_static_int(num_bins, "num_bins", fn, minimum=2)
    block_size = check_blockable(red, block_size, fn)
    if is_concrete_number(min_val) and min_val == 0:
        raise ValueError(f"{fn}: `min_val` must be non-zero (the bin width is 2 * |min_val| / num_bins); got {min_val!r}")
    if is_concrete_number(momentum) and not 0 <= momentum <= 1:
        raise ValueError(f"{fn}: `momentum` must be in [0, 1]; got {momentum!r}")
    if not isinstance(state, DynamicSoftMarginState):
        raise TypeError(f"{fn}: `state` must be a DynamicSoftMarginState (init_dynamic_soft_margin_state(num_bins)); got {type(state).__name__}")
    hist_in = jnp.asarray(state.hist)
    if hist_in.shape != (num_bins,) or not jnp.issubdtype(hist_in.dtype, jnp.floating):
        raise ValueError(
            f"{fn}: `state.hist` must be a float array of shape ({num_bins},) (num_bins={num_bins}); "
            f"got shape {tuple(hist_in.shape)} and dtype {hist_in.dtype}"
        )
    delta = 2.0 * jnp.abs(min_val) / num_bins

    # With axis_name the histogram increments and their totals are summed over devices before
    # the update, so every device computes the same (global) new state and CDF.
    ax = axis_name

    if labels_or_mask is None:
        x, w, dtype = _pairs_without_labels(fn, distance, embeddings, ref_emb, ref_labels, where, ref_where, axis_name)
        hist = hist_in.astype(dtype)
        inc = collectives.psum(_hist_increment(x, w, min_val, delta, num_bins), ax)
        new_hist, cdf, present = _update(hist, inc, collectives.psum(jnp.sum(w), ax), momentum)
        losses = _weigh(x, cdf, min_val, delta, num_bins)
        value = reduce.apply(red, losses, w, ax)
        return finish(value, dtype), DynamicSoftMarginState(new_hist.astype(hist_in.dtype))

    b = _pairs.from_inputs(
        fn, embeddings, labels_or_mask, ref_emb=ref_emb, ref_labels=ref_labels, where=where, ref_where=ref_where,
        allow_triplets=True, axis_name=axis_name, contrast=True,
    )
    hist = hist_in.astype(b.dtype)
    mat = distance(b.emb, b.ref)
    cube = b.triplets
    n, r = mat.shape

    def terms(d, wp, wn, c):
        x = d[:, :, None] - d[:, None, :]
        w = c if c is not None else wp[:, :, None] * wn[:, None, :]
        return x, w

    if not reduce.is_additive(red):  # "none" or a plain callable sees every triplet at once
        x, w = terms(mat, b.pos, b.neg, cube)
        inc = collectives.psum(_hist_increment(x, w, min_val, delta, num_bins), ax)
        new_hist, cdf, _ = _update(hist, inc, collectives.psum(jnp.sum(w), ax), momentum)
        value = reduce.apply(red, _weigh(x, cdf, min_val, delta, num_bins), w, ax, b.context)
        return finish(value, b.dtype), DynamicSoftMarginState(new_hist.astype(hist_in.dtype))

    blk = block_size if block_size is not None else _triplets.block_size(n, r)  # the engine's triplet block
    rows = (mat, b.pos, b.neg, cube)

    def pass1(*args):
        x, w = terms(*args)
        return _hist_increment(x, w, min_val, delta, num_bins), jnp.sum(w)

    inc, wsum = map_blocks(pass1, rows, block=blk, checkpoint=False)
    new_hist, cdf, _ = _update(hist, collectives.psum(inc, ax), collectives.psum(wsum, ax), momentum)

    def weighed(*args):
        x, w = terms(*args)
        return _weigh(x, cdf, min_val, delta, num_bins), w

    value = reduce.finalize(red, *triplet_partials(red, weighed, rows, context=b.context, block_size=blk), ax)
    return finish(value, b.dtype), DynamicSoftMarginState(new_hist.astype(hist_in.dtype))


def _update(hist, inc, total, momentum):
    """PML's ``update_histogram`` then the CDF; unchanged state when nothing was selected."""
    present = total > 0
    m = jnp.where(jnp.sum(hist) != 0, momentum, 1.0).astype(hist.dtype)
    new = (1.0 - m) * hist + m * inc
    new = reduce.safe_divide(new, jnp.sum(new))
    new = jax.lax.stop_gradient(jnp.where(present, new, hist))
    return new, jnp.cumsum(new), present


def _pairs_without_labels(fn, distance, embeddings, ref_emb, ref_labels, where, ref_where, axis_name=None):
    """PML's labels-free path: ``x_k = d(e_k, r_k) - min(row k, column k without the pair)``.

    With ``axis_name`` the rows and columns are global (each device holds the pairs ``k`` of its
    rows, against the gathered other set); both sets must then have the same size per device.
    """
    if ref_labels is not None:
        raise ValueError(f"{fn}: `ref_labels` needs labels; with `labels_or_mask=None` pass `ref_emb` alone")
    emb = validate.check_embeddings(embeddings, "embeddings", fn=fn)
    ref = emb if ref_emb is None else validate.check_embeddings(ref_emb, "ref_emb", fn=fn)
    if ref.shape[1] != emb.shape[1]:
        raise ValueError(f"{fn}: `ref_emb` must have the embedding dim {emb.shape[1]}; got shape {tuple(ref.shape)}")
    if axis_name is not None and ref.shape[0] != emb.shape[0]:
        raise ValueError(
            f"{fn}: with `axis_name` and `labels_or_mask=None`, `ref_emb` must have as many rows as `embeddings` "
            f"on every device ({emb.shape[0]}); got shape {tuple(ref.shape)}"
        )
    dtype = validate.compute_dtype(emb, None if ref_emb is None else ref)
    emb = emb.astype(dtype)
    ref = emb if ref_emb is None else ref.astype(dtype)
    rows, cols = emb.shape[0], ref.shape[0]
    where = validate.check_where(where, rows, "where", fn=fn)
    if ref_emb is None:
        if ref_where is not None:
            raise ValueError(f"{fn}: `ref_where` needs `ref_emb`; without a reference set use `where` alone")
        ref_where = where
    else:
        ref_where = validate.check_where(ref_where, cols, "ref_where", fn=fn)
    rv = jnp.ones((rows,), bool) if where is None else where
    cv = jnp.ones((cols,), bool) if ref_where is None else ref_where
    if axis_name is not None:
        g = collectives.global_rows(rows, axis_name)
        emb_g, ref_g = collectives.gather(emb, axis_name), collectives.gather(ref, axis_name)
        rv_g, cv_g = collectives.gather(rv, axis_name), collectives.gather(cv, axis_name)
        mat_r = distance(emb, ref_g)  # [B, R]: this device's rows against every column
        mat_c = distance(emb_g, ref)  # [R, B]: every row against this device's columns
        not_pair_r = g[:, None] != jnp.arange(ref_g.shape[0])[None, :]
        not_pair_c = jnp.arange(emb_g.shape[0])[:, None] != g[None, :]
        row_min = jnp.min(jnp.where(rv[:, None] & cv_g[None, :] & not_pair_r, mat_r, jnp.inf), axis=1)
        col_min = jnp.min(jnp.where(rv_g[:, None] & cv[None, :] & not_pair_c, mat_c, jnp.inf), axis=0)
        d_pos = jnp.take_along_axis(mat_r, g[:, None], axis=1)[:, 0]
        d_neg = jnp.minimum(row_min, col_min)
        ok = rv & cv & jnp.isfinite(d_neg)
        x = d_pos - jnp.where(ok, d_neg, 0.0)
        return x, ok.astype(dtype), dtype
    mat = distance(emb, ref)
    n, k = max(rows, cols), min(rows, cols)
    cand = rv[:, None] & cv[None, :] & ~jnp.eye(rows, cols, dtype=bool)
    masked = jnp.where(cand, mat, jnp.inf)
    row_min = jnp.zeros((n,), dtype).at[:rows].set(jnp.min(masked, axis=1))
    col_min = jnp.zeros((n,), dtype).at[:cols].set(jnp.min(masked, axis=0))
    d_pos = jnp.zeros((n,), dtype).at[:k].set(jnp.diagonal(mat)[:k])
    d_neg = jnp.minimum(row_min, col_min)
    rvn = jnp.ones((n,), bool).at[:rows].set(rv)
    cvn = jnp.ones((n,), bool).at[:cols].set(cv)
    ok = rvn & cvn & jnp.isfinite(d_neg)
    x = d_pos - jnp.where(ok, d_neg, 0.0)
    return x, ok.astype(dtype), dtype
