r"""Multi-label classification losses on sigmoid heads: ``loss(logits, targets, *, ...)``.

Every loss takes logits ``[B, C]`` and targets ``[B, C]`` (bool, int or float) as optax does,
keyword-only hyperparameters, and:

- **Unknown labels** contribute nothing (value and gradient): mark them with ``-1`` in
  ``targets`` or with ``label_mask`` (bool, or float weights in [0, 1]; 0 = unknown). A row
  whose labels are all unknown gives 0 with a zero gradient.
- ``where``: bool ``[B]`` marking real rows (padded rows contribute nothing).
- ``reduction``: ``"mean"`` (over the known elements, or over the valid rows for per-row
  losses), ``"sum"``, ``"none"`` (the per-element ``[B, C]`` or per-row ``[B]`` losses, 0 where
  unknown), ``"avg_nonzero"``, a :class:`jaxmetric.reduce.Reduction` or a callable
  ``f(losses, weights)``. Defaults follow each loss's reference implementation.
- Soft targets in [0, 1] where the loss defines them (BCE, focal, ZLPR, Poly-1); the other
  losses need {0, 1} (and -1 for unknown).

Numerics: log-sigmoid / softplus forms, focusing weights as ``exp(gamma * log_sigmoid)``, masked
log-sum-exp; float32 accumulation (float64 for float64 logits); value and gradient finite for
any finite logits (±1e4 included), and NaN when any float input (logits, targets, weights)
holds a NaN or inf. Hyperparameters that are floats may be traced values. Weights
(``pos_weight``, ``weight``, ``label_mask``) must be finite and non-negative (``label_mask``
at most 1), checked when concrete; a traced negative ``pos_weight`` or ``weight`` makes the
value NaN.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from jaxmetric import reduce
from jaxmetric._src import validate
from jaxmetric._src.front_door import front_door
from jaxmetric._src.numerics import finish, has_any, masked_logsumexp
from jaxmetric._src.validate import check_nonnegative, check_positive, concrete_scalar

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, ReductionLike, Scalar

# --------------------------------------------------------------------------------------
# input handling


def _describe(x) -> str:
    return validate._describe(x)


def _check_logits(logits, fn: str) -> jax.Array:
    if not hasattr(logits, "shape"):
        try:
            logits = jnp.asarray(logits)
        except TypeError as e:  # pragma: no cover - jnp.asarray raises for odd objects
            raise TypeError(f"{fn}: `logits` must be a 2-D float array [batch, num_classes]; got {_describe(logits)}") from e
    if logits.ndim != 2:
        raise ValueError(f"{fn}: `logits` must be a 2-D float array [batch, num_classes]; got {_describe(logits)} ({logits.ndim}-D)")
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise TypeError(f"{fn}: `logits` must have a floating dtype; got {_describe(logits)}")
    if logits.shape[1] == 0:
        raise ValueError(f"{fn}: `logits` must have at least one column (one per label); got {_describe(logits)}")
    validate.check_nonempty(logits, "logits", fn)
    return validate.saturate_grad(logits)


def _check_targets(targets, shape, fn: str, soft: bool) -> jax.Array:
    if not hasattr(targets, "shape"):
        targets = jnp.asarray(targets)
    if tuple(targets.shape) != tuple(shape):
        raise ValueError(f"{fn}: `targets` must have the shape of `logits` {tuple(shape)}; got {_describe(targets)}")
    if not (targets.dtype == jnp.bool_ or jnp.issubdtype(targets.dtype, jnp.integer) or jnp.issubdtype(targets.dtype, jnp.floating)):
        raise TypeError(f"{fn}: `targets` must be bool, int or float; got {_describe(targets)}")
    if targets.dtype != jnp.bool_ and validate.is_concrete(targets):
        v = np.asarray(targets)
        if soft:
            bad = ~(((v >= 0) & (v <= 1)) | (v == -1))
            want = "values in [0, 1] (soft targets) or -1 (unknown)"
        else:
            bad = ~((v == 0) | (v == 1) | (v == -1))
            want = "only 0, 1 or -1 (unknown)"
        if bad.any():
            raise ValueError(f"{fn}: `targets` must hold {want}; got {_describe(targets)} with value {v[bad].flat[0].item()!r}")
    return targets


def _prepare(fn, logits, targets, label_mask, where, *, soft: bool):
    """Returns ``(x, t, known, dtype)``: logits and targets (clipped to [0, 1]) in the compute
    dtype, and ``known`` in [0, 1] (0 for unknown labels and padded rows)."""
    logits = _check_logits(logits, fn)
    targets = _check_targets(targets, logits.shape, fn, soft)
    dtype = validate.compute_dtype(logits)
    x = logits.astype(dtype)
    if targets.dtype == jnp.bool_:
        t = targets.astype(dtype)
        known = jnp.ones(x.shape, dtype)
    else:
        known = (targets >= 0).astype(dtype)
        t = jnp.clip(targets.astype(dtype), 0.0, 1.0)
    if label_mask is not None:
        if not hasattr(label_mask, "shape"):
            label_mask = jnp.asarray(label_mask)
        if tuple(label_mask.shape) != tuple(x.shape):
            raise ValueError(f"{fn}: `label_mask` must have the shape of `logits` {tuple(x.shape)}; got {_describe(label_mask)}")
        if not (label_mask.dtype == jnp.bool_ or jnp.issubdtype(label_mask.dtype, jnp.number)):
            raise TypeError(f"{fn}: `label_mask` must be bool or float weights in [0, 1]; got {_describe(label_mask)}")
        validate.check_weights(label_mask, "label_mask", fn, high=1, what="weights in [0, 1] (0 = unknown)")
        known = known * jnp.clip(label_mask.astype(dtype), 0.0, 1.0)  # traced weights: kept in [0, 1]
    where = validate.check_where(where, x.shape[0], "where", fn=fn)
    if where is not None:
        known = known * where.astype(dtype)[:, None]
    return x, t, known, dtype


def _class_vector(v, num_classes: int, name: str, fn: str, dtype, *, batch: int | None = None) -> jax.Array:
    """A non-negative scalar or ``[C]`` weight array (with ``batch``, also ``[B, C]`` per
    element and ``[B, 1]`` per row, the shapes torch's ``weight`` broadcasts)."""
    if not hasattr(v, "shape"):
        v = jnp.asarray(v)
    allowed = [(), (num_classes,)] + ([(batch, num_classes), (batch, 1)] if batch is not None else [])
    if tuple(v.shape) not in allowed:
        raise ValueError(f"{fn}: `{name}` must have shape {' or '.join(map(str, allowed))}; got {_describe(v)}")
    if not (jnp.issubdtype(v.dtype, jnp.number) or v.dtype == jnp.bool_):
        raise TypeError(f"{fn}: `{name}` must be numeric; got {_describe(v)}")
    validate.check_weights(v, name, fn)
    return validate.poison_negative(v.astype(dtype))


def _weighted_bce(fn, x, t, pos_weight, dtype):
    """torch's ``binary_cross_entropy_with_logits(x, t, pos_weight=p, reduction="none")``:
    ``p * t * softplus(-x) + (1 - t) * softplus(x)``."""
    pos_term, neg_term = _bce_terms(x, t)
    if pos_weight is not None:
        pos_term = pos_term * _class_vector(pos_weight, x.shape[1], "pos_weight", fn, dtype)
    return t * pos_term + (1.0 - t) * neg_term


def _element_weight(fn, losses, weight, dtype):
    """``losses`` times torch's ``weight`` (scalar, ``[C]``, ``[B, C]`` or ``[B, 1]``)."""
    if weight is None:
        return losses
    return losses * _class_vector(weight, losses.shape[1], "weight", fn, dtype, batch=losses.shape[0])


def _log_one_minus_pt(x, t):
    r"""``log(1 - p_t)`` with ``1 - p_t = t σ(-x) + (1 - t) σ(x)``, stable for any finite ``x``
    and soft ``t`` (exactly ``log_sigmoid(-x)`` at t = 1 and ``log_sigmoid(x)`` at t = 0)."""
    has_pos, has_neg = t > 0, t < 1
    u = jnp.where(has_pos, jax.nn.log_sigmoid(-x) + jnp.log(jnp.where(has_pos, t, 1.0)), -jnp.inf)
    v = jnp.where(has_neg, jax.nn.log_sigmoid(x) + jnp.log(jnp.where(has_neg, 1.0 - t, 1.0)), -jnp.inf)
    m = jax.lax.stop_gradient(jnp.maximum(u, v))
    total = jnp.where(has_pos, jnp.exp(u - m), 0.0) + jnp.where(has_neg, jnp.exp(v - m), 0.0)
    return m + jnp.log(total)


def _bce_terms(x, t):
    """``-log σ(x)`` and ``-log(1 - σ(x))`` as softplus."""
    return jax.nn.softplus(-x), jax.nn.softplus(x)


def _reduce_elements(red, losses, known, dtype):
    return finish(reduce.apply(red, losses, known), dtype)


def _row_weights(known, dtype):
    return has_any(known, axis=1).astype(dtype)


# --------------------------------------------------------------------------------------
# class weights


@front_door
def pos_weight_from_counts(pos_counts: ArrayLike, num_samples: int, *, power: Scalar = 1.0, max_weight: Scalar | None = None) -> jax.Array:
    r"""``pos_weight`` for :func:`bce_loss` from label counts: :math:`p_c = (n^-_c / n^+_c)^{power}`
    with :math:`n^-_c = N - n^+_c`, optionally capped at ``max_weight``.

    Args:
      pos_counts: ``[C]`` number of positive examples of each class (e.g.
        ``(targets == 1).sum(0)``); counts are clipped to [1, N] so a class without positives
        gets the finite weight ``N - 1``.
      num_samples: ``N``, the number of (labelled) examples: a scalar or ``[C]`` (per-class
        counts of known labels).
      power: exponent (timm's ``neg_pos`` with a power; 0.5 is a milder choice).
      max_weight: optional cap.

    Returns:
      float32 ``[C]`` weights.
    """
    fn = "pos_weight_from_counts"
    pos_counts = jnp.asarray(pos_counts)
    if pos_counts.ndim != 1:
        raise ValueError(f"{fn}: `pos_counts` must be a 1-D array [num_classes]; got {_describe(pos_counts)}")
    n = jnp.asarray(num_samples, jnp.float32)
    if n.shape not in ((), pos_counts.shape):
        raise ValueError(f"{fn}: `num_samples` must be a scalar or have shape {tuple(pos_counts.shape)}; got {_describe(n)}")
    pos = jnp.clip(pos_counts.astype(jnp.float32), 1.0, jnp.maximum(n, 1.0))
    w = ((n - pos) / pos) ** power
    if max_weight is not None:
        w = jnp.minimum(w, max_weight)
    return w


@front_door
def class_balanced_weights(class_counts: ArrayLike, *, beta: Scalar = 0.999, normalize: bool = True) -> jax.Array:
    r"""Class-balanced weights from the effective number of samples (Cui et al., CVPR 2019):

    .. math::
        w_c = \frac{1-\beta}{1-\beta^{n_c}}, \qquad
        w \leftarrow C\, w / \textstyle\sum_c w_c \ \ (\text{``normalize``})

    Use them as ``weight`` of :func:`bce_loss` (or ``label_mask``-free per-class weights of any
    loss with a ``weight`` argument). Counts are clipped at 1 (a class without samples gets the
    weight of a class with one). ``beta`` in {0.9, 0.99, 0.999, 0.9999}; default 0.999 (timm).

    Returns:
      float32 ``[C]`` weights (sum C when normalized, the reference's normalization).
    """
    fn = "class_balanced_weights"
    counts = jnp.asarray(class_counts)
    if counts.ndim != 1:
        raise ValueError(f"{fn}: `class_counts` must be a 1-D array [num_classes]; got {_describe(counts)}")
    if isinstance(beta, (int, float)) and not 0.0 <= beta < 1.0:
        raise ValueError(f"{fn}: `beta` must be in [0, 1); got {beta!r}")
    n = jnp.maximum(counts.astype(jnp.float32), 1.0)
    beta = jnp.asarray(beta, jnp.float32)
    # 1 - beta^n = -expm1(n log beta), exact for beta close to 1; beta = 0 gives weight 1.
    log_beta = jnp.log(jnp.where(beta > 0, beta, 1.0))
    denom = jnp.where(beta > 0, -jnp.expm1(n * log_beta), 1.0)
    w = (1.0 - beta) / denom
    if normalize:
        w = w / jnp.sum(w) * counts.shape[0]
    return w


# --------------------------------------------------------------------------------------
# losses


@front_door
def bce_loss(logits: ArrayLike, targets: ArrayLike, *, pos_weight: ArrayLike | None = None, weight: ArrayLike | None = None, label_mask: ArrayLike | None = None, where: ArrayLike | None = None, reduction: ReductionLike = "mean") -> Array:
    r"""Binary cross-entropy on logits with a per-class positive weight (PyTorch's
    ``BCEWithLogitsLoss(weight, pos_weight)``):

    .. math::
        \ell_{ic} = w_{ic}\,\big[p_c\, y_{ic}\,\operatorname{softplus}(-x_{ic})
        + (1-y_{ic})\,\operatorname{softplus}(x_{ic})\big]

    Args:
      pos_weight: :math:`p_c`, a scalar or ``[C]`` (see :func:`pos_weight_from_counts`; the
        usual choice is :math:`n^-_c / n^+_c`). Default 1.
      weight: element weight :math:`w` (PyTorch's ``weight``): scalar, ``[C]`` per class (e.g.
        :func:`class_balanced_weights`), ``[B, C]`` per element or ``[B, 1]`` per row. It
        scales the losses; the ``"mean"`` still divides by the number of known elements, as
        PyTorch does.
      reduction: default ``"mean"`` over the known elements (PyTorch's mean when all are known).

    ``optax.sigmoid_binary_cross_entropy`` is the unweighted element-wise loss. Soft targets
    are accepted. With all labels known, ``reduction="mean"`` equals PyTorch's
    ``MultiLabelSoftMarginLoss(weight)`` too. ``pos_weight`` and ``weight`` must be finite and
    non-negative: refused when concrete; traced ones with a negative, NaN or inf entry make the
    value NaN.
    """
    fn = "bce_loss"
    red = reduce.resolve(reduction, fn=fn)
    x, t, known, dtype = _prepare(fn, logits, targets, label_mask, where, soft=True)
    losses = _element_weight(fn, _weighted_bce(fn, x, t, pos_weight, dtype), weight, dtype)
    return _reduce_elements(red, losses, known, dtype)


def _check_alpha(alpha, fn):
    """Focal α: in [0, 1]; None or a negative value (torchvision's -1) disables the weighting."""
    v = None if alpha is None else concrete_scalar(alpha, "alpha", fn)
    if v is not None and v > 1:
        raise ValueError(f"{fn}: `alpha` must be in [0, 1] (None or a negative value disables it); got {alpha!r}")


@front_door
def focal_loss(logits: ArrayLike, targets: ArrayLike, *, alpha: Scalar | None = 0.25, gamma: Scalar = 2.0, pos_weight: ArrayLike | None = None, weight: ArrayLike | None = None, label_mask: ArrayLike | None = None, where: ArrayLike | None = None, reduction: ReductionLike = "mean") -> Array:
    r"""Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017),
    optionally on the positive-weighted BCE of :func:`bce_loss`:

    .. math::
        \ell = w\,\alpha_t\,(1-p_t)^{\gamma}\,\mathrm{BCE}_{p_c}(x, y), \qquad
        p_t = y\,p + (1-y)(1-p),\ \ \alpha_t = y\,\alpha + (1-y)(1-\alpha)

    with :math:`\mathrm{BCE}_{p_c}(x, y) = p_c\,y\,\operatorname{softplus}(-x) +
    (1-y)\operatorname{softplus}(x)`, PyTorch's ``binary_cross_entropy_with_logits(x, y,
    pos_weight=p)`` (:math:`-\log p_t` for {0, 1} targets and :math:`p_c = 1`: torchvision's
    ``sigmoid_focal_loss``, which also uses the BCE for soft targets).

    Args:
      alpha: paper default 0.25; ``None`` (or a negative value, as torchvision's ``-1``)
        disables the α weighting (optax's default is ``None``). With ``pos_weight`` the class
        balance usually comes from ``pos_weight`` alone: ``alpha=None``.
      gamma: focusing parameter, default 2.
      pos_weight: :math:`p_c`, a scalar or ``[C]`` multiplying the positive term, as in
        :func:`bce_loss` (e.g. :func:`pos_weight_from_counts` for many labels with a few
        positives per row). Default 1.
      weight: element weight :math:`w` (PyTorch's ``weight``): scalar, ``[C]``, ``[B, C]`` or
        ``[B, 1]``; the ``"mean"`` still divides by the number of known elements.
      reduction: default ``"mean"`` over the known elements (torchvision's
        ``reduction="mean"``; RetinaNet's sum over the number of positives is
        ``reduction="sum"`` divided by that number).

    :math:`(1-p_t)^\gamma` is computed as ``exp(gamma * log(1 - p_t))`` from log-sigmoids, so
    saturated logits give finite values and gradients. ``pos_weight`` and ``weight`` must be
    finite and non-negative: refused when concrete; traced ones with a negative, NaN or inf
    entry make the value NaN.
    """
    fn = "focal_loss"
    check_nonnegative(gamma, "gamma", fn)
    _check_alpha(alpha, fn)
    red = reduce.resolve(reduction, fn=fn)
    x, t, known, dtype = _prepare(fn, logits, targets, label_mask, where, soft=True)
    losses = _weighted_bce(fn, x, t, pos_weight, dtype) * jnp.exp(gamma * _log_one_minus_pt(x, t))
    if alpha is not None:
        alpha_t = alpha * t + (1.0 - alpha) * (1.0 - t)
        losses = losses * jnp.where(jnp.asarray(alpha) >= 0, alpha_t, 1.0)
    return _reduce_elements(red, _element_weight(fn, losses, weight, dtype), known, dtype)


@front_door
def asymmetric_loss(
    logits: ArrayLike, targets: ArrayLike, *, gamma_neg: Scalar = 4.0, gamma_pos: Scalar = 0.0, clip: Scalar = 0.05,
    eps: Scalar = 1e-8, stop_gradient_weight: bool = False, label_mask: ArrayLike | None = None,
    where: ArrayLike | None = None, reduction: ReductionLike = "sum",
) -> Array:
    r"""Asymmetric loss, ASL (Ben-Baruch, Ridnik et al., "Asymmetric Loss For Multi-Label
    Classification", ICCV 2021):

    .. math::
        \ell = -y\,(1-p)^{\gamma_+}\log p \;-\; (1-y)\,p_m^{\gamma_-}\log(1-p_m),
        \qquad p_m = \max(p - m, 0)

    with :math:`m` = ``clip`` (probability shifting; ``clip=0`` or ``None`` disables it) and
    the logs taken of probabilities clamped at ``eps`` as in the reference code
    (``log(max(q, eps)) = max(log q, log eps)``, computed from log-sigmoids; ``eps=0`` or
    ``None``: no clamp).

    Args:
      gamma_neg, gamma_pos: focusing parameters; defaults 4 and 0 (the paper and its training
        script; the reference class's constructor uses ``gamma_pos=1``).
      stop_gradient_weight: treat the focusing weight as a constant (the reference's
        ``disable_torch_grad_focal_loss``). Default False (full gradient).
      reduction: default ``"sum"`` over batch and classes, as the reference returns
        ``-loss.sum()``.
    """
    fn = "asymmetric_loss"
    check_nonnegative(gamma_neg, "gamma_neg", fn)
    check_nonnegative(gamma_pos, "gamma_pos", fn)
    red = reduce.resolve(reduction, fn=fn)
    if isinstance(clip, (int, float)) and clip < 0:
        raise ValueError(f"{fn}: `clip` must be >= 0 or None; got {clip!r}")
    x, t, known, dtype = _prepare(fn, logits, targets, label_mask, where, soft=False)
    clip = 0.0 if clip is None else jnp.asarray(clip, dtype)
    shifted = clip > 0
    # positive part: log p and (1 - p)^gamma_pos
    log_p = jax.nn.log_sigmoid(x)
    w_pos = jnp.exp(gamma_pos * jax.nn.log_sigmoid(-x))
    # negative part: log(1 - p_m) with 1 - p_m = min(1 - p + m, 1), and p_m^gamma_neg
    one_minus_pm = jnp.minimum(jax.nn.sigmoid(-x) + clip, 1.0)
    log_1mpm = jnp.where(shifted, jnp.log(jnp.where(shifted, one_minus_pm, 1.0)), jax.nn.log_sigmoid(-x))
    pm = jax.nn.sigmoid(x) - clip
    pm_ok = pm > 0
    log_pm = jnp.where(shifted, jnp.log(jnp.where(pm_ok, pm, 1.0)), jax.nn.log_sigmoid(x))
    # p_m = 0 (shifted away): weight 0 ** gamma_neg (1 when gamma_neg = 0, as torch.pow)
    w_neg = jnp.where(shifted & ~pm_ok, jnp.where(jnp.asarray(gamma_neg) == 0, 1.0, 0.0), jnp.exp(gamma_neg * log_pm))
    if eps is not None:
        log_eps = jnp.log(jnp.asarray(eps, dtype))
        log_p = jnp.maximum(log_p, log_eps)
        log_1mpm = jnp.maximum(log_1mpm, log_eps)
    if stop_gradient_weight:
        w_pos, w_neg = jax.lax.stop_gradient(w_pos), jax.lax.stop_gradient(w_neg)
    losses = -(t * w_pos * log_p + (1.0 - t) * w_neg * log_1mpm)
    return _reduce_elements(red, losses, known, dtype)


@front_door
def zlpr_loss(logits: ArrayLike, targets: ArrayLike, *, label_mask: ArrayLike | None = None, where: ArrayLike | None = None, reduction: ReductionLike = "mean") -> Array:
    r"""ZLPR, the multi-label categorical cross-entropy with a zero threshold (Su Jianlin,
    kexue.fm/archives/7359; Su et al., "ZLPR: A Novel Loss for Multi-label Classification",
    arXiv 2208.02955, 2022), per row :math:`i`:

    .. math::
        L_i = \log\Big(1+\sum_{j} (1-y_{ij})\, e^{x_{ij}}\Big)
            + \log\Big(1+\sum_{j} y_{ij}\, e^{-x_{ij}}\Big)

    For {0, 1} targets the sums run over the negative and the positive labels; soft targets
    in [0, 1] give the soft-label form (bert4keras's ``multilabel_categorical_crossentropy``).
    Predict label :math:`c` iff :math:`x_{ic} > 0`. No hyperparameters. Unknown labels leave
    both sums; a row without positives keeps its negative term.

    ``reduction``: default ``"mean"`` over the rows that have a known label; ``"none"`` gives
    the ``[B]`` row losses.
    """
    fn = "zlpr_loss"
    red = reduce.resolve(reduction, fn=fn)
    x, t, known, dtype = _prepare(fn, logits, targets, label_mask, where, soft=True)
    neg_w = known * (1.0 - t)
    pos_w = known * t
    losses = masked_logsumexp(x, neg_w, add_one=True) + masked_logsumexp(-x, pos_w, add_one=True)
    return finish(reduce.apply(red, losses, _row_weights(known, dtype)), dtype)


def _two_way_half(x, pos, neg, Tp, Tn, axis):
    n_lse = Tn * masked_logsumexp(x / Tn, neg, axis=axis)
    p_lse = Tp * masked_logsumexp(-x / Tp, pos, axis=axis)
    has_pos, has_neg = has_any(pos, axis=axis), has_any(neg, axis=axis)
    losses = jnp.where(has_pos & has_neg, jax.nn.softplus(n_lse + p_lse), 0.0)
    return losses, has_pos


@front_door
def two_way_loss(logits: ArrayLike, targets: ArrayLike, *, Tp: Scalar = 4.0, Tn: Scalar = 1.0, label_mask: ArrayLike | None = None, where: ArrayLike | None = None, reduction: ReductionLike = "mean") -> Array:
    r"""Two-way multi-label loss (Kobayashi, "Two-way Multi-Label Loss", CVPR 2023): a
    sample-wise and a class-wise term over softmax-pooled hard negatives and positives.

    .. math::
        \ell^{s}_i=\operatorname{softplus}\Big(T_n\log\!\sum_{j\in\Omega^-_i}e^{x_{ij}/T_n}
        +T_p\log\!\sum_{k\in\Omega^+_i}e^{-x_{ik}/T_p}\Big)

    and :math:`\ell^{c}_c`, the same over the rows of the batch for class :math:`c`. The loss
    is the mean of :math:`\ell^s` over the rows with a positive plus the mean of
    :math:`\ell^c` over the classes with a positive in the batch (the official code). An
    empty negative set makes the softplus 0 (the official code's -100 fill gives ~e^-97).

    Args:
      Tp, Tn: temperatures, defaults 4 and 1 (official names and defaults).
      reduction: applied to the sample-wise and the class-wise losses separately (weights:
        1 for rows / classes with a positive), the two results summed. ``"none"`` returns the
        tuple ``(sample_losses [B], class_losses [C])``.

    Needs {0, 1} targets (-1 = unknown, left out of both sets, as the official code does for
    negative targets).
    """
    fn = "two_way_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_positive(Tp, "Tp", fn)
    check_positive(Tn, "Tn", fn)
    x, t, known, dtype = _prepare(fn, logits, targets, label_mask, where, soft=False)
    k = known > 0
    pos = (k & (t > 0.5)).astype(dtype)
    neg = (k & (t <= 0.5)).astype(dtype)
    s_loss, s_valid = _two_way_half(x, pos, neg, Tp, Tn, axis=1)
    c_loss, c_valid = _two_way_half(x, pos, neg, Tp, Tn, axis=0)
    if red == "none":
        return (finish(jnp.where(s_valid, s_loss, 0.0), dtype), finish(jnp.where(c_valid, c_loss, 0.0), dtype))
    value = reduce.apply(red, s_loss, s_valid.astype(dtype)) + reduce.apply(red, c_loss, c_valid.astype(dtype))
    return finish(value, dtype)


@front_door
def hill_loss(logits: ArrayLike, targets: ArrayLike, *, lamb: Scalar = 1.5, margin: Scalar = 1.0, gamma: Scalar = 2.0, label_mask: ArrayLike | None = None, where: ArrayLike | None = None, reduction: ReductionLike = "sum") -> Array:
    r"""Hill loss (Zhang et al., "Simple and Robust Loss Design for Multi-Label Learning with
    Missing Labels", arXiv 2112.07368):

    .. math::
        \ell = -y\,(1-p_m)^{\gamma}\log p_m + (1-y)\,(\lambda - p)\,p^2,
        \qquad p_m = \sigma(x - m),\ p = \sigma(x)

    Defaults (paper / reference code): ``lamb`` λ = 1.5, ``margin`` m = 1, γ = 2,
    ``reduction="sum"``. The focusing weight is differentiated, as in the reference.
    Needs {0, 1} targets (-1 = unknown).
    """
    fn = "hill_loss"
    check_nonnegative(gamma, "gamma", fn)
    red = reduce.resolve(reduction, fn=fn)
    x, t, known, dtype = _prepare(fn, logits, targets, label_mask, where, soft=False)
    xm = x - margin
    pos = jnp.exp(gamma * jax.nn.log_sigmoid(-xm)) * jax.nn.softplus(-xm)
    p = jax.nn.sigmoid(x)
    neg = (lamb - p) * p * p
    losses = t * pos + (1.0 - t) * neg
    return _reduce_elements(red, losses, known, dtype)


def _check_tau(tau, fn):
    """SPLC's threshold on a probability: ``tau`` in (0, 1) (a Python / NumPy number is checked)."""
    v = concrete_scalar(tau, "tau", fn)
    if v is not None and not 0.0 < v < 1.0:
        raise ValueError(f"{fn}: `tau` (a probability threshold) must be in (0, 1); got {tau!r}")


@front_door
def splc_targets(logits: ArrayLike, targets: ArrayLike, *, tau: Scalar = 0.6, epoch: ArrayLike | None = None, change_epoch: int = 1) -> Array:
    """SPLC's corrected targets: known negatives with ``sigmoid(logit) > tau`` become positives
    (from ``change_epoch`` on when ``epoch`` is given). Unknown (-1) entries stay -1."""
    fn = "splc_targets"
    _check_tau(tau, fn)
    logits = _check_logits(logits, fn)
    targets = _check_targets(targets, logits.shape, fn, soft=False)
    t = targets.astype(jnp.int32)
    flip = (t == 0) & (jax.nn.sigmoid(logits.astype(validate.compute_dtype(logits))) > tau)
    if epoch is not None:
        flip = flip & (jnp.asarray(epoch) >= change_epoch)
    return jnp.where(flip, 1, t).astype(targets.dtype if targets.dtype != jnp.bool_ else jnp.int32)


@front_door
def splc_loss(
    logits: ArrayLike, targets: ArrayLike, *, tau: Scalar = 0.6, margin: Scalar = 1.0, gamma: Scalar = 2.0,
    epoch: ArrayLike | None = None, change_epoch: int = 1, label_mask: ArrayLike | None = None,
    where: ArrayLike | None = None, reduction: ReductionLike = "sum",
) -> Array:
    r"""Self-paced loss correction, SPLC (Zhang et al., arXiv 2112.07368): positives' logits
    are shifted by the margin, known negatives predicted with :math:`\sigma(x) > \tau` are
    taken as (missing) positives, and a focal BCE with γ is applied to the corrected targets
    :math:`y'` and logits :math:`x' = x - m\,y`:

    .. math::
        \ell = -y'\,(1-\sigma(x'))^{\gamma}\log\sigma(x')
               - (1-y')\,\sigma(x')^{\gamma}\log(1-\sigma(x'))

    Args:
      tau: correction threshold, default 0.6 (0.65 in the README for COCO with 75% labels).
      epoch, change_epoch: the correction applies when ``epoch >= change_epoch`` (default 1,
        as the reference). ``epoch=None`` (default) applies it. ``epoch`` may be traced.
      margin, gamma: defaults 1 and 2. ``reduction``: default ``"sum"`` (the reference).

    The correction is a selection (no gradient flows through the threshold test); the focal
    weight is differentiated as in the reference. Needs {0, 1} targets (-1 = unknown, never
    corrected).
    """
    fn = "splc_loss"
    check_nonnegative(gamma, "gamma", fn)
    _check_tau(tau, fn)
    red = reduce.resolve(reduction, fn=fn)
    x, t, known, dtype = _prepare(fn, logits, targets, label_mask, where, soft=False)
    is_pos = t > 0.5
    xs = jnp.where(is_pos, x - margin, x)
    flip = ~is_pos & (jax.lax.stop_gradient(jax.nn.sigmoid(xs)) > tau)
    if epoch is not None:
        flip = flip & (jnp.asarray(epoch) >= change_epoch)
    y = (is_pos | flip).astype(dtype)
    pos = jnp.exp(gamma * jax.nn.log_sigmoid(-xs)) * jax.nn.softplus(-xs)
    neg = jnp.exp(gamma * jax.nn.log_sigmoid(xs)) * jax.nn.softplus(xs)
    losses = y * pos + (1.0 - y) * neg
    return _reduce_elements(red, losses, known, dtype)


@front_door
def poly_bce_loss(logits: ArrayLike, targets: ArrayLike, *, epsilon: Scalar = 2.0, gamma: Scalar = 0.0, alpha: Scalar | None = None, label_mask: ArrayLike | None = None, where: ArrayLike | None = None, reduction: ReductionLike = "mean") -> Array:
    r"""Poly-1 loss on sigmoid outputs (Leng et al., "PolyLoss", ICLR 2022), per label:

    .. math::
        \ell = \alpha_t\,(1-p_t)^{\gamma}\,\mathrm{BCE}(x, y) + \epsilon\,(1-p_t)^{\gamma+1}

    With γ = 0 and no α: :math:`\mathrm{BCE} + \epsilon(1-p_t)`. Defaults ``epsilon=2``,
    ``gamma=0``, ``alpha=None`` (timm's ``PolyBinaryCrossEntropy``; the paper recommends
    ε = -1 with a focal γ = 2, α = 0.25 for detection). α weights the focal term only, as in
    the paper's code. Soft targets are accepted. ``reduction``: default ``"mean"``.
    """
    fn = "poly_bce_loss"
    check_nonnegative(gamma, "gamma", fn)
    _check_alpha(alpha, fn)
    red = reduce.resolve(reduction, fn=fn)
    x, t, known, dtype = _prepare(fn, logits, targets, label_mask, where, soft=True)
    pos_term, neg_term = _bce_terms(x, t)
    ce = t * pos_term + (1.0 - t) * neg_term
    log_q = _log_one_minus_pt(x, t)
    fl = ce * jnp.exp(gamma * log_q)
    if alpha is not None:
        alpha_t = alpha * t + (1.0 - alpha) * (1.0 - t)
        fl = fl * jnp.where(jnp.asarray(alpha) >= 0, alpha_t, 1.0)
    losses = fl + epsilon * jnp.exp((gamma + 1.0) * log_q)
    return _reduce_elements(red, losses, known, dtype)


@front_door
def distribution_balanced_loss(
    logits: ArrayLike, targets: ArrayLike, class_counts: ArrayLike, num_samples: int, *, alpha: Scalar = 0.1,
    beta: Scalar = 10.0, mu: Scalar = 0.2, neg_scale: Scalar = 2.0, init_bias: Scalar = 0.05, focal: bool = True,
    gamma: Scalar = 2.0, balance_param: Scalar = 2.0, label_mask: ArrayLike | None = None,
    where: ArrayLike | None = None, reduction: ReductionLike = "mean",
) -> Array:
    r"""Distribution-Balanced loss, DB (Wu et al., "Distribution-Balanced Loss for Multi-Label
    Classification in Long-Tailed Datasets", ECCV 2020).

    Re-balanced weights, per row :math:`i` and class :math:`k` (:math:`n_k` = ``class_counts``):

    .. math::
        r_{ik}=\frac{1/n_k}{\sum_{j\in\Omega^+_i}1/n_j},\qquad
        \hat r_{ik}=\alpha+\sigma\big(\beta(r_{ik}-\mu)\big)

    (rows without positives get :math:`\hat r = 1 + \alpha`), and negative-tolerant
    regularization with the class-prior logit shift, :math:`p_k = n_k/N`:

    .. math::
        z = x + \frac{\kappa}{\lambda}\log\frac{p_k}{1-p_k},\qquad
        \ell = \hat r\,\Big[y\,\operatorname{softplus}(-z)\,F_+
               + (1-y)\,\frac{1}{\lambda}\operatorname{softplus}(\lambda z)\,F_-\Big]

    with focal factors :math:`F_+ = b\,\sigma(-z)^{\gamma}`, :math:`F_- = b\,\sigma(\lambda z)^{\gamma}`
    (:math:`b` = ``balance_param``) when ``focal``, else 1.

    Args:
      class_counts: ``[C]`` positives per class in the training set (clipped to [1, N-1], as
        timm does, so every prior is in (0, 1)).
      num_samples: ``N``, the training-set size.
      alpha, beta, mu: the re-balancing map (official config: 0.1, 10, 0.2).
      neg_scale, init_bias: λ and κ (official: 2, 0.05).
      focal, gamma, balance_param: official: True, 2, 2.
      reduction: default ``"mean"`` over the known elements.

    Needs {0, 1} targets (-1 = unknown: left out of the loss and of :math:`\sum 1/n_j`).
    """
    fn = "distribution_balanced_loss"
    check_nonnegative(gamma, "gamma", fn)
    red = reduce.resolve(reduction, fn=fn)
    check_positive(neg_scale, "neg_scale", fn)
    x, t, known, dtype = _prepare(fn, logits, targets, label_mask, where, soft=False)
    num_classes = x.shape[1]
    counts = jnp.asarray(class_counts)
    if counts.shape != (num_classes,):
        raise ValueError(f"{fn}: `class_counts` must have shape ({num_classes},); got {_describe(counts)}")
    n_total = jnp.asarray(num_samples, dtype)
    if n_total.shape != ():
        raise ValueError(f"{fn}: `num_samples` must be a scalar; got {_describe(n_total)}")
    n = jnp.clip(counts.astype(dtype), 1.0, jnp.maximum(n_total - 1.0, 1.0))
    freq_inv = 1.0 / n
    repeat = jnp.sum(jnp.where(known > 0, t, 0.0) * freq_inv[None, :], axis=1, keepdims=True)
    has = repeat > 0
    r = freq_inv[None, :] / jnp.where(has, repeat, 1.0)
    r_hat = jnp.where(has, alpha + jax.nn.sigmoid(beta * (r - mu)), alpha + 1.0)
    r_hat = jax.lax.stop_gradient(r_hat)
    prior_logit = jnp.log(n) - jnp.log(n_total - n)
    z = x + (init_bias / neg_scale) * prior_logit[None, :]
    pos = jax.nn.softplus(-z)
    neg = jax.nn.softplus(neg_scale * z) / neg_scale
    if focal:
        pos = balance_param * jnp.exp(gamma * jax.nn.log_sigmoid(-z)) * pos
        neg = balance_param * jnp.exp(gamma * jax.nn.log_sigmoid(neg_scale * z)) * neg
    losses = r_hat * (t * pos + (1.0 - t) * neg)
    return _reduce_elements(red, losses, known, dtype)


__all__ = [
    "asymmetric_loss",
    "bce_loss",
    "class_balanced_weights",
    "distribution_balanced_loss",
    "focal_loss",
    "hill_loss",
    "poly_bce_loss",
    "pos_weight_from_counts",
    "splc_loss",
    "splc_targets",
    "two_way_loss",
    "zlpr_loss",
]
