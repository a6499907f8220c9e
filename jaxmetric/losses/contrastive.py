"""Contrastive losses beyond PML 2.9: image-text (CLIP, SigLIP), multi-label SupCon and
self-supervised two-view losses (DCL, DCLW, Barlow Twins).

Two-view losses take ``(x, y)`` with ``x[i]`` and ``y[i]`` two views (or an image and its
caption) of sample ``i``; ``where`` (bool ``[B]``) marks real pairs so a padded final batch keeps
its static shape. Learned scalars (temperature, bias) are positional arguments, so their
gradient comes out of ``jax.grad`` like any parameter's; ``init_clip_params`` and
``init_siglip_params`` give the papers' initial values.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import math

import jax
import jax.numpy as jnp

from jaxmetric import _checks, _pairs, _public, reduce
from jaxmetric import distributed as dist
from jaxmetric._ops import finish, masked_logsumexp
from jaxmetric.losses._rows import map_row_blocks
from jaxmetric.distances import CosineSimilarity, l2_normalize
from jaxmetric._checks import check_distance, check_positive

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, AxisName, ReductionLike, Scalar
    from jaxmetric.distances import BaseDistance


def _two_views(fn: str, x, y, names=("x", "y"), where=None, params=()):
    x = _checks.check_embeddings(x, names[0], fn=fn)
    y = _checks.check_embeddings(y, names[1], fn=fn)
    if x.shape != y.shape:
        raise ValueError(f"{fn}: `{names[1]}` must have the shape of `{names[0]}`, {tuple(x.shape)}; got shape {tuple(y.shape)}")
    dtype = _checks.compute_dtype(x, y)
    where = _checks.check_where(where, x.shape[0], "where", fn=fn)
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


@_public.front_door
def init_clip_params(temperature: float = 0.07) -> dict:
    """CLIP's initial learnable temperature: ``{"log_temperature": log(0.07)}``."""
    check_positive(temperature, "temperature", "init_clip_params")
    return {"log_temperature": jnp.asarray(math.log(temperature), jnp.float32)}


