"""Retrieval evaluation: exact k-nearest neighbours in JAX and metric-learning accuracies.

Semantics follow PML's ``AccuracyCalculator`` for class ids: when the reference set is the
query set, each query's own row is excluded; ``R_q`` is the number of references sharing the
query's label (minus itself); queries with ``R_q = 0`` ("lone" queries) are left out.

The neighbour search runs in blocks of queries, so memory is ``O(block * N_ref)`` rather
than ``O(N_query * N_ref)``.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxmetric import _checks
from jaxmetric.distances import BaseDistance, LpDistance

# Squared Euclidean on raw embeddings: the ordering of faiss.IndexFlatL2, PML's default kNN.
DEFAULT_KNN_DISTANCE = LpDistance(normalize_embeddings=False, power=2)


@functools.partial(jax.jit, static_argnames=("k", "distance", "exclude_self", "block_size"))
def knn(query, reference, *, k: int, distance: BaseDistance = DEFAULT_KNN_DISTANCE, exclude_self: bool = False, block_size: int = 1024):
    """Exact ``k`` nearest references of every query: ``(indices [Nq, k], scores [Nq, k])``.

    ``scores`` are distances (ascending) or similarities (descending) of ``distance``. With
    ``exclude_self`` (reference is the query set), query ``i`` never returns reference ``i``.
    """
    nq = query.shape[0]
    nblk = -(-nq // block_size)
    pad = nblk * block_size - nq
    q = jnp.pad(query, ((0, pad), (0, 0))).reshape(nblk, block_size, -1)
    rows = jnp.arange(nblk * block_size).reshape(nblk, block_size)

    def block(args):
        qb, rb = args
        mat = distance(qb, reference)
        scores = mat if distance.is_inverted else -mat
        if exclude_self:
            scores = jnp.where(rb[:, None] == jnp.arange(reference.shape[0])[None, :], -jnp.inf, scores)
        top, idx = jax.lax.top_k(scores, k)
        return idx, top if distance.is_inverted else -top

    idx, scores = jax.lax.map(block, (q, rows))
    return idx.reshape(-1, k)[:nq], scores.reshape(-1, k)[:nq]


def _prepare(query, query_labels, reference, reference_labels, fn):
    query = np.asarray(_checks.check_embeddings(jnp.asarray(query), "query", fn=fn))
    query_labels = np.asarray(query_labels)
    if query_labels.shape != (query.shape[0],):
        raise ValueError(f"{fn}: `query_labels` must be class ids of shape ({query.shape[0]},); got shape {query_labels.shape}")
    same = reference is None
    if same:
        reference, reference_labels = query, query_labels
    else:
        reference = np.asarray(_checks.check_embeddings(jnp.asarray(reference), "reference", fn=fn))
        reference_labels = np.asarray(reference_labels)
        if reference_labels.shape != (reference.shape[0],):
            raise ValueError(
                f"{fn}: `reference_labels` must be class ids of shape ({reference.shape[0]},); got shape {reference_labels.shape}"
            )
    return query, query_labels, reference, reference_labels, same


def retrieval_metrics(
    query,
    query_labels,
    reference=None,
    reference_labels=None,
    *,
    distance: BaseDistance = DEFAULT_KNN_DISTANCE,
    block_size: int = 1024,
) -> dict[str, float]:
    """Precision@1, R-precision and MAP@R (Musgrave et al., "A metric learning reality check",
    ECCV 2020) over the non-lone queries, with ``k`` = the largest ``R_q`` (which gives the
    same values as PML's default ``k`` = whole reference set).
    """
    fn = "retrieval_metrics"
    q, ql, r, rl, same = _prepare(query, query_labels, reference, reference_labels, fn)
    counts = (ql[:, None] == rl[None, :]).sum(1) if len(ql) * len(rl) <= 50_000_000 else _counts(ql, rl)
    r_q = counts - (1 if same else 0)
    keep = r_q > 0
    if not keep.any():
        return {"precision_at_1": float("nan"), "r_precision": float("nan"), "mean_average_precision_at_r": float("nan")}
    k = int(min(max(1, r_q.max()), len(rl) - (1 if same else 0)))
    idx, _ = knn(jnp.asarray(q), jnp.asarray(r), k=k, distance=distance, exclude_self=same, block_size=block_size)
    rel = rl[np.asarray(idx)] == ql[:, None]
    rel, r_q = rel[keep], r_q[keep]
    within_r = np.arange(k)[None, :] < r_q[:, None]
    p_at_1 = rel[:, 0].mean()
    r_prec = ((rel & within_r).sum(1) / r_q).mean()
    precision_at_j = np.cumsum(rel, axis=1) / np.arange(1, k + 1)[None, :]
    map_at_r = ((precision_at_j * (rel & within_r)).sum(1) / r_q).mean()
    return {"precision_at_1": float(p_at_1), "r_precision": float(r_prec), "mean_average_precision_at_r": float(map_at_r)}


def _counts(ql, rl):
    values, ref_counts = np.unique(rl, return_counts=True)
    lookup = dict(zip(values.tolist(), ref_counts.tolist()))
    return np.array([lookup.get(v, 0) for v in ql.tolist()])


def precision_at_1(query, query_labels, reference=None, reference_labels=None, **kwargs) -> float:
    """Fraction of non-lone queries whose nearest reference shares their label."""
    return retrieval_metrics(query, query_labels, reference, reference_labels, **kwargs)["precision_at_1"]


def mean_average_precision_at_r(query, query_labels, reference=None, reference_labels=None, **kwargs) -> float:
    """MAP@R: ``mean_q (1/R_q) sum_{j <= R_q} P@j * rel_j``."""
    return retrieval_metrics(query, query_labels, reference, reference_labels, **kwargs)["mean_average_precision_at_r"]


def r_precision(query, query_labels, reference=None, reference_labels=None, **kwargs) -> float:
    """R-precision: ``mean_q (relevant among the first R_q) / R_q``."""
    return retrieval_metrics(query, query_labels, reference, reference_labels, **kwargs)["r_precision"]
