"""Angular loss: the angle at the negative of each (anchor, positive, negative) triangle.

Names, hyperparameters (the angle in degrees, as PML) and defaults are PML 2.9's. It works in
``O(B R)`` memory.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from jaxmetric import reduce
from jaxmetric._src.engine import evaluate
from jaxmetric._src.front_door import front_door
from jaxmetric._src.validate import check_distance, check_positive
from jaxmetric._src.numerics import finish, has_any
from jaxmetric.distances import LpDistance, l2_normalize
from jaxmetric._src.labels import relation, resolve_labelled

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, AxisName, LabelsOrMask, ReductionLike, Scalar
    from jaxmetric.distances import BaseDistance


def _row_shift(x, w):
    """Per-row max of ``x`` over ``w > 0`` (0 for an empty row), as a constant."""
    m = jnp.max(jnp.where(w > 0, x, -jnp.inf), axis=1, keepdims=True)
    return jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))


@front_door
def angular_loss(
    embeddings: ArrayLike, labels_or_mask: LabelsOrMask, *, alpha: Scalar = 40.0, labels: ArrayLike | None = None,
    distance: BaseDistance = LpDistance(), reduction: ReductionLike = "mean", ref_emb: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None, where: ArrayLike | None = None, ref_where: ArrayLike | None = None,
    axis_name: AxisName | None = None,
) -> Array:
    r"""Angular loss (Wang, Zhou, Wen, Liu & Lin, "Deep Metric Learning with Angular Loss",
    ICCV 2017), per positive pair :math:`(a, p)`:

    .. math::
        \ell_{ap} = \log\Big(1 + \sum_{n\in N_a} \exp\big(4\tan^2\!\alpha\,(x_a + x_p)^\top x_n
        - 2(1 + \tan^2\!\alpha)\, x_a^\top x_p\big)\Big)

    with L2-normalised :math:`x`, ``alpha`` in degrees, and :math:`N_a` every reference whose
    labels differ from the anchor's (multi-hot: shares no label), as in PML, even when a mask
    selects the pairs. Positive pairs come from the labels or the mask (multiplicities count).

    The sum over negatives is computed as a matrix product of per-row-shifted exponentials, so
    memory is ``O(B R + R^2)`` instead of PML's (positive pairs x references); it is exact
    while :math:`8\tan^2\alpha` stays inside the exponent range (``alpha`` up to about 73
    degrees in float32, 84 in float64), and finite beyond.

    Labels: with a :class:`~jaxmetric.PairMask` / :class:`~jaxmetric.TripletMask` in
    ``labels_or_mask`` the negatives still come from labels, so pass them as ``labels=``
    (and ``ref_labels=`` with ``ref_emb``); without them a ``ValueError`` is raised.

    PML: ``AngularLoss(alpha=40)``, ``LpDistance(p=2, power=1, normalize_embeddings=True)``
    (the only distance allowed), ``MeanReducer`` over positive pairs; 0 when there is no
    positive or no negative pair. Deliberate difference: PML normalises anchors and positives
    but takes the negatives :math:`x_n` *un-normalised* from the input; jaxmetric normalises
    them too, as in the paper. Both agree on normalised inputs (values and, for
    ``loss(normalize(x))``, gradients).

    ``axis_name``: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``, local rows are the
    anchors and positives/negatives are gathered over that axis (the ``[R, R]`` positive-to-
    negative cosines are then computed on the global references); every device returns the
    loss of the concatenated global batch.

    Returns:
      Scalar loss (``"none"``: the ``[B, R]`` per-positive-pair losses).

    Shared arguments (``embeddings``, ``labels_or_mask``, ``distance``, ``reduction``,
    ``ref_emb``, ``ref_labels``, ``where``, ``ref_where``, ``axis_name``):
    :ref:`shared-arguments`.
    """
    fn = "angular_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_positive(alpha, "alpha", fn)
    check_distance(distance, fn, kind=LpDistance)
    if not (distance.p == 2 and distance.power == 1 and distance.normalize_embeddings):
        raise ValueError(
            f"{fn}: `distance` must be LpDistance(p=2, power=1, normalize_embeddings=True), as PML asserts; got {distance!r}"
        )
    b, lab, rlab = resolve_labelled(
        fn, embeddings, labels_or_mask, labels=labels, ref_emb=ref_emb, ref_labels=ref_labels,
        where=where, ref_where=ref_where, why=" (the angular loss takes its negatives from the labels)",
        axis_name=axis_name,
    )
    dt = b.dtype
    # N_a from the labels, beside a mask too (PML); the mask's negatives only gate the loss.
    valid = b.anchor_weight[:, None] * b.ref_weight[None, :]
    label_neg = jnp.where(relation(lab, rlab, b.same_set), 0.0, valid).astype(dt)
    xq = l2_normalize(b.emb, distance.p)
    xr = xq if b.same_set else l2_normalize(b.ref, distance.p)
    tan2 = jnp.tan(jnp.deg2rad(jnp.asarray(alpha, dt))) ** 2
    c = 4.0 * tan2
    k = 2.0 * (1.0 + tan2)

    def elements(s, pos, neg, aw, n_a):
        # sum_n n_a[a, n] exp(c s[a, n] + c g[p, n]) = (A @ Bm.T)[a, p] * exp(m_a + m_p)
        # [R, R] positive-to-negative cosines; s is the whole [B, B] matrix here (no blocks)
        g = s if b.same_set else xr @ xr.T
        cs, cg = c * s, c * g
        rw = jnp.broadcast_to(b.ref_weight[None, :], cg.shape)
        m_a = _row_shift(cs, n_a)  # [B, 1]
        m_p = _row_shift(cg, rw)  # [R, 1]
        a_mat = jnp.where(n_a > 0, n_a * jnp.exp(jnp.where(n_a > 0, cs - m_a, 0.0)), 0.0)
        b_mat = jnp.where(rw > 0, jnp.exp(jnp.where(rw > 0, cg - m_p, 0.0)), 0.0)
        total = a_mat @ b_mat.T  # [B, R]
        lse = m_a + m_p.T + jnp.log(jnp.maximum(total, jnp.finfo(dt).tiny))
        row_has = has_any(n_a, axis=1)[:, None]
        losses = jnp.where(row_has, jax.nn.softplus(jnp.where(row_has, lse - k * s, 0.0)), 0.0)
        return [(losses, pos)], [neg]  # PML: no negative pair -> zero loss

    # The engine sees the normalised rows, so its "distance" is their cosine s = xq @ xr.T.
    xb = dataclasses.replace(b, emb=xq, ref=xr)
    return finish(evaluate(xb, lambda q, r: q @ r.T, red, elements, rows=(label_neg,), fn=fn), dt)