@_public.front_door
def init_siglip_params(t_prime: float = math.log(10.0), bias: float = -10.0) -> dict:
    """SigLIP's initial values: ``{"t_prime": log 10, "bias": -10}``."""
    for name, value in (("t_prime", t_prime), ("bias", bias)):
        shape = jnp.shape(value)
        if shape != ():
            raise ValueError(f"init_siglip_params: `{name}` must be a scalar; got shape {tuple(shape)}")
    return {"t_prime": jnp.asarray(t_prime, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}


@_public.front_door
def clip_loss(
    image_emb: ArrayLike,
    text_emb: ArrayLike,
    log_temperature: ArrayLike,
    *,
    max_logit_scale: Scalar = 100.0,
    normalize: bool = True,
    reduction: ReductionLike = "mean",
    where: ArrayLike | None = None,
    block_size: int | None = None,
    axis_name: AxisName | None = None,
) -> Array:
    r"""Symmetric InfoNCE of CLIP (Radford et al., ICML 2021) with a learnable temperature.

    With :math:`s_{ij} = \hat x_i\cdot\hat y_j / \tau`, :math:`\tau = e^{\text{log\_temperature}}`:

    .. math::
        \ell_i = \tfrac12\Big[\big(\log\textstyle\sum_j e^{s_{ij}} - s_{ii}\big)
                 + \big(\log\textstyle\sum_j e^{s_{ji}} - s_{ii}\big)\Big]

    and the loss is the mean of :math:`\ell_i` (image-to-text and text-to-image cross-entropy
    averaged). The logit scale :math:`1/\tau` is clipped at ``max_logit_scale`` (100, as in the
    paper; ``None`` for no clip); above it the gradient to ``log_temperature`` is 0.

    Args:
      image_emb, text_emb: ``[B, D]``; row ``i`` of each is a matching pair.
      log_temperature: scalar, learnable; initialise with :func:`init_clip_params`
        (``log 0.07``). OpenCLIP's ``logit_scale`` parameter is ``-log_temperature``.
      normalize: L2-normalise the embeddings (CLIP does).
      reduction: over the ``[B]`` per-pair losses (``"none"`` returns them).
      where: bool ``[B]``: real pairs; padded rows are neither queries nor candidates.

    Scale:
      axis_name: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``: both towers are gathered;
        each device computes, for its rows ``i``, the image-to-text term of image ``i`` against every
        text and the text-to-image term of text ``i`` against every image, so the reduced shares
        add up to the single-device loss on the concatenated batch (``"none"``: this device's rows).
      block_size: rows per block (static): memory ``O(B D + block_size R)`` in forward and
        backward (never the ``[B, R]`` logits), same value and gradient. Any reduction.
    """
    fn = "clip_loss"
    red = reduce.resolve(reduction, fn=fn)
    if max_logit_scale is not None:
        check_positive(max_logit_scale, "max_logit_scale", fn)
    x, y, w, dtype, (lt,) = _two_views(fn, image_emb, text_emb, ("image_emb", "text_emb"), where, [("log_temperature", log_temperature)])
    if normalize:
        x, y = l2_normalize(x), l2_normalize(y)
    if max_logit_scale is None:
        scale = jnp.exp(-lt)
    else:  # clipped in log space: no exp overflow (and no inf * 0 gradient) for a very small log_temperature
        scale = jnp.exp(jnp.minimum(-lt, jnp.log(jnp.asarray(max_logit_scale, dtype))))
    # Each device owns its rows i: the image-to-text term of image i (against every text) and
    # the text-to-image term of text i (against every image), so the shares add up to the
    # global loss. Without axis_name the gathered sets are the local ones.
    xg, yg, wg = dist.gather(x, axis_name), dist.gather(y, axis_name), dist.gather(w, axis_name)

    def per_row(xb, yb, wb):
        valid = wb[:, None] * wg[None, :]
        diag = scale * jnp.sum(xb * yb, axis=1)
        i2t = masked_logsumexp(scale * (xb @ yg.T), valid, axis=1) - diag
        t2i = masked_logsumexp(scale * (yb @ xg.T), valid, axis=1) - diag
        return jnp.where(wb > 0, 0.5 * (i2t + t2i), 0.0)

    losses = map_row_blocks(per_row, (x, y, w), block_size, fn=fn)
    return finish(reduce.apply(red, losses, w, axis_name, context=reduce.Context(anchor_weight=w)), dtype)


@_public.front_door
def siglip_loss(x: ArrayLike, y: ArrayLike, t_prime: ArrayLike, bias: ArrayLike, *, normalize: bool = True, reduction: ReductionLike = "mean", where: ArrayLike | None = None, block_size: int | None = None, axis_name: AxisName | None = None) -> Array:
    r"""Pairwise sigmoid loss of SigLIP (Zhai et al., "Sigmoid Loss for Language Image
    Pre-Training", ICCV 2023):

    .. math::
        -\frac{1}{|B|}\sum_i\sum_j \log\sigma\big(z_{ij}\,(t\,\hat x_i\cdot\hat y_j + b)\big),
        \qquad t = e^{t'},\; z_{ij} = 1 \text{ if } i = j \text{ else } -1

    Per-row sums :math:`\ell_i = -\sum_j \log\sigma(\cdot)` are reduced with ``reduction``
    (``"mean"`` gives the paper's :math:`1/|B|`).

    Args:
      x, y: ``[B, D]`` image and text embeddings; row ``i`` of each is the matching pair.
      t_prime: scalar log-scale :math:`t'` (learnable; paper init ``log 10``).
      bias: scalar :math:`b` (learnable; paper init ``-10``). See :func:`init_siglip_params`.
      where: bool ``[B]``: real pairs; padded rows are neither queries nor candidates.

    Scale:
      axis_name: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``: ``y`` is gathered and each
        device sums its rows ``i`` against every column (the positive at ``i``'s global index); the
        value equals the single-device loss on the concatenated batch.
      block_size: rows per block (static): memory ``O(B D + block_size R)`` in forward and
        backward, same value and gradient. Any reduction.
    """
    fn = "siglip_loss"
    red = reduce.resolve(reduction, fn=fn)
    x, y, w, dtype, (tp, b) = _two_views(fn, x, y, ("x", "y"), where, [("t_prime", t_prime), ("bias", bias)])
    if normalize:
        x, y = l2_normalize(x), l2_normalize(y)
    yg, wg = dist.gather(y, axis_name), dist.gather(w, axis_name)
    cols = jnp.arange(yg.shape[0])
    rows = dist.global_rows(x.shape[0], axis_name)

    def per_row(xb, wb, rb):
        logits = jnp.exp(tp) * (xb @ yg.T) + b
        sign = jnp.where(rb[:, None] == cols[None, :], 1.0, -1.0).astype(dtype)
        valid = wb[:, None] * wg[None, :]
        terms = jnp.where(valid > 0, -jax.nn.log_sigmoid(sign * logits), 0.0)
        return jnp.sum(terms, axis=1)

    losses = map_row_blocks(per_row, (x, w, rows), block_size, fn=fn)
    return finish(reduce.apply(red, losses, w, axis_name, context=reduce.Context(anchor_weight=w)), dtype)


def _jaccard(a, b, dtype):
    """Jaccard index of multi-hot rows ``a [B, C]`` and ``b [R, C]``; two empty sets give 1.
    Class ids ``[B]`` / ``[R]`` are one-hot rows: 1 for the same class, else 0."""
    if a.ndim == 1:
        return (a[:, None] == b[None, :]).astype(dtype)
    a = a.astype(dtype)
    b = b.astype(dtype)
    inter = a @ b.T
    union = jnp.sum(a, 1)[:, None] + jnp.sum(b, 1)[None, :] - inter
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 1.0)


