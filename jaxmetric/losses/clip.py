"""CLIP-style two-tower losses (beyond PML 2.9): the symmetric InfoNCE of CLIP and the
pairwise sigmoid loss of SigLIP between image and text embeddings.

They take ``(x, y)`` with ``x[i]`` and ``y[i]`` an image and its caption (or two views) of sample
``i``; ``where`` (bool ``[B]``) marks real pairs so a padded final batch keeps its static shape.
Learned scalars (temperature, bias) are positional arguments, so their gradient comes out of
``jax.grad`` like any parameter's; ``init_clip_params`` and ``init_siglip_params`` give the
papers' initial values.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import math

import jax
import jax.numpy as jnp

from jaxmetric._src import collectives, pairs as _pairs
from jaxmetric import reduce
from jaxmetric._src.front_door import front_door
from jaxmetric._src.validate import check_positive
from jaxmetric._src.numerics import finish, masked_logsumexp
from jaxmetric.distances import l2_normalize
from jaxmetric._src.engine import map_row_blocks

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, AxisName, ReductionLike, Scalar


@front_door
def init_clip_params(temperature: float = 0.07) -> dict:
    """CLIP's initial learnable temperature: ``{"log_temperature": log(0.07)}``."""
    check_positive(temperature, "temperature", "init_clip_params")
    return {"log_temperature": jnp.asarray(math.log(temperature), jnp.float32)}


@front_door
def init_siglip_params(t_prime: float = math.log(10.0), bias: float = -10.0) -> dict:
    """SigLIP's initial values: ``{"t_prime": log 10, "bias": -10}``."""
    for name, value in (("t_prime", t_prime), ("bias", bias)):
        shape = jnp.shape(value)
        if shape != ():
            raise ValueError(f"init_siglip_params: `{name}` must be a scalar; got shape {tuple(shape)}")
    return {"t_prime": jnp.asarray(t_prime, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}


@front_door
def clip_loss(
    image_emb: ArrayLike, text_emb: ArrayLike, log_temperature: ArrayLike, *, max_logit_scale: Scalar = 100.0,
    normalize: bool = True, reduction: ReductionLike = "mean", where: ArrayLike | None = None,
    block_size: int | None = None, axis_name: AxisName | None = None,
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
    x, y, w, dtype, (lt,) = _pairs.two_views(fn, image_emb, text_emb, ("image_emb", "text_emb"), where, [("log_temperature", log_temperature)])
    if normalize:
        x, y = l2_normalize(x), l2_normalize(y)
    if max_logit_scale is None:
        scale = jnp.exp(-lt)
    else:  # clipped in log space: no exp overflow (and no inf * 0 gradient) for a very small log_temperature
        scale = jnp.exp(jnp.minimum(-lt, jnp.log(jnp.asarray(max_logit_scale, dtype))))
    # Each device owns its rows i: the image-to-text term of image i (against every text) and
    # the text-to-image term of text i (against every image), so the shares add up to the
    # global loss. Without axis_name the gathered sets are the local ones.
    xg, yg, wg = collectives.gather(x, axis_name), collectives.gather(y, axis_name), collectives.gather(w, axis_name)

    def per_row(xb, yb, wb):
        valid = wb[:, None] * wg[None, :]
        diag = scale * jnp.sum(xb * yb, axis=1)
        i2t = masked_logsumexp(scale * (xb @ yg.T), valid, axis=1) - diag
        t2i = masked_logsumexp(scale * (yb @ xg.T), valid, axis=1) - diag
        return jnp.where(wb > 0, 0.5 * (i2t + t2i), 0.0)

    losses = map_row_blocks(per_row, (x, y, w), block_size, fn=fn)
    return finish(reduce.apply(red, losses, w, axis_name, context=reduce.Context(anchor_weight=w)), dtype)


@front_door
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
    x, y, w, dtype, (tp, b) = _pairs.two_views(fn, x, y, ("x", "y"), where, [("t_prime", t_prime), ("bias", bias)])
    if normalize:
        x, y = l2_normalize(x), l2_normalize(y)
    yg, wg = collectives.gather(y, axis_name), collectives.gather(w, axis_name)
    cols = jnp.arange(yg.shape[0])
    rows = collectives.global_rows(x.shape[0], axis_name)

    def per_row(xb, wb, rb):
        logits = jnp.exp(tp) * (xb @ yg.T) + b
        sign = jnp.where(rb[:, None] == cols[None, :], 1.0, -1.0).astype(dtype)
        valid = wb[:, None] * wg[None, :]
        terms = jnp.where(valid > 0, -jax.nn.log_sigmoid(sign * logits), 0.0)
        return jnp.sum(terms, axis=1)

    losses = map_row_blocks(per_row, (x, w, rows), block_size, fn=fn)
    return finish(reduce.apply(red, losses, w, axis_name, context=reduce.Context(anchor_weight=w)), dtype)
