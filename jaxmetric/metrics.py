r"""Multi-label classification metrics as jit-able functions, equal to scikit-learn's.

Inputs are ``y_true [n, L]`` ({0, 1}: bool, int or float), and either thresholded predictions
``y_pred [n, L]`` ({0, 1}) or scores ``y_score [n, L]`` (logits or probabilities; only the
order matters). Every metric takes an optional ``sample_weight [n]`` (0 leaves a row out, so a
padded evaluation batch keeps its static shape). Shapes are static, nothing syncs with the
host, and the results are scalars (float32, or float64 when ``jax_enable_x64`` is on, so that
they equal scikit-learn's to the last digit), so the functions run inside ``jax.jit`` /
``jax.vmap``.

=======================================  ================================================  =========================================
function                                 definition                                        sklearn
=======================================  ================================================  =========================================
:func:`hamming_loss`                     fraction of wrong labels                          ``hamming_loss``
:func:`subset_accuracy`                  fraction of rows predicted exactly                ``accuracy_score``
:func:`f1_score`                         micro / macro / samples / weighted / per class    ``f1_score``
:func:`average_precision`                AP per class, macro / micro / samples / weighted  ``average_precision_score``
:func:`label_ranking_average_precision`  LRAP                                              ``label_ranking_average_precision_score``
:func:`coverage_error`                   mean rank of the lowest-scored true label         ``coverage_error``
:func:`label_ranking_loss`               fraction of mis-ordered (true, false) pairs       ``label_ranking_loss``
:func:`one_error`                        top-scored label not a true label                 (not in sklearn)
=======================================  ================================================  =========================================

Edge cases are scikit-learn 1.9's: ties in scores share the *max* rank (a tie between a true
and a false label counts as mis-ordered); a class without positives has AP 0 and stays in the
macro mean (``drop_empty=True`` leaves it out instead, as many multi-label codebases do); LRAP
is 1, coverage 0 and ranking loss 0 for a row with no true label (LRAP and ranking loss also
for a row whose labels are all true); F1's undefined ratios follow ``zero_division``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxmetric._src import validate
from jaxmetric._src.front_door import front_door

F1_AVERAGES = ("micro", "macro", "samples", "weighted", None)
AP_AVERAGES = ("micro", "macro", "samples", "weighted", None)


# --------------------------------------------------------------------------------------
# validation


def _as_array(x):
    return x if hasattr(x, "shape") else jnp.asarray(x)


def _check_binary(x, name: str, fn: str, shape=None) -> jax.Array:
    x = _as_array(x)
    if x.ndim != 2:
        raise ValueError(f"{fn}: `{name}` must be a 2-D multi-hot array [n_samples, n_labels]; got {validate._describe(x)}")
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{fn}: `{name}` must have the shape of `y_true` {tuple(shape)}; got {validate._describe(x)}")
    if not (x.dtype == jnp.bool_ or jnp.issubdtype(x.dtype, jnp.integer) or jnp.issubdtype(x.dtype, jnp.floating)):
        raise TypeError(f"{fn}: `{name}` must be bool, int or float {{0, 1}}; got {validate._describe(x)}")
    validate.check_nonempty(x, name, fn)
    if x.dtype != jnp.bool_ and validate.is_concrete(x):
        v = np.asarray(x)
        bad = ~((v == 0) | (v == 1))
        if bad.any():
            raise ValueError(f"{fn}: `{name}` must hold only 0 and 1; got {validate._describe(x)} with value {v[bad].flat[0].item()!r}")
    return x


def _check_score(x, shape, fn: str) -> jax.Array:
    x = _as_array(x)
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{fn}: `y_score` must have the shape of `y_true` {tuple(shape)}; got {validate._describe(x)}")
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
        raise TypeError(f"{fn}: `y_score` must be a float (or int) array of scores; got {validate._describe(x)}")
    return x


def _check_weight(w, n: int, fn: str, dtype):
    if w is None:
        return None
    w = _as_array(w)
    if tuple(w.shape) != (n,):
        raise ValueError(f"{fn}: `sample_weight` must have shape ({n},); got {validate._describe(w)}")
    if not (w.dtype == jnp.bool_ or jnp.issubdtype(w.dtype, jnp.number)):
        raise TypeError(f"{fn}: `sample_weight` must be numeric (or bool); got {validate._describe(w)}")
    validate.check_weights(w, "sample_weight", fn)
    return w.astype(dtype)


def _dtype(*arrays):
    """float64 when 64-bit mode is on (counts and ratios then match NumPy exactly), else
    float32. Metrics have no gradient, so the wider type costs nothing that matters."""
    del arrays
    return jnp.dtype(jnp.float64) if jax.config.jax_enable_x64 else jnp.dtype(jnp.float32)


def _safe_div(num, den):
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def _average(values, weights=None):
    """``np.average(values, weights=weights)``; an all-zero weight vector gives 0."""
    if weights is None:
        return jnp.mean(values)
    return _safe_div(jnp.sum(values * weights), jnp.sum(weights))


def _binary_inputs(fn, y_true, y_pred, sample_weight):
    y_true = _check_binary(y_true, "y_true", fn)
    y_pred = _check_binary(y_pred, "y_pred", fn, shape=y_true.shape)
    dtype = _dtype(sample_weight)
    w = _check_weight(sample_weight, y_true.shape[0], fn, dtype)
    return y_true.astype(dtype), y_pred.astype(dtype), w, dtype


def _score_inputs(fn, y_true, y_score, sample_weight):
    y_true = _check_binary(y_true, "y_true", fn)
    y_score = _check_score(y_score, y_true.shape, fn)
    dtype = _dtype(y_score, sample_weight)
    w = _check_weight(sample_weight, y_true.shape[0], fn, dtype)
    return y_true.astype(dtype), y_score.astype(dtype) if jnp.issubdtype(y_score.dtype, jnp.integer) else y_score, w, dtype


# --------------------------------------------------------------------------------------
# thresholded predictions


@front_door(nonfinite=False)
def hamming_loss(y_true, y_pred, *, sample_weight=None) -> jax.Array:
    r""":math:`\frac{1}{nL}\sum_{i,j}[\hat y_{ij}\ne y_{ij}]` (sample-weighted as sklearn)."""
    fn = "hamming_loss"
    t, p, w, dtype = _binary_inputs(fn, y_true, y_pred, sample_weight)
    wrong = jnp.mean((t != p).astype(dtype), axis=1)
    return _average(wrong, w).astype(dtype)


@front_door(nonfinite=False)
def subset_accuracy(y_true, y_pred, *, sample_weight=None) -> jax.Array:
    r"""Exact-match ratio :math:`\frac1n\sum_i[\hat y_i=y_i]` (sklearn's ``accuracy_score`` on
    multi-label input; ``zero_one_loss`` is one minus it)."""
    fn = "subset_accuracy"
    t, p, w, dtype = _binary_inputs(fn, y_true, y_pred, sample_weight)
    exact = jnp.all(t == p, axis=1).astype(dtype)
    return _average(exact, w).astype(dtype)


def _zero_division_value(zero_division, fn):
    if isinstance(zero_division, str):
        if zero_division != "warn":
            raise ValueError(f"{fn}: `zero_division` must be 'warn', 0, 1 or nan; got {zero_division!r}")
        return 0.0
    if isinstance(zero_division, (int, float)) and (zero_division in (0, 1) or math.isnan(zero_division)):
        return float(zero_division)
    raise ValueError(f"{fn}: `zero_division` must be 'warn', 0, 1 or nan; got {zero_division!r}")


def _nanaverage(values, weights=None):
    """sklearn's ``_nanaverage``: NaNs are left out; all-zero weights fall back to the plain
    mean; all-NaN gives NaN."""
    keep = ~jnp.isnan(values)
    v = jnp.where(keep, values, 0.0)
    k = keep.astype(values.dtype)
    plain = jnp.sum(v) / jnp.sum(k)  # NaN when everything is NaN, as sklearn
    if weights is None:
        return plain
    wk = weights * k
    ws = jnp.sum(wk)
    weighted = jnp.sum(v * wk) / jnp.where(ws != 0, ws, 1.0)
    return jnp.where(ws != 0, weighted, plain)


@front_door(nonfinite=False)
def f1_score(y_true, y_pred, *, average="micro", zero_division="warn", sample_weight=None) -> jax.Array:
    r"""F1 score of multi-label predictions, as ``sklearn.metrics.f1_score``.

    Per unit (a label, all labels pooled, or a row):
    :math:`F_1 = \frac{2\,TP}{2\,TP + FP + FN}`; when :math:`TP + FP + FN = 0` it is
    ``zero_division`` (``"warn"`` acts as 0, without the warning; 0; 1; or ``nan``).

    Args:
      average: ``"micro"`` (default: counts pooled over all labels), ``"macro"`` (mean over
        labels), ``"weighted"`` (labels weighted by their support; all-zero support gives
        the plain mean, as sklearn), ``"samples"`` (mean over rows), or ``None`` (the ``[L]``
        per-label scores). NaN scores (``zero_division=nan``) are left out of the average.
      sample_weight: ``[n]`` weights of the rows.
    """
    fn = "f1_score"
    validate.check_choice(average, F1_AVERAGES, "average", fn=fn)
    zd = _zero_division_value(zero_division, fn)
    t, p, w, dtype = _binary_inputs(fn, y_true, y_pred, sample_weight)
    axis = 1 if average == "samples" else 0
    rw = jnp.ones((t.shape[0],), dtype) if (w is None or average == "samples") else w
    tp = jnp.sum(t * p * rw[:, None], axis=axis)
    true_sum = jnp.sum(t * rw[:, None], axis=axis)
    pred_sum = jnp.sum(p * rw[:, None], axis=axis)
    if average == "micro":
        tp, true_sum, pred_sum = jnp.sum(tp), jnp.sum(true_sum), jnp.sum(pred_sum)
    den = true_sum + pred_sum
    f1 = jnp.where(den > 0, 2.0 * tp / jnp.where(den > 0, den, 1.0), jnp.asarray(zd, dtype))
    if average is None or average == "micro":
        return f1.astype(dtype)
    weights = true_sum if average == "weighted" else (w if average == "samples" else None)
    return _nanaverage(f1, weights).astype(dtype)


# --------------------------------------------------------------------------------------
# scores


def _ge_counts(scores, rel, allw):
    """For each entry ``j`` of each row: ``sum_k allw_k [s_k >= s_j]`` and
    ``sum_k rel_k [s_k >= s_j]`` (ties count as ``>=``), via one sort per row."""
    order = jnp.argsort(scores, axis=-1)
    s_sorted = jnp.take_along_axis(scores, order, axis=-1)
    a_sorted = jnp.take_along_axis(allw, order, axis=-1)
    r_sorted = jnp.take_along_axis(rel, order, axis=-1)
    zero = jnp.zeros(scores.shape[:-1] + (1,), allw.dtype)
    # suffix sums: suffix[i] = sum_{m >= i} x_sorted[m]; suffix[L] = 0
    a_suffix = jnp.concatenate([jnp.cumsum(a_sorted[..., ::-1], axis=-1)[..., ::-1], zero], axis=-1)
    r_suffix = jnp.concatenate([jnp.cumsum(r_sorted[..., ::-1], axis=-1)[..., ::-1], zero], axis=-1)
    first = jax.vmap(lambda s, q: jnp.searchsorted(s, q, side="left"))(
        s_sorted.reshape(-1, s_sorted.shape[-1]), scores.reshape(-1, scores.shape[-1])
    ).reshape(scores.shape)
    return jnp.take_along_axis(a_suffix, first, axis=-1), jnp.take_along_axis(r_suffix, first, axis=-1)


def _binary_ap_rows(scores, rel, weight=None):
    """Average precision of each row of ``scores [m, k]`` with relevance ``rel [m, k]`` and
    optional element weights ``[m, k]`` (sklearn's ``average_precision_score`` per row:
    non-interpolated, tied scores form one threshold). A row without positives gives 0."""
    w = jnp.ones_like(rel) if weight is None else weight
    rel_w = rel * w
    n_ge, p_ge = _ge_counts(scores, rel_w, w)
    precision = _safe_div(p_ge, n_ge)
    total = jnp.sum(rel_w, axis=-1)
    return _safe_div(jnp.sum(rel_w * precision, axis=-1), total), total > 0


@front_door(nonfinite=False)
def average_precision(y_true, y_score, *, average="macro", drop_empty=False, sample_weight=None) -> jax.Array:
    r"""Average precision (non-interpolated, as ``sklearn.metrics.average_precision_score``):

    .. math::
        AP = \sum_n (R_n - R_{n-1})\,P_n

    over the distinct score thresholds (tied scores are one threshold).

    Args:
      average: ``"macro"`` (default: mAP, the mean of the per-class APs), ``"micro"`` (one AP
        over all ``(row, label)`` entries), ``"samples"`` (mean over rows of the AP across
        labels), ``"weighted"`` (classes weighted by their number of positives; 0 when there
        are none, as sklearn), or ``None`` (the ``[L]`` per-class APs).
      drop_empty: leave classes without positives (rows, for ``"samples"``) out of the
        average instead of counting them as AP 0 (sklearn's behaviour, the default). With
        every class empty the result is 0.
      sample_weight: ``[n]`` row weights.
    """
    fn = "average_precision"
    validate.check_choice(average, AP_AVERAGES, "average", fn=fn)
    t, s, w, dtype = _score_inputs(fn, y_true, y_score, sample_weight)
    s = s.astype(dtype)
    if average == "micro":
        ew = None if w is None else jnp.broadcast_to(w[:, None], t.shape).reshape(1, -1)
        ap, _ = _binary_ap_rows(s.reshape(1, -1), t.reshape(1, -1), ew)
        return ap[0].astype(dtype)
    if average == "samples":
        ap, has = _binary_ap_rows(s, t)
        aw = jnp.ones((t.shape[0],), dtype) if w is None else w
    else:
        ew = None if w is None else jnp.broadcast_to(w[None, :], t.T.shape)
        ap, has = _binary_ap_rows(s.T, t.T, ew)
        if average is None:
            return ap.astype(dtype)
        if average == "weighted":
            aw = jnp.sum(t * (1.0 if w is None else w[:, None]), axis=0)
        else:
            aw = jnp.ones((t.shape[1],), dtype)
    if drop_empty:
        aw = aw * has.astype(dtype)
    return _average(ap, aw).astype(dtype)


@front_door(nonfinite=False)
def label_ranking_average_precision(y_true, y_score, *, sample_weight=None) -> jax.Array:
    r"""Label ranking average precision (``sklearn.metrics.label_ranking_average_precision_score``):

    .. math::
        \frac1n\sum_i\frac{1}{|y_i|}\sum_{j:y_{ij}=1}
        \frac{|\{k:y_{ik}=1,f_{ik}\ge f_{ij}\}|}{|\{k: f_{ik}\ge f_{ij}\}|}

    A row with no true label, or with every label true, scores 1.
    """
    fn = "label_ranking_average_precision"
    t, s, w, dtype = _score_inputs(fn, y_true, y_score, sample_weight)
    s = s.astype(dtype)
    n_ge, p_ge = _ge_counts(s, t, jnp.ones_like(t))
    n_pos = jnp.sum(t, axis=1)
    per_row = _safe_div(jnp.sum(t * _safe_div(p_ge, n_ge), axis=1), n_pos)
    trivial = (n_pos == 0) | (n_pos == t.shape[1])
    per_row = jnp.where(trivial, 1.0, per_row)
    return _average(per_row, w).astype(dtype)


@front_door(nonfinite=False)
def coverage_error(y_true, y_score, *, sample_weight=None) -> jax.Array:
    r"""Coverage error (``sklearn.metrics.coverage_error``): how far down the ranking one must
    go to cover every true label, :math:`\frac1n\sum_i\max_{j:y_{ij}=1}\mathrm{rank}_{ij}`
    with :math:`\mathrm{rank}_{ij}=|\{k: f_{ik}\ge f_{ij}\}|` (1 more than the Tsoumakas
    definition). A row with no true label scores 0."""
    fn = "coverage_error"
    t, s, w, dtype = _score_inputs(fn, y_true, y_score, sample_weight)
    s = s.astype(dtype)
    has = jnp.any(t > 0, axis=1)
    min_rel = jnp.min(jnp.where(t > 0, s, jnp.inf), axis=1, keepdims=True)
    min_rel = jnp.where(has[:, None], min_rel, 0.0)
    cov = jnp.sum((s >= min_rel).astype(dtype), axis=1)
    cov = jnp.where(has, cov, 0.0)
    return _average(cov, w).astype(dtype)


@front_door(nonfinite=False)
def label_ranking_loss(y_true, y_score, *, sample_weight=None) -> jax.Array:
    r"""Ranking loss (``sklearn.metrics.label_ranking_loss``): per row, the fraction of
    (true, false) label pairs with :math:`f_{true}\le f_{false}` (ties count as mis-ordered).
    A row with no true or no false label scores 0."""
    fn = "label_ranking_loss"
    t, s, w, dtype = _score_inputs(fn, y_true, y_score, sample_weight)
    s = s.astype(dtype)
    n_ge, p_ge = _ge_counts(s, t, jnp.ones_like(t))
    false_ge = n_ge - p_ge  # false labels scored >= each label
    n_pos = jnp.sum(t, axis=1)
    n_neg = t.shape[1] - n_pos
    per_row = _safe_div(jnp.sum(t * false_ge, axis=1), n_pos * n_neg)
    return _average(per_row, w).astype(dtype)


@front_door(nonfinite=False)
def one_error(y_true, y_score, *, sample_weight=None) -> jax.Array:
    r"""One-error: :math:`\frac1n\sum_i[\arg\max_j f_{ij}\notin y_i]` — the fraction of rows
    whose top-scored label is not a true label (ties: the first maximal label, as
    ``argmax``; a row with no true label counts as an error). Not in scikit-learn."""
    fn = "one_error"
    t, s, w, dtype = _score_inputs(fn, y_true, y_score, sample_weight)
    top = jnp.argmax(s, axis=1)
    hit = jnp.take_along_axis(t, top[:, None], axis=1)[:, 0]
    return _average((hit == 0).astype(dtype), w).astype(dtype)


f1 = f1_score
mean_average_precision = average_precision

__all__ = [
    "average_precision",
    "coverage_error",
    "f1",
    "f1_score",
    "hamming_loss",
    "label_ranking_average_precision",
    "label_ranking_loss",
    "mean_average_precision",
    "one_error",
    "subset_accuracy",
]