@_public.front_door
def multi_supcon_loss(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    temperature: Scalar = 0.1,
    threshold: Scalar = 0.5,
    distance: BaseDistance = CosineSimilarity(),
    reduction: ReductionLike = "avg_nonzero",
    ref_emb: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None,
    where: ArrayLike | None = None,
    ref_where: ArrayLike | None = None,
    axis_name: AxisName | None = None,
) -> Array:
    r"""Multi-label supervised contrastive loss (MultiSupCon), per anchor :math:`i`:

    .. math::
        -\frac{1}{|N(i)|}\sum_{p\in N(i)} s_{ip}\Big[z_i\cdot z_p/\tau -
        \log\sum_{a\in A(i)} e^{z_i\cdot z_a/\tau}\Big],\qquad
        N(i) = \{p \in A(i) : s_{ip} \ge c\}

    where :math:`s_{ip} = |Y_i\cap Y_p| / |Y_i\cup Y_p|` is the Jaccard index of the label sets
    (two empty sets: 1), :math:`c` = ``threshold`` (inclusive), and :math:`A(i)` is every other
    (real) sample, or every reference with ``ref_emb``. Anchors with no positive give 0.

    After Zhang et al.'s multi-label SupCon and PML PR #667 / PML 3's ``MultiSupConLoss
    (temperature=0.1, threshold=0.5)`` with ``CosineSimilarity`` and ``AvgNonZeroReducer``.
    Unlike :func:`supcon_loss` (PML 2.9) there is no batch-level gate: an anchor with positives
    and no negatives still has a loss (its denominator holds its positives).

    Args:
      labels: multi-hot ``[B, C]`` (bool, int or float in {0, 1}), or class ids ``[B]``
        (taken as one-hot rows: the same class is a positive of Jaccard index 1, SupCon's
        positives).
      ref_labels: of the same kind, ``[R, C]`` or ``[R]``, with ``ref_emb``.

    Scale:
      axis_name: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``: this device's rows are the
        anchors, the references and their labels are gathered from every device (a sample is never
        its own positive); returns the single-device loss on the concatenated batch.
    """
    fn = "multi_supcon_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn)
    check_positive(temperature, "temperature", fn)
    if isinstance(threshold, (int, float)) and not 0 <= threshold <= 1:
        raise ValueError(f"{fn}: `threshold` must be in [0, 1]; got {threshold!r}")
    # Labels only (the Jaccard weights are read from them): a mask is refused here.
    batch = _checks.check_embeddings(embeddings, "embeddings", fn=fn).shape[0]
    lab = _checks.check_labels(labels, batch, "labels", fn=fn)
    b = _pairs.from_inputs(fn, embeddings, lab, ref_emb=ref_emb, ref_labels=ref_labels, where=where, ref_where=ref_where, axis_name=axis_name)
    mat = distance(b.emb, b.ref)
    logits = (mat if distance.is_inverted else -mat) / temperature
    valid = b.anchor_weight[:, None] * b.ref_weight[None, :]
    if b.self_cols is not None:  # no self-pairs (each anchor's own column, global with axis_name)
        valid = valid * (b.self_cols[:, None] != jnp.arange(b.ref.shape[0])[None, :]).astype(b.dtype)
    sim = _jaccard(b.labels, b.ref_labels, b.dtype)
    pos = (valid > 0) & (sim >= threshold)
    log_prob = logits - masked_logsumexp(logits, valid)[:, None]
    num = jnp.sum(jnp.where(pos, sim * log_prob, 0.0), axis=1)
    losses = -reduce.safe_divide(num, jnp.sum(pos.astype(b.dtype), axis=1))
    context = reduce.Context(labels=b.labels, anchor_weight=b.anchor_weight)
    return finish(reduce.apply(red, losses, b.anchor_weight, axis_name, context=context), b.dtype)


