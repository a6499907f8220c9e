"""Proxy-based losses: embeddings are compared with one (or several) learned proxies per class.

Every loss takes ``(embeddings [B, D], labels [B] integer class ids, weights, *, ...)`` where
``weights`` is the learned class matrix, an explicit argument shaped ``(num_classes, dim)``
(SoftTriple: ``(num_classes, centers_per_class, dim)`` or PML's flattened
``(num_classes * centers_per_class, dim)``). It lives in the caller's params pytree, so it gets
its own optax transform and shards like any other parameter. Create it with
:func:`jaxmetric.init_class_weights` (PML's initialisation) and read inference logits with
:func:`jaxmetric.class_logits` (PML's ``get_logits``).

Shared keywords:

* ``mask``: a :class:`~jaxmetric.PairMask` / :class:`~jaxmetric.TripletMask` (e.g. a miner's
  output or :func:`jaxmetric.from_indices`); converted to per-sample weights as PML's
  ``convert_to_weights`` does with an ``indices_tuple`` (count of each sample / max count).
* ``sample_weights``: those per-sample weights given directly (``[B]``).
* ``where``: bool ``[B]``, padded rows contribute nothing.
* ``weight_regularizer``: any callable ``W -> scalar`` (e.g. from :mod:`jaxmetric.regularizers`),
  added as ``weight_reg_weight * weight_regularizer(W)``, PML's ``WeightRegularizerMixin``.
* ``axis_name``: inside ``pmap``/``shard_map``/``vmap(axis_name=...)`` the value is the
  single-device loss on the concatenated batch and the gradients (the embeddings' layers and
  ``weights``) are exact after ``pmean``; a ``mask`` is then ``[B_local, B_global]``. ProxyNCA and
  SoftTriple reduce their per-sample losses over the global batch (partial sums ``psum``-ed),
  so uneven ``where`` padding across devices stays exact; ProxyAnchor combines its per-proxy
  log-sum-exps over devices (below).
* ``block_size`` (static): ProxyNCA and SoftTriple compute the ``[B, C]`` logits block by block
  of rows, memory ``O(B D + C D + block_size C)``, any reduction; ProxyAnchor blocks over
  proxies (below). Blocks are rematerialised in the backward pass: same value and gradient.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from jaxmetric._src import class_matrix as cm, collectives
from jaxmetric._src.front_door import front_door
from jaxmetric import reduce
from jaxmetric._src.blocks import map_blocks
from jaxmetric.distances import CosineSimilarity, LpDistance
from jaxmetric._src.validate import check_block_size, check_distance, check_positive

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, AxisName, ReductionLike, Scalar
    from jaxmetric.distances import BaseDistance
    from typing import Callable


@front_door
def proxy_nca_loss(
    embeddings: ArrayLike, labels: ArrayLike, weights: ArrayLike, *, softmax_scale: Scalar = 1.0,
    distance: BaseDistance = LpDistance(power=2), reduction: ReductionLike = "mean", where: ArrayLike | None = None,
    mask: ArrayLike | None = None, sample_weights: ArrayLike | None = None,
    weight_regularizer: Callable[..., Array] | None = None, weight_reg_weight: Scalar = 1.0,
    block_size: int | None = None, axis_name: AxisName | None = None,
) -> Array:
    r"""ProxyNCA (Movshovitz-Attias et al., "No Fuss Distance Metric Learning using Proxies",
    ICCV 2017): NCA between each embedding and the class proxies :math:`p_c`,

    .. math::
        L_i = -\log \frac{e^{-s\, d(x_i, p_{y_i})}}{\sum_{c} e^{-s\, d(x_i, p_c)}}

    with :math:`s` = ``softmax_scale`` and :math:`d` the squared L2 distance of normalised
    vectors (similarities enter un-negated).

    Args:
      embeddings: ``[B, D]`` float.
      labels: ``[B]`` integer class ids in ``[0, num_classes)``.
      weights: the proxies, ``(num_classes, D)``; :func:`init_class_weights` ``kind="proxy_nca"``
        draws them from N(0, 1) as PML.
      mask: per-sample weights from a selection; only the anchor positions count (PML passes
        ``using_ref=True`` for ProxyNCA).

    PML: ``ProxyNCALoss(num_classes, embedding_size, softmax_scale=1)``,
    ``LpDistance(power=2)``, ``MeanReducer``. Deliberate difference: PML drops a row whose
    target probability underflows to exactly 0 (huge ``softmax_scale``); jaxmetric works in
    log space and keeps it with its finite loss.

    Shared keywords (``mask``, ``sample_weights``, ``where``, ``weight_regularizer``,
    ``weight_reg_weight``, ``axis_name``, ``block_size``): :mod:`jaxmetric.losses.proxy`.
    """
    fn = "proxy_nca_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_positive(softmax_scale, "softmax_scale", fn)
    check_distance(distance, fn)
    cm.check_regularizer(weight_regularizer, red, fn)
    x = cm.prepare(fn, embeddings, labels, weights, where=where, mask=mask, sample_weights=sample_weights, using_ref=True, axis_name=axis_name)

    def per_sample(e, y):
        mat = distance(e, x.weights)
        return cm.cross_entropy(softmax_scale * (mat if distance.is_inverted else -mat), y)

    value = cm.reduce_samples(red, cm.sample_losses(per_sample, x, block_size, fn), x)
    value = cm.add_regularizer(value, weight_regularizer, x.weights, weight_reg_weight, fn)
    return cm.finish(value, x)


@front_door
def proxy_anchor_loss(
    embeddings: ArrayLike, labels: ArrayLike, weights: ArrayLike, *, margin: Scalar = 0.1, alpha: Scalar = 32.0,
    distance: BaseDistance = CosineSimilarity(), reduction: ReductionLike = "mean", where: ArrayLike | None = None,
    mask: ArrayLike | None = None, sample_weights: ArrayLike | None = None,
    weight_regularizer: Callable[..., Array] | None = None, weight_reg_weight: Scalar = 1.0,
    block_size: int | None = None, axis_name: AxisName | None = None,
) -> Array:
    r"""Proxy-Anchor loss (Kim et al., CVPR 2020). With :math:`P^+` the proxies of classes
    present in the batch, :math:`X_c^+` / :math:`X_c^-` the embeddings of / not of class
    :math:`c` and :math:`s` the cosine similarity:

    .. math::
        L = \frac{1}{|P^+|}\sum_{c\in P^+}\log\Big(1+\sum_{x\in X_c^+} e^{-\alpha(s(x,p_c)-\delta)}\Big)
          + \frac{1}{C}\sum_{c}\log\Big(1+\sum_{x\in X_c^-} e^{\alpha(s(x,p_c)+\delta)}\Big)

    with :math:`\delta` = ``margin``. Per-sample weights :math:`w_i` (from ``mask`` or
    ``sample_weights``) enter as PML does, as :math:`+(w_i - 1)` inside each exponent, so an
    unselected sample is down-weighted by :math:`e^{-1}`, not removed.

    Args:
      weights: the proxies ``(num_classes, D)``; PML initialises them with
        ``kaiming_normal_(mode="fan_out")``, i.e. N(0, 2 / num_classes)
        (:func:`init_class_weights` ``kind="proxy_anchor"``).
      reduction: ``"mean"`` (default) is PML's ``DivisorReducer``: the positive terms are
        averaged over the proxies with at least one positive, the negative terms over all
        proxies. ``"none"`` returns the per-proxy ``pos + neg`` terms ``[C]``. A callable gets
        ``(pos_terms, has_positive)`` and ``(neg_terms, ones)`` and the two results are summed
        (PML's ``MeanReducer`` is ``lambda l, w: l.mean()``).

    PML: ``ProxyAnchorLoss(num_classes, embedding_size, margin=0.1, alpha=32)``,
    ``CosineSimilarity``, ``DivisorReducer``.

    Scale:
      axis_name: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``: the per-proxy
        log-sum-exps over the batch are combined over devices (global max, ``psum`` of the
        shifted sums and of the positive counts);
        the value is the single-device loss on the concatenated batch and the gradients (the
        embeddings' layers and ``weights``) are exact after ``pmean``. A ``mask`` is then
        ``[B_local, B_global]``. The per-proxy terms are then global, so ``"none"`` returns the
        global ``[C]`` terms and a callable reduction is allowed.
      block_size: proxies per block (static): the ``[B, C]`` similarities are computed block by
        block of proxies (rematerialised in the backward pass), memory ``O(B D + C D + B
        block_size)``, same value and gradient.
    """
    fn = "proxy_anchor_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_positive(alpha, "alpha", fn)
    check_distance(distance, fn)
    cm.check_regularizer(weight_regularizer, red, fn)
    check_block_size(block_size, fn)
    x = cm.prepare(fn, embeddings, labels, weights, where=where, mask=mask, sample_weights=sample_weights, axis_name=axis_name)
    c = x.num_classes
    shift = 0.0 if x.sample_weights is None else (x.sample_weights - 1.0)[:, None]

    def parts(w_blk, cls, real):
        """Per-proxy local log-sum-exp pieces over this device's batch rows, for the proxies
        ``w_blk`` of classes ``cls`` (``real``: False for the padding of a last block)."""
        sim = distance(x.emb, w_blk)
        onehot = ((x.labels[:, None] == cls[None, :]) & real[None, :]).astype(x.dtype)
        pos_mask = onehot * x.valid[:, None]
        neg_mask = (1.0 - onehot) * x.valid[:, None]
        pos = collectives.lse_parts(alpha * distance.margin(sim, margin) + shift, pos_mask, axis=0)
        neg = collectives.lse_parts(alpha * distance.margin(-margin, sim) + shift, neg_mask, axis=0)
        return pos, neg, jax.lax.stop_gradient(jnp.sum(pos_mask, axis=0))

    # With block_size, blocks of proxies: never a [B, C] matrix (rematerialised in the backward pass).
    (pm, ps), (nm, ns), count = map_blocks(parts, (x.weights, jnp.arange(c), jnp.ones((c,), bool)),
                                           block=c if block_size is None else block_size, combine="rows")
    # Per-proxy sums run over the batch: combined over devices (log-sum-exp pieces and counts).
    pos_term = collectives.lse_combine(pm, ps, add_one=True, axis_name=axis_name)
    neg_term = collectives.lse_combine(nm, ns, add_one=True, axis_name=axis_name)
    has_pos = (collectives.psum(count, axis_name) > 0).astype(x.dtype)
    if red == "none":
        return cm.finish(pos_term + neg_term, x)
    value = reduce.apply(red, pos_term, has_pos) + reduce.apply(red, neg_term, jnp.ones((c,), x.dtype))
    value = cm.add_regularizer(value, weight_regularizer, x.weights, weight_reg_weight, fn)
    return cm.finish(value, x)


def _soft_triple_sim(emb, centers, gamma, distance):
    """Relaxed class similarity ``S_ic = sum_k softmax_k(s_ick / gamma) s_ick`` ``[B, C]``."""
    c, k, d = centers.shape
    sim = distance(emb, centers.reshape(c * k, d)).reshape(emb.shape[0], c, k)
    prob = jax.nn.softmax(sim / gamma, axis=2)
    return jnp.sum(prob * sim, axis=2)


@front_door
def soft_triple_loss(
    embeddings: ArrayLike, labels: ArrayLike, weights: ArrayLike, *, centers_per_class: int | None = None,
    la: Scalar = 20.0, gamma: Scalar = 0.1, margin: Scalar = 0.01, distance: BaseDistance = CosineSimilarity(),
    reduction: ReductionLike = "mean", where: ArrayLike | None = None, mask: ArrayLike | None = None,
    sample_weights: ArrayLike | None = None, weight_regularizer: Callable[..., Array] | None = None,
    weight_reg_weight: Scalar = 1.0, block_size: int | None = None, axis_name: AxisName | None = None,
) -> Array:
    r"""SoftTriple loss (Qian et al., "SoftTriple Loss: Deep Metric Learning Without Triplet
    Sampling", ICCV 2019). Each class has :math:`K` centers :math:`w_{c,k}`;

    .. math::
        S_{i,c} = \sum_k \frac{e^{s_{i,c,k}/\gamma}}{\sum_{k'} e^{s_{i,c,k'}/\gamma}}\, s_{i,c,k},
        \qquad
        L_i = -\log\frac{e^{\lambda (S_{i,y_i}-\delta)}}{e^{\lambda (S_{i,y_i}-\delta)} + \sum_{c\neq y_i} e^{\lambda S_{i,c}}}

    with :math:`\lambda` = ``la``, :math:`\gamma` = ``gamma``, :math:`\delta` = ``margin``.

    Args:
      weights: the centers, ``(num_classes, centers_per_class, D)`` (preferred), or PML's
        flattened ``(num_classes * centers_per_class, D)`` with class-major rows (row
        ``c * K + k`` is center ``k`` of class ``c``; PML's ``fc.t()``).
      centers_per_class: ``None`` takes K from 3-D weights; 2-D weights then use PML's
        default 10. Static.
      weight_regularizer: receives the flattened ``(num_classes * K, D)`` centers, as PML
        passes ``fc.t()`` (the paper's center-merging term is PML's
        ``SparseCentersRegularizer``).

    PML: ``SoftTripleLoss(num_classes, embedding_size, centers_per_class=10, la=20, gamma=0.1,
    margin=0.01)``, ``CosineSimilarity`` (a similarity is required), ``MeanReducer``; centers
    initialised ``kaiming_uniform_(a=sqrt(5))``, i.e. U(-1/sqrt(C K), 1/sqrt(C K)).

    Shared keywords (``mask``, ``sample_weights``, ``where``, ``weight_regularizer``,
    ``weight_reg_weight``, ``axis_name``, ``block_size``): :mod:`jaxmetric.losses.proxy`.
    """
    fn = "soft_triple_loss"
    red = reduce.resolve(reduction, fn=fn)
    check_positive(la, "la", fn)
    check_distance(distance, fn, inverted=True)
    check_positive(gamma, "gamma", fn)
    cm.check_regularizer(weight_regularizer, red, fn)
    x = cm.prepare(
        fn, embeddings, labels, weights, where=where, mask=mask, sample_weights=sample_weights,
        centers=(centers_per_class, 10, "centers_per_class"), axis_name=axis_name,
    )
    c, k, d = x.weights.shape

    def per_sample(e, y):
        s = _soft_triple_sim(e, x.weights, gamma, distance)
        return cm.cross_entropy(la * (s - margin * jax.nn.one_hot(y, c, dtype=x.dtype)), y)

    value = cm.reduce_samples(red, cm.sample_losses(per_sample, x, block_size, fn), x)
    value = cm.add_regularizer(value, weight_regularizer, x.weights.reshape(c * k, d), weight_reg_weight, fn)
    return cm.finish(value, x)
