"""Non-contrastive self-supervised losses between two views of a batch: VICReg (PML 2.9's
``VICRegLoss``) and Barlow Twins (beyond PML)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from jaxmetric._src import collectives, pairs as _pairs, validate
from jaxmetric import reduce
from jaxmetric._src.front_door import front_door
from jaxmetric._src.validate import check_positive
from jaxmetric._src.numerics import finish

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, AxisName, ReductionLike, Scalar


def _safe_sqrt(x):
    ok = x > 0
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, x, 1.0)), 0.0)


@front_door
def vicreg_loss(
    embeddings: ArrayLike, ref_emb: ArrayLike, *, invariance_lambda: Scalar = 25, variance_mu: Scalar = 25,
    covariance_v: Scalar = 1, eps: Scalar = 1e-4, reduction: ReductionLike = "mean", where: ArrayLike | None = None,
    axis_name: AxisName | None = None,
) -> Array:
    r"""VICReg (Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization
    for Self-Supervised Learning", ICLR 2022), for two views :math:`Z` (``embeddings``) and
    :math:`Z'` (``ref_emb``), both ``[N, D]``:

    .. math::
        L = \lambda\,\operatorname{mean}_i \tfrac{1}{D}\lVert z_i - z'_i\rVert^2
          + \mu\,\operatorname{mean}_d \tfrac12\big[1 - \sqrt{\operatorname{Var}(Z_{:d}) + \epsilon}\big]_+
          + \mu\,\operatorname{mean}_d \tfrac12\big[1 - \sqrt{\operatorname{Var}(Z'_{:d}) + \epsilon}\big]_+
          + \nu\Big(\tfrac1D\sum_{d\ne d'} C(Z)_{dd'}^2 + \tfrac1D\sum_{d\ne d'} C(Z')_{dd'}^2\Big)

    with unbiased variances and covariances :math:`C(Z) = \tilde Z^\top\tilde Z/(N-1)`
    (:math:`\tilde Z` centred), :math:`\lambda, \mu, \nu` = ``invariance_lambda``,
    ``variance_mu``, ``covariance_v``.

    PML: ``VICRegLoss(invariance_lambda=25, variance_mu=25, covariance_v=1, eps=1e-4)``, called
    as ``loss(emb, ref_emb=ref)``; no distance, labels or indices. Its sub-losses are each
    reduced by ``MeanReducer`` (per sample, per dimension, per dimension) and summed with the
    already-reduced covariance term; ``reduction`` here plays that role ("none" returns the
    four sub-losses in a dict, like PML's ``DoNothingReducer``). ``where`` drops padded rows
    from every statistic (all rows padded gives 0). Deliberate difference: with a single (real) row the variance and
    covariance terms use 0 for the undefined ``1/(N-1)`` statistics (PML gives NaN).
    The covariance term grows as :math:`|z|^4`: for embeddings above about 1e9 in magnitude
    the float32 value overflows to ``inf`` (the gradient stays finite).

    Returns:
      Scalar loss, or with ``reduction="none"`` a dict ``invariance_loss`` ``[N]``,
      ``variance_loss1`` / ``variance_loss2`` ``[D]``, ``covariance_loss`` (scalar).

    Scale:
      axis_name: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``: the moments (row counts,
        means, variances, covariance sums) are summed over devices, so the variance and covariance
        terms are the global batch's, and the invariance term is reduced over the global rows: the
        value equals the single-device loss on the concatenated batch. With ``reduction="none"``
        ``invariance_loss`` holds this device's rows. Callable reductions are rejected.
    """
    fn = "vicreg_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_positive(eps, "eps", fn)
    if ref_emb is None:
        raise ValueError(f"{fn}: `ref_emb` (the second view, shape like `embeddings`) is required; got None")
    z = validate.check_embeddings(embeddings, "embeddings", fn=fn)
    zr = validate.check_embeddings(ref_emb, "ref_emb", fn=fn)
    if zr.shape != z.shape:
        raise ValueError(f"{fn}: `ref_emb` must have the shape of `embeddings` {tuple(z.shape)}; got shape {tuple(zr.shape)}")
    n, d = z.shape
    where = validate.check_where(where, n, "where", fn=fn)
    dtype = validate.compute_dtype(z, zr)
    z, zr = z.astype(dtype), zr.astype(dtype)
    w = jnp.ones((n,), dtype) if where is None else where.astype(dtype)
    # The moments are sums over rows: with axis_name they are summed over devices, so the
    # means, variances and covariances are those of the global batch.
    count = collectives.psum(jnp.sum(w), axis_name)
    dof = count - 1.0

    invariance = invariance_lambda * jnp.mean((z - zr) ** 2, axis=1)

    def centred(x):
        mean = reduce.safe_divide(collectives.psum(jnp.sum(w[:, None] * x, axis=0), axis_name), count)
        return (x - mean) * w[:, None]

    def variance(xc):
        var = reduce.safe_divide(collectives.psum(jnp.sum(xc * xc, axis=0), axis_name), dof)
        return variance_mu * jax.nn.relu(1.0 - _safe_sqrt(var + eps)) / 2.0

    def covariance(xc):
        cov = reduce.safe_divide(collectives.psum(xc.T @ xc, axis_name), dof)
        off = jnp.where(jnp.eye(d, dtype=bool), 0.0, cov)
        return jnp.sum(off * off) / d

    zc, zrc = centred(z), centred(zr)
    present = (count > 0).astype(dtype)  # every row padded: 0, as for any empty selection
    var1, var2 = variance(zc) * present, variance(zrc) * present
    cov = covariance_v * (covariance(zc) + covariance(zrc))
    if red == "none":
        return {
            "invariance_loss": finish(jnp.where(w > 0, invariance, 0.0), dtype),
            "variance_loss1": finish(var1, dtype),
            "variance_loss2": finish(var2, dtype),
            "covariance_loss": finish(cov, dtype),
        }
    dim_w = jnp.ones((d,), dtype)
    # The per-sample invariance term is the only one over (local) rows; the others are global.
    value = reduce.apply(red, invariance, w, axis_name) + reduce.apply(red, var1, dim_w) + reduce.apply(red, var2, dim_w) + cov
    return finish(value, dtype)


@front_door
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
    x, y, w, dtype, _ = _pairs.two_views(fn, x, y, ("x", "y"), where)
    # Batch statistics (means, variances, the cross-correlation) are sums over the rows: with
    # axis_name they are summed over devices, so C is the global batch's.
    count = collectives.psum(jnp.sum(w), axis_name)
    inv = reduce.safe_divide(jnp.asarray(1.0, dtype), count)

    def bn(z):
        mu = collectives.psum(jnp.sum(w[:, None] * z, axis=0), axis_name) * inv
        zc = (z - mu) * w[:, None]
        var = collectives.psum(jnp.sum(zc * zc, axis=0), axis_name) * inv
        return zc / jnp.sqrt(var + eps)

    c = collectives.psum(bn(x).T @ bn(y), axis_name) * inv
    d = c.shape[0]
    off = 1.0 - jnp.eye(d, dtype=dtype)
    on_diag = jnp.sum((1.0 - jnp.diagonal(c)) ** 2)
    off_diag = jnp.sum(off * c * c)
    value = jnp.where(count > 0, on_diag + lambd * off_diag, 0.0)
    return finish(value, dtype)
