"""Manifold loss with hard proxies (ensemble manifold similarity learning)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from jaxmetric._src import collectives, validate
from jaxmetric import reduce
from jaxmetric._src.front_door import front_door
from jaxmetric._src.numerics import finish, masked_logsumexp
from jaxmetric.distances import CosineSimilarity, safe_norm
from jaxmetric.masks import PairMask, TripletMask
from jaxmetric._src.validate import check_distance, check_static_int, is_concrete_number, reject_ref

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, AxisName, DTypeLike, ReductionLike, Scalar
    from jaxmetric.distances import BaseDistance

# torch.nn.functional.cosine_similarity's epsilon.
_COS_EPS = 1e-8


@front_door
def init_manifold_proxies(key: Array, K: int, dim: int, dtype: DTypeLike = jnp.float32) -> jax.Array:
    """``K`` proxies ``[K, dim]`` drawn from a standard normal (PML: ``torch.randn(K, l)``)."""
    fn = "init_manifold_proxies"
    K = check_static_int(K, "K", fn)
    dim = check_static_int(dim, "dim", fn)
    return jax.random.normal(key, (K, dim), dtype)


@front_door
def manifold_meta_classes(key: Array, batch_size: int, K: int) -> jax.Array:
    """PML's random meta-class assignment: every id in ``0..K-1`` once, the remaining
    ``batch_size - K`` samples uniform over ``0..K-1``, then shuffled (needs ``batch_size >= K``).
    Returns int32 ``[batch_size]``."""
    fn = "manifold_meta_classes"
    batch_size = check_static_int(batch_size, "batch_size", fn)
    K = check_static_int(K, "K", fn)
    if batch_size < K:
        raise ValueError(f"{fn}: `batch_size` must be >= K={K} (every meta-class gets a sample); got {batch_size}")
    k_draw, k_perm = jax.random.split(key)
    extra = jax.random.randint(k_draw, (batch_size - K,), 0, K, dtype=jnp.int32)
    ids = jnp.concatenate([jnp.arange(K, dtype=jnp.int32), extra])
    return jax.random.permutation(k_perm, ids)


def _check_meta_classes(meta_classes, batch, K, fn):
    validate.reject_index_tuple(
        meta_classes, "meta_classes", fn, batch,
        how=(f"{fn} takes no mined pairs (jaxmetric.from_indices(indices_tuple, batch_size) makes masks for the losses "
             "that do); PML's ManifoldLoss reads its indices_tuple as the meta-class ids: pass them here as one integer array"),
    )
    if isinstance(meta_classes, (PairMask, TripletMask)):
        raise TypeError(
            f"{fn}: `meta_classes` must be integer meta-class ids [{batch}] (labels and miner masks are not "
            f"supported; PML passes the ids as indices_tuple); got a {type(meta_classes).__name__}"
        )
    if not hasattr(meta_classes, "shape"):
        meta_classes = jnp.asarray(meta_classes)
    if meta_classes.shape != (batch,):
        raise ValueError(f"{fn}: `meta_classes` must have shape ({batch},) (one id per embedding); got shape {tuple(meta_classes.shape)}")
    if not jnp.issubdtype(meta_classes.dtype, jnp.integer):
        raise TypeError(f"{fn}: `meta_classes` must have an integer dtype; got dtype {meta_classes.dtype}")
    if validate.is_concrete(meta_classes):
        values = np.asarray(meta_classes)
        bad = (values < 0) | (values >= K)
        if bad.any():
            raise ValueError(f"{fn}: `meta_classes` must be ids in [0, {K}) (K = proxies.shape[0]); got value {values[bad].flat[0].item()!r}")
    return meta_classes


def _hinge_lse(scores, own_col, margin):
    """``log(1 + sum_{k != c_i, delta_ik >= 0} exp(delta_ik))``, ``delta = scores - scores[i, c_i] + margin``."""
    own = jnp.take_along_axis(scores, own_col[:, None], axis=1)
    d = scores - own + margin
    not_own = jnp.arange(scores.shape[1])[None, :] != own_col[:, None]
    return masked_logsumexp(d, (not_own & (d >= 0)).astype(d.dtype), add_one=True)


@front_door
def manifold_loss(
    embeddings: ArrayLike, meta_classes: int, proxies: ArrayLike, *, lambdaC: Scalar = 1.0, alpha: Scalar = 0.8,
    margin: Scalar = 5e-4, key: Array | None = None, distance: BaseDistance = CosineSimilarity(),
    reduction: ReductionLike = "mean", ref_emb: ArrayLike | None = None, ref_labels: ArrayLike | None = None,
    where: ArrayLike | None = None, ref_where: ArrayLike | None = None, axis_name: AxisName | None = None,
) -> Array:
    r"""Manifold loss (Aziere & Todorovic, "Ensemble Deep Manifold Similarity Learning using
    Hard Proxies", CVPR 2019).

    On the graph of the ``B`` embeddings and ``K`` proxies,
    :math:`S_{uv} = e^{[s_{uv}]_+/0.5}` (zero diagonal), :math:`\bar S = D^{-1/2} S D^{-1/2}`
    and the random-walk similarity :math:`F = (1-\alpha)(I - \alpha\bar S)^{-1}`. With
    :math:`c_i` the meta-class (proxy) of sample :math:`i`:

    .. math::
        \ell^{int}_i = \log\Big(1 + \sum_{k\ne c_i,\ \delta_{ik}\ge 0} e^{\delta_{ik}}\Big),\quad
        \delta_{ik} = F_{i,k} - F_{i,c_i} + \text{margin}

    (proxy columns of :math:`F`), and :math:`\ell^{ctx}_i` the same with
    :math:`\cos(F_i, F_k)` (rows of :math:`F`) in place of :math:`F_{i,k}`. Per sample
    :math:`\ell_i = \ell^{int}_i + \lambda_C\,\ell^{ctx}_i`, reduced (mean) over the batch.

    PML: ``ManifoldLoss(l, K=50, lambdaC=1.0, alpha=0.8, margin=5e-4)``, ``CosineSimilarity``,
    already reduced (jaxmetric's default ``reduction="mean"`` gives the same value). ``l`` and
    ``K`` come from ``proxies`` ``[K, l]`` (``init_manifold_proxies(key, K, l)``). PML takes the
    meta-class ids as ``indices_tuple``, or draws them at random when it is None; here pass
    ``meta_classes`` ``[B]``, or ``meta_classes=None`` with a PRNG ``key`` for PML's random
    assignment (:func:`manifold_meta_classes`). Labels, masks and ``ref_emb`` are rejected, as
    in PML. Deliberate differences: ``lambdaC=inf`` gives the context loss alone (PML's
    docstring says so, but its code returns ``inf``); the inverse is taken in the compute dtype
    (PML casts to float32); ``where`` removes padded rows from the graph.

    Returns:
      Scalar loss (``"none"``: the ``[B]`` per-sample losses).

    Scale:
      axis_name: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``: the graph couples every
        sample with every other, so each device gathers the global batch, builds and inverts the
        whole ``(N + K) x (N + K)`` system itself (``N`` = global batch; memory and time of the
        single-device loss on every device) and reduces the losses of its own rows; the value is
        the single-device loss on the concatenated batch. With ``key`` (no ``meta_classes``) every
        device draws the global assignment and takes its rows, i.e. the single-device draw.
    """
    fn = "manifold_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_distance(distance, fn)
    reject_ref(fn, ref_emb, ref_labels, ref_where)
    if is_concrete_number(lambdaC) and lambdaC < 0:
        raise ValueError(f"{fn}: `lambdaC` must be >= 0 (inf: context loss only); got {lambdaC!r}")
    emb = validate.check_embeddings(embeddings, "embeddings", fn=fn)
    prox = validate.check_embeddings(proxies, "proxies", fn=fn)
    n, dim = emb.shape
    K = prox.shape[0]
    if prox.shape[1] != dim:
        raise ValueError(f"{fn}: `proxies` must have shape (K, {dim}) (the embedding dim); got shape {tuple(prox.shape)}")
    if meta_classes is None:
        if key is None:
            raise ValueError(f"{fn}: pass `meta_classes` [{n}] or a PRNG `key` for PML's random meta-class assignment; got neither")
        # With axis_name: the global batch's assignment (same key on every device), this
        # device's rows of it -- the single-device draw on the concatenated batch.
        meta_classes = collectives.local_rows(manifold_meta_classes(key, n * collectives.axis_size(axis_name), K), n, axis_name)
    elif key is not None:
        raise ValueError(f"{fn}: pass either `meta_classes` or `key`, not both")
    mc = _check_meta_classes(meta_classes, n, K, fn).astype(jnp.int32)
    where = validate.check_where(where, n, "where", fn=fn)
    dtype = validate.compute_dtype(emb, prox)
    emb, prox = emb.astype(dtype), prox.astype(dtype)
    valid = jnp.ones((n,), dtype) if where is None else where.astype(dtype)

    # The graph couples every sample with every other: with axis_name each device gathers the
    # global batch, builds and inverts the whole (N + K) x (N + K) system (N = global batch) and
    # takes the loss of its own rows; the shares are summed by the reduction.
    emb_g, valid_g = collectives.gather(emb, axis_name), collectives.gather(valid, axis_name)
    rows = collectives.global_rows(n, axis_name)
    ng = emb_g.shape[0]
    nodes = jnp.concatenate([emb_g, prox], axis=0)
    node_ok = jnp.concatenate([valid_g, jnp.ones((K,), dtype)])
    eye = jnp.eye(ng + K, dtype=dtype)
    s = distance(nodes, nodes)
    s = jnp.where(s >= 0, s, 0.0)  # clamp(0, inf), gradient 1 at 0 as torch
    s = jnp.exp(s / 0.5) * (1.0 - eye) * node_ok[:, None] * node_ok[None, :]
    deg = jnp.sum(s, axis=1)
    has = deg > 0
    d_inv_half = jnp.where(has, jax.lax.rsqrt(jnp.where(has, deg, 1.0)), 0.0)
    s_bar = d_inv_half[:, None] * s * d_inv_half[None, :]
    f = (1.0 - alpha) * jnp.linalg.inv(eye - alpha * s_bar)
    f_e, f_p = f[rows], f[ng:]

    loss_int = _hinge_lse(f_e[:, ng:], mc, margin)
    e_n = f_e / jnp.maximum(safe_norm(f_e, keepdims=True), _COS_EPS)
    p_n = f_p / jnp.maximum(safe_norm(f_p, keepdims=True), _COS_EPS)
    loss_ctx = _hinge_lse(e_n @ p_n.T, mc, margin)

    inf = jnp.isinf(lambdaC)
    lam = jnp.where(inf, 1.0, lambdaC)
    losses = jnp.where(inf, 0.0, loss_int) + lam * loss_ctx
    return finish(reduce.apply(red, losses, valid, axis_name), dtype)