def _dcl(fn, x, y, temperature, sigma, reduction, where, axis_name=None):
    red = reduce.resolve(reduction, fn=fn)
    check_positive(temperature, "temperature", fn)
    if sigma is not None:
        check_positive(sigma, "sigma", fn)
    x, y, w, dtype, _ = _two_views(fn, x, y, ("x", "y"), where)
    n = x.shape[0]
    xn, yn = l2_normalize(x), l2_normalize(y)
    # Local rows (both views of this device's samples) against both views of the global batch.
    z = jnp.concatenate([xn, yn], axis=0)  # [2B, D]
    xg, yg, wg = dist.gather(xn, axis_name), dist.gather(yn, axis_name), dist.gather(w, axis_name)
    ng = xg.shape[0]
    zg = jnp.concatenate([xg, yg], axis=0)  # [2N, D]
    logits = (z @ zg.T) / temperature
    rows = dist.global_rows(n, axis_name)
    sample = jnp.concatenate([rows, rows])
    sample_g = jnp.arange(2 * ng) % ng
    w2 = jnp.concatenate([w, w])
    w2g = jnp.concatenate([wg, wg])
    neg = (sample[:, None] != sample_g[None, :]).astype(dtype) * w2[:, None] * w2g[None, :]
    pos_xy = jnp.sum(xn * yn, axis=1) / temperature  # <x_i, y_i> / tau, the positive of both views
    pos_logit = jnp.concatenate([pos_xy, pos_xy])
    if sigma is not None:
        s = jnp.sum(xn * yn, axis=1) / sigma
        # w_i = 2 - exp(s_i) / mean_k exp(s_k), the mean over the real rows of the global batch.
        s_max = jax.lax.stop_gradient(dist.pmax(jnp.max(jnp.where(w > 0, s, -jnp.inf)), axis_name))
        s_max = jnp.where(jnp.isfinite(s_max), s_max, 0.0)
        e = jnp.where(w > 0, jnp.exp(s - s_max), 0.0)
        weight = 2.0 - e * reduce.safe_divide(dist.psum(jnp.sum(w), axis_name), dist.psum(jnp.sum(e), axis_name))
        pos_logit = pos_logit * jnp.concatenate([weight, weight])
    has_neg = jnp.any(neg > 0, axis=1)
    losses = jnp.where(has_neg & (w2 > 0), masked_logsumexp(logits, neg) - pos_logit, 0.0)
    return finish(reduce.apply(red, losses, w2, axis_name, context=reduce.Context(anchor_weight=w2)), dtype)


@_public.front_door
def dcl_loss(x: ArrayLike, y: ArrayLike, *, temperature: Scalar = 0.1, reduction: ReductionLike = "mean", where: ArrayLike | None = None, axis_name: AxisName | None = None) -> Array:
    r"""Decoupled contrastive loss (Yeh et al., "Decoupled Contrastive Learning", ECCV 2022,
    eq. 6), for each view :math:`k` and sample :math:`i`:

    .. math::
        -\langle z_i^{(k)}, z_i^{(3-k)}\rangle/\tau + \log\sum_{l\in\{1,2\}}\sum_{j\ne i}
        e^{\langle z_i^{(k)}, z_j^{(l)}\rangle/\tau}

    on L2-normalised embeddings: the InfoNCE denominator without the positive. The ``[2B]``
    terms (``x`` rows first) are reduced with ``reduction`` (mean over both views). A batch of
    one sample has no negatives and gives 0.

    Scale:
      axis_name: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``: both views are gathered;
        each device computes the terms of both views of its own samples against both views of the
        global batch and the reduction sums the shares: the single-device loss on the concatenated
        batch (``"none"``: this device's ``[2 B_local]`` terms, ``x`` rows first).
    """
    return _dcl("dcl_loss", x, y, temperature, None, reduction, where, axis_name)


