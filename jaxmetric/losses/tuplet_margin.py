"""Tuplet margin loss: an additive angular margin on positive pairs against every negative.

Names, hyperparameters (the margin in degrees, as PML) and defaults are PML 2.9's. It works in
``O(B R)`` memory.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from jaxmetric import reduce
from jaxmetric._src import pairs as _pairs
from jaxmetric._src.engine import evaluate
from jaxmetric._src.front_door import front_door
from jaxmetric._src.validate import check_distance, check_positive
from jaxmetric._src.numerics import finish, has_any, masked_logsumexp
from jaxmetric.distances import CosineSimilarity

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, AxisName, LabelsOrMask, ReductionLike, Scalar
    from jaxmetric.distances import BaseDistance


@front_door
def tuplet_margin_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, margin: Scalar = 5.73, scale: Scalar = 64.0,
    distance: BaseDistance = CosineSimilarity(), reduction: ReductionLike = "mean", ref_emb: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None, where: ArrayLike | None = None, ref_where: ArrayLike | None = None,
    axis_name: AxisName | None = None, block_size: int | None = None,
) -> Array:
    r"""Tuplet margin loss (Yu & Tao, "Deep Metric Learning with Tuplet Margin Loss", ICCV
    2019), per positive pair :math:`(a, p)`:

    .. math::
        \ell_{ap} = \log\Big(1 + \sum_{n\in N_a} e^{s\,(\cos\theta_{an} - \cos(\theta_{ap} - \beta))}\Big)

    with :math:`\beta` = ``margin`` in degrees, :math:`s` = ``scale``, :math:`N_a` the negative
    pairs of the anchor (multiplicities count). Computed without ``acos``:
    :math:`\cos(\theta - \beta) = c\cos\beta + \sqrt{1 - c^2}\,\sin\beta` with a square root
    that is 0 (zero gradient) at :math:`|c| \ge 1`.

    PML: ``TupletMarginLoss(margin=5.73, scale=64)``, ``CosineSimilarity`` (asserted),
    ``MeanReducer`` over positive pairs. Deliberate differences: PML applies ``acos`` without
    clamping, so a positive cosine that rounds above 1 (duplicate embeddings) gives NaN and a
    cosine of exactly 1 an infinite gradient; jaxmetric is finite there. PML returns 0 when
    every index list has at most one entry.

    Returns:
      Scalar loss (``"none"``: the ``[B, R]`` per-positive-pair losses).

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``, ``ref_emb``,
    ``ref_labels``, ``where``, ``ref_where``, ``axis_name``, ``block_size``): :ref:`shared-arguments`.
    """
    fn = "tuplet_margin_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_positive(scale, "scale", fn)
    check_distance(distance, fn, kind=CosineSimilarity)
    b = _pairs.from_inputs(fn, embeddings, labels_or_mask, ref_emb=ref_emb, ref_labels=ref_labels, where=where, ref_where=ref_where, axis_name=axis_name, contrast=True)
    beta = jnp.deg2rad(jnp.asarray(margin, b.dtype))

    def elements(cos, pos, neg, aw):
        sq = 1.0 - cos * cos
        ok = sq > 0
        sin = jnp.where(ok, jnp.sqrt(jnp.where(ok, sq, 1.0)), 0.0)
        pos_cos = cos * jnp.cos(beta) + sin * jnp.sin(beta)  # cos(theta_ap - beta)
        neg_lse = masked_logsumexp(scale * cos, neg)[:, None]
        row_has = has_any(neg, axis=1)[:, None]
        return [(jnp.where(row_has, jax.nn.softplus(neg_lse - scale * pos_cos), 0.0), pos)], None

    return finish(evaluate(b, distance, red, elements, block_size=block_size, fn=fn), b.dtype)