@_public.front_door
def dclw_loss(x: ArrayLike, y: ArrayLike, *, temperature: Scalar = 0.1, sigma: Scalar = 0.5, reduction: ReductionLike = "mean", where: ArrayLike | None = None, axis_name: AxisName | None = None) -> Array:
    r"""Weighted decoupled contrastive loss (DCLW, Yeh et al., ECCV 2022, eq. 7): as
    :func:`dcl_loss` with the positive term scaled by the von Mises-Fisher weight

    .. math::
        w_i = 2 - \frac{e^{\langle z_i^{(1)}, z_i^{(2)}\rangle/\sigma}}
        {\frac1N\sum_k e^{\langle z_k^{(1)}, z_k^{(2)}\rangle/\sigma}}

    (``sigma=0.5``), shared by both views of sample :math:`i`. The weight is differentiated
    through (as in the lightly implementation; the paper does not say otherwise).

    Scale:
      axis_name: as :func:`dcl_loss`; the weights' normaliser (the mean of
        :math:`e^{\langle z^{(1)}_k, z^{(2)}_k\rangle/\sigma}`) runs over the global batch.
    """
    return _dcl("dclw_loss", x, y, temperature, sigma, reduction, where, axis_name)


@_public.front_door
def barlow_twins_loss(x: ArrayLike, y: ArrayLike, *, lambd: Scalar = 5e-3, eps: Scalar = 1e-5, where: ArrayLike | None = None, axis_name: AxisName | None = None) -> Array:
    r"""Barlow Twins (Zbontar et al., ICML 2021):

    .. math::
        \sum_i (1 - C_{ii})^2 + \lambda\sum_i\sum_{j\ne i} C_{ij}^2,\qquad
        C = \tfrac1N \tilde x^\top \tilde y

    where :math:`\tilde x, \tilde y` are the views normalised per dimension over the batch,
    :math:`(x - \mu)/\sqrt{\sigma^2 + \epsilon}` with the biased variance -- the authors'
    ``BatchNorm1d(affine=False)`` in training mode (``eps=1e-5``). ``lambd`` is the paper's
    :math:`\lambda = 5\cdot10^{-3}`. With ``where`` the statistics and :math:`N` count the real
    rows only; no real row gives 0.

    Scale:
      axis_name: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``: the batch statistics
        (count, means, variances) and the cross-correlation sums are summed over devices, so
        :math:`C` and the value are the concatenated batch's.
    """
    fn = "barlow_twins_loss"
    check_positive(eps, "eps", fn)
    x, y, w, dtype, _ = _two_views(fn, x, y, ("x", "y"), where)
    # Batch statistics (means, variances, the cross-correlation) are sums over the rows: with
    # axis_name they are summed over devices, so C is the global batch's.
    count = dist.psum(jnp.sum(w), axis_name)
    inv = reduce.safe_divide(jnp.asarray(1.0, dtype), count)

    def bn(z):
        mu = dist.psum(jnp.sum(w[:, None] * z, axis=0), axis_name) * inv
        zc = (z - mu) * w[:, None]
        var = dist.psum(jnp.sum(zc * zc, axis=0), axis_name) * inv
        return zc / jnp.sqrt(var + eps)

    c = dist.psum(bn(x).T @ bn(y), axis_name) * inv
    d = c.shape[0]
    off = 1.0 - jnp.eye(d, dtype=dtype)
    on_diag = jnp.sum((1.0 - jnp.diagonal(c)) ** 2)
    off_diag = jnp.sum(off * c * c)
    value = jnp.where(count > 0, on_diag + lambd * off_diag, 0.0)
    return finish(value, dtype)
