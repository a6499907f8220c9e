"""Retrieval evaluation: exact k-nearest neighbours in JAX and metric-learning accuracies.

The semantics are those of PML's ``AccuracyCalculator`` (pytorch-metric-learning 2.9):

- **Query and reference sets.** ``reference=None`` evaluates the query set against itself.
  With ``ref_includes_query=True`` the first ``len(query)`` reference rows are the queries;
  query ``i`` never retrieves reference row ``i`` (itself).
- **Relevance.** A reference is relevant to a query when their labels match: equal class ids
  for labels ``[N]``; *sharing at least one label* for multi-hot labels ``[N, C]`` (the rule of
  :func:`jaxmetric.pair_mask`); or any ``label_comparison_fn``, as in PML.
- :math:`R_q` is the number of references relevant to query :math:`q` (minus itself when
  the reference includes the query). **Lone queries** (:math:`R_q = 0`) are left out of
  every neighbour metric; if all queries are lone, the metric is NaN.
- ``k`` (neighbours retrieved): ``None`` = the whole reference set (minus self),
  ``"max_bin_count"`` = the largest number of references sharing a query's label (minus
  self), or an int. Precision@1, R-precision and MAP@R only need the first :math:`R_q`
  neighbours, so they never depend on ``k`` once ``k`` covers :math:`R_q`; mean average
  precision and mean reciprocal rank look at all ``k`` neighbours.
- ``avg_of_avgs=True`` averages each metric per query class first, then over classes;
  ``return_per_class=True`` returns the per-class averages (sorted labels).

Metric definitions (:math:`\\mathrm{rel}_j` = 1 when the :math:`j`-th neighbour is relevant,
:math:`P@j` = precision among the first :math:`j`):

- ``precision_at_1``: :math:`\\mathrm{rel}_1`.
- ``r_precision``: :math:`\\frac{1}{\\min(R_q, k)}\\sum_{j \\le \\min(R_q, k)} \\mathrm{rel}_j`.
- ``mean_average_precision_at_r`` (MAP@R, Musgrave, Belongie & Lim, "A Metric Learning
  Reality Check", ECCV 2020): :math:`\\frac{1}{R_q}\\sum_{j \\le \\min(R_q, k)} P@j\\,\\mathrm{rel}_j`.
- ``mean_average_precision``: :math:`\\frac{1}{R_q}\\sum_{j \\le k} P@j\\,\\mathrm{rel}_j`
  (the full average precision when ``k`` covers the reference set).
- ``mean_reciprocal_rank``: :math:`1/\\text{rank of the first relevant neighbour}` (0 if
  none among ``k``).
- ``recall_at_k`` (not in PML; the "hit" definition of deep metric learning papers, e.g.
  Song et al., CVPR 2016): 1 when at least one of the first ``k`` neighbours is relevant,
  for each ``k`` in ``recall_ks``; reported as ``recall_at_1``, ``recall_at_2``, ...
- ``NMI`` / ``AMI``: normalized / adjusted mutual information between the query class ids and
  a k-means clustering of the query embeddings into as many clusters as there are query
  classes (scikit-learn, imported lazily: ``pip install scikit-learn``).

**Memory.** Neighbours are found exactly, block by block of queries: every block computes its
``[block, N_ref]`` scores, selects the top ``k`` and reduces them to per-query metric values
before the next block starts, so memory is ``O(block * N_ref)`` and no ``[N_query, k]``
array is kept even for ``k=None``. The block size is chosen so one ``[block, N_ref]`` matrix
holds about 2**25 elements (``block_size`` overrides it). faiss is used only when asked for
(``knn_backend="faiss"``) and installed.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmetric import _checks
from jaxmetric.distances import BaseDistance, DotProductSimilarity, LpDistance

#: Squared Euclidean on raw embeddings: the ordering of faiss.IndexFlatL2, PML's default kNN.
DEFAULT_KNN_DISTANCE = LpDistance(normalize_embeddings=False, power=2)

#: The metrics of PML's ``AccuracyCalculator`` (all computed by default, as in PML).
PML_METRICS = (
    "AMI",
    "NMI",
    "mean_average_precision",
    "mean_average_precision_at_r",
    "mean_reciprocal_rank",
    "precision_at_1",
    "r_precision",
)
#: Every metric name accepted by ``include`` / ``exclude``.
METRICS = PML_METRICS + ("recall_at_k",)
_CLUSTER_METRICS = ("AMI", "NMI")
_KNN_METRICS = tuple(m for m in METRICS if m not in _CLUSTER_METRICS)
KNN_BACKENDS = ("jax", "faiss")

# Elements of one [block, N_ref] score matrix when block_size is None (128 MB in float32).
_BLOCK_ELEMENTS = 1 << 25


# ----------------------------------------------------------------------------- kNN
@functools.partial(jax.jit, static_argnames=("k", "distance", "exclude_self", "block_size"))
def knn(query, reference, *, k: int, distance: BaseDistance = DEFAULT_KNN_DISTANCE, exclude_self: bool = False, block_size: int = 1024):
    """Exact ``k`` nearest references of every query: ``(indices [Nq, k], scores [Nq, k])``.

    ``scores`` are distances (ascending) or similarities (descending) of ``distance``. With
    ``exclude_self`` (the first ``Nq`` reference rows are the queries), query ``i`` never
    returns reference ``i``. Computed ``block_size`` queries at a time: memory
    ``O(block_size * Nr + Nq * k)``.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 or k > reference.shape[0]:
        raise ValueError(f"knn: `k` must be an int in [1, {reference.shape[0]}] (the reference set size); got {k!r}")
    nq = query.shape[0]
    block_size = max(1, min(block_size, nq))
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


# ------------------------------------------------------------------ relevance rules
def _multi_hot_shared(a, r):
    """``[b, R]``: rows of two multi-hot matrices that share at least one label (one matmul)."""
    return (a > 0).astype(jnp.float32) @ (r > 0).astype(jnp.float32).T > 0


def _relevance_matrix(kind, fn, a, r):
    """Relevance of every reference ``r [R, ...]`` to every query ``a [b, ...]``: bool ``[b, R]``."""
    if fn is not None:
        return jnp.asarray(fn(a[:, None], r[None, :])).astype(bool)
    if kind == "ids":
        return a[:, None] == r[None, :]
    return _multi_hot_shared(a, r)


def _neighbour_relevance(kind, fn, a, r, idx, full=None):
    """Relevance of the retrieved neighbours ``r[idx]`` (``idx [b, K]``): bool ``[b, K]``."""
    if fn is not None:
        return jnp.asarray(fn(a[:, None], r[idx])).astype(bool)
    if kind == "ids":
        return a[:, None] == r[idx]
    if full is None:
        return jnp.sum((a[:, None] > 0) & (r[idx] > 0), axis=-1) > 0
    return jnp.take_along_axis(full, idx, axis=1)


def _self_match(kind, fn, labels):
    """``rel(l_i, l_i)`` row by row (a multi-hot row without labels does not match itself)."""
    if fn is not None:
        return jnp.asarray(fn(labels, labels)).reshape(labels.shape[0]).astype(bool)
    if kind == "ids":
        return jnp.ones(labels.shape[0], bool)
    return jnp.any(labels > 0, axis=1)


def _blocks(x, block_size):
    n = x.shape[0]
    nblk = -(-n // block_size)
    pad = nblk * block_size - n
    return jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape((nblk, block_size) + x.shape[1:])


@functools.partial(jax.jit, static_argnames=("kind", "fn", "block_size"))
def _relevant_counts(query_labels, reference_labels, *, kind, fn, block_size):
    """Number of references relevant to each query (self included), block by block."""

    def block(qlb):
        return jnp.sum(_relevance_matrix(kind, fn, qlb, reference_labels), axis=1, dtype=jnp.int32)

    counts = jax.lax.map(block, _blocks(query_labels, block_size))
    return counts.reshape(-1)[: query_labels.shape[0]]


# ------------------------------------------------------------- per-query metric values
def _per_query(rel, r_q, *, kp: int, recall_ks: tuple, dtype):
    """Per-query metrics from the relevance ``rel [b, K]`` of the sorted neighbours.

    ``kp`` columns are PML's ``k`` (or as many as the requested metrics read); ``R_q = 0`` rows
    get finite placeholders (lone queries are dropped afterwards).
    """
    relf = rel.astype(dtype)
    head = relf[:, :kp]
    j = jnp.arange(1, kp + 1, dtype=dtype)[None, :]
    r_qf = r_q.astype(dtype)
    safe_r = jnp.maximum(r_qf, 1.0)
    within = j <= r_qf[:, None]
    cum = jnp.cumsum(head, axis=1)
    prec = cum * head / j
    hit = jnp.any(head > 0, axis=1)
    first = jnp.argmax(head, axis=1).astype(dtype) + 1.0
    out = {
        "precision_at_1": relf[:, 0],
        "r_precision": jnp.sum(head * within, axis=1) / jnp.maximum(jnp.minimum(r_qf, kp), 1.0),
        "mean_average_precision_at_r": jnp.sum(prec * within, axis=1) / safe_r,
        "mean_average_precision": jnp.sum(prec, axis=1) / safe_r,
        "mean_reciprocal_rank": jnp.where(hit, 1.0 / first, 0.0),
    }
    for kk in recall_ks:
        out[f"recall_at_{kk}"] = jnp.max(relf[:, :kk], axis=1)
    return out


def _metric_dtype():
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


@functools.partial(
    jax.jit,
    static_argnames=("num_cols", "kp", "recall_ks", "distance", "exclude_self", "kind", "fn", "block_size"),
)
def _knn_metrics(query, query_labels, r_q, reference, reference_labels, *, num_cols, kp, recall_ks, distance, exclude_self, kind, fn, block_size):
    """Blockwise exact kNN reduced to per-query metric values: memory ``O(block * N_ref)``."""
    nq, nr = query.shape[0], reference.shape[0]
    rows = _blocks(jnp.arange(nq), block_size)
    dtype = _metric_dtype()

    def block(args):
        qb, qlb, rqb, rb = args
        mat = distance(qb, reference)
        scores = mat if distance.is_inverted else -mat
        if exclude_self:
            scores = jnp.where(rb[:, None] == jnp.arange(nr)[None, :], -jnp.inf, scores)
        _, idx = jax.lax.top_k(scores, num_cols)
        full = _relevance_matrix(kind, None, qlb, reference_labels) if (kind == "multi_hot" and fn is None) else None
        rel = _neighbour_relevance(kind, fn, qlb, reference_labels, idx, full)
        return _per_query(rel, rqb, kp=kp, recall_ks=recall_ks, dtype=dtype)

    xs = (_blocks(query, block_size), _blocks(query_labels, block_size), _blocks(r_q, block_size), rows)
    if xs[0].shape[0] == 1:  # one block: no loop (compiles faster)
        out = jax.tree.map(lambda v: v[None], block(jax.tree.map(lambda x: x[0], xs)))
    else:
        out = jax.lax.map(block, xs)
    return {name: v.reshape(-1)[:nq] for name, v in out.items()}


@functools.partial(jax.jit, static_argnames=("kp", "recall_ks", "kind", "fn"))
def _metrics_from_indices(idx, query_labels, r_q, reference_labels, *, kp, recall_ks, kind, fn):
    rel = _neighbour_relevance(kind, fn, query_labels, reference_labels, idx)
    return _per_query(rel, r_q, kp=kp, recall_ks=recall_ks, dtype=_metric_dtype())


# ---------------------------------------------------------------------------- faiss
def _faiss_knn(query, reference, k, distance, exclude_self):
    """Neighbour indices ``[Nq, k]`` from faiss (flat, exact) with PML's self removal."""
    try:
        import faiss  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "get_accuracy: `knn_backend='faiss'` needs faiss (pip install faiss-cpu); "
            "the default knn_backend='jax' needs nothing else"
        ) from e
    if isinstance(distance, LpDistance) and distance.p == 2:
        index_cls = faiss.IndexFlatL2
    elif isinstance(distance, DotProductSimilarity):
        index_cls = faiss.IndexFlatIP
    else:
        raise ValueError(
            f"get_accuracy: `distance` must be LpDistance(p=2), DotProductSimilarity or CosineSimilarity "
            f"with knn_backend='faiss'; got {distance!r}"
        )
    q = np.ascontiguousarray(np.asarray(distance.maybe_normalize(jnp.asarray(query, jnp.float32))), dtype=np.float32)
    r = np.ascontiguousarray(np.asarray(distance.maybe_normalize(jnp.asarray(reference, jnp.float32))), dtype=np.float32)
    index = index_cls(r.shape[1])
    index.add(r)
    _, idx = index.search(q, k + int(exclude_self))
    idx = np.asarray(idx)
    if exclude_self:
        # PML's return_results: drop the self index from each row, or the last column if absent.
        is_self = idx == np.arange(len(idx))[:, None]
        is_self[~is_self.any(1), -1] = True
        idx = idx[~is_self].reshape(len(idx), k)
    return idx


# --------------------------------------------------------------------------- checks
def _check_names(value, name: str, fn: str) -> tuple:
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{fn}: `{name}` must be a tuple or list of metric names; got {type(value).__name__}")
    bad = [m for m in value if m not in METRICS]
    if bad:
        raise ValueError(f"{fn}: `{name}` must contain only {list(METRICS)}; got {bad}")
    return tuple(value)


def _check_k(k, fn: str):
    if k is None or k == "max_bin_count":
        return
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{fn}: `k` must be None, 'max_bin_count' or an int > 0; got {k!r}")


def _as_labels(labels, n: int, name: str, fn: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2) or labels.shape[0] != n:
        raise ValueError(f"{fn}: `{name}` must be class ids [{n}] or multi-hot [{n}, num_classes]; got shape {labels.shape}")
    _checks.check_labels(labels, n, name, fn=fn)
    return labels


def _as_embeddings(x, name: str, fn: str) -> np.ndarray:
    return np.asarray(_checks.check_embeddings(x if hasattr(x, "shape") else np.asarray(x), name, fn=fn))


# ------------------------------------------------------------------------ averaging
def _average(values: np.ndarray, labels: np.ndarray, avg_of_avgs: bool, return_per_class: bool):
    values = values.astype(np.float64)
    if not (avg_of_avgs or return_per_class):
        return float(values.mean())
    if labels.ndim == 1:
        _, inverse = np.unique(labels, return_inverse=True)
    else:
        _, inverse = np.unique(labels, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    per_class = np.bincount(inverse, weights=values) / np.bincount(inverse)
    if return_per_class:
        return per_class.tolist()
    return float(per_class.mean())


def _cluster_labels(query, num_clusters, kmeans_func, seed):
    if kmeans_func is not None:
        return np.asarray(kmeans_func(query, num_clusters)).reshape(-1)
    try:
        from sklearn.cluster import KMeans  # noqa: PLC0415
    except ImportError as e:
        raise ImportError(
            "jaxmetric.evaluation: NMI and AMI need scikit-learn (pip install scikit-learn), "
            "which is not a dependency of jaxmetric; or exclude them: exclude=('NMI', 'AMI')"
        ) from e
    return KMeans(n_clusters=num_clusters, n_init="auto", random_state=seed).fit_predict(np.asarray(query, np.float64))


def _mutual_information(name, labels, clusters):
    try:
        from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score  # noqa: PLC0415
    except ImportError as e:
        raise ImportError(
            "jaxmetric.evaluation: NMI and AMI need scikit-learn (pip install scikit-learn), "
            "which is not a dependency of jaxmetric; or exclude them: exclude=('NMI', 'AMI')"
        ) from e
    score = normalized_mutual_info_score if name == "NMI" else adjusted_mutual_info_score
    return float(score(labels, clusters))


# ---------------------------------------------------------------------- main entry
def get_accuracy(
    query,
    query_labels,
    reference=None,
    reference_labels=None,
    *,
    ref_includes_query: bool = False,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    avg_of_avgs: bool = False,
    return_per_class: bool = False,
    k: int | str | None = None,
    recall_ks: Sequence[int] = (1, 2, 4, 8),
    distance: BaseDistance = DEFAULT_KNN_DISTANCE,
    label_comparison_fn: Callable | None = None,
    block_size: int | None = None,
    knn_backend: str = "jax",
    kmeans_func: Callable | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Retrieval and clustering metrics of ``query`` against ``reference``, as a dict.

    The function form of PML's ``AccuracyCalculator(include, exclude, avg_of_avgs,
    return_per_class, k, label_comparison_fn).get_accuracy(query, query_labels, reference,
    reference_labels, ref_includes_query)`` (see :class:`AccuracyCalculator` for the object
    form). Semantics and definitions: the module docstring.

    Args:
      query: float ``[Nq, D]`` (NumPy or JAX).
      query_labels: class ids ``[Nq]`` (integer) or multi-hot ``[Nq, C]``.
      reference, reference_labels: the set searched; ``None`` searches ``query`` itself
        (and sets ``ref_includes_query=True``).
      ref_includes_query: the first ``Nq`` reference rows are the queries (each query's own
        row is never retrieved and is not counted in :math:`R_q`).
      include, exclude: metric names from :data:`METRICS`. ``include=()`` means PML's seven
        (:data:`PML_METRICS`); ``"recall_at_k"`` is computed only when included.
      avg_of_avgs, return_per_class: per-class averaging, as PML (mutually exclusive).
      k: neighbours per query: ``None`` (all references), ``"max_bin_count"`` or an int.
      recall_ks: cut-offs of ``recall_at_k``.
      distance: ranking of neighbours; default squared Euclidean on raw embeddings (faiss
        ``IndexFlatL2``, PML's default). ``CosineSimilarity()`` ranks by cosine similarity.
      label_comparison_fn: relevance rule, PML's contract: called with broadcastable label
        arrays ``(a [b, 1, ...], r [1, R, ...])`` it returns bool ``[b, R]``; written with
        ``jnp`` operations (it runs inside ``jit``). Default: equal class ids, or
        shares-a-label for multi-hot.
      block_size: queries per block of the exact search; default keeps one
        ``[block, N_ref]`` matrix near 2**25 elements.
      knn_backend: ``"jax"`` (exact, blockwise, any distance) or ``"faiss"`` (needs faiss;
        ``LpDistance(p=2)`` or dot-product/cosine similarity).
      kmeans_func: ``kmeans_func(query [Nq, D] numpy, num_clusters) -> cluster ids [Nq]``
        for NMI/AMI; default scikit-learn ``KMeans(n_init="auto", random_state=seed)``.
      seed: k-means seed.

    Returns:
      ``{metric name: float}`` (a list per class with ``return_per_class``), in the order
      of :data:`METRICS`; ``recall_at_k`` gives one key per cut-off, ``recall_at_{k}``.

    Example:
      >>> import numpy as np
      >>> from jaxmetric import evaluation
      >>> emb = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.0, 5.2], [0.0, 0.3]], np.float32)
      >>> labels = np.array([0, 0, 1, 1, 1])
      >>> evaluation.get_accuracy(emb, labels, include=("precision_at_1", "recall_at_k"), recall_ks=(1, 2))
      {'precision_at_1': 0.8, 'recall_at_1': 0.8, 'recall_at_2': 0.8}
    """
    fn = "get_accuracy"
    include = _check_names(include, "include", fn)
    exclude = _check_names(exclude, "exclude", fn)
    if avg_of_avgs and return_per_class:
        raise ValueError(f"{fn}: `avg_of_avgs` and `return_per_class` are mutually exclusive; got both True")
    _check_k(k, fn)
    _checks.check_choice(knn_backend, KNN_BACKENDS, "knn_backend", fn=fn)
    if not isinstance(distance, BaseDistance):
        raise TypeError(f"{fn}: `distance` must be a jaxmetric distance (e.g. LpDistance()); got {type(distance).__name__}")
    recall_ks = tuple(int(x) for x in recall_ks)
    if not recall_ks or any(x < 1 for x in recall_ks):
        raise ValueError(f"{fn}: `recall_ks` must be a non-empty sequence of ints >= 1; got {recall_ks}")
    selected = [m for m in (include or PML_METRICS) if m not in exclude]
    selected = [m for m in METRICS if m in selected]

    query = _as_embeddings(query, "query", fn)
    query_labels = _as_labels(query_labels, query.shape[0], "query_labels", fn)
    if reference is None:
        if reference_labels is not None:
            raise ValueError(f"{fn}: `reference_labels` given without `reference`; got reference=None")
        reference, reference_labels, ref_includes_query = query, query_labels, True
    else:
        reference = _as_embeddings(reference, "reference", fn)
        if reference_labels is None:
            raise ValueError(f"{fn}: `reference_labels` must be given with `reference`; got None")
        reference_labels = _as_labels(reference_labels, reference.shape[0], "reference_labels", fn)
        if reference.shape[1] != query.shape[1]:
            raise ValueError(f"{fn}: `reference` must have dim {query.shape[1]} like `query`; got shape {reference.shape}")
        if reference_labels.ndim != query_labels.ndim or reference_labels.shape[1:] != query_labels.shape[1:]:
            raise ValueError(
                f"{fn}: `reference_labels` must be labels of the same kind as `query_labels` "
                f"(shape [N{', ' + str(query_labels.shape[1]) if query_labels.ndim == 2 else ''}]); got shape {reference_labels.shape}"
            )
        if ref_includes_query:
            nq = query.shape[0]
            if reference.shape[0] < nq or not (
                np.allclose(query, reference[:nq]) and np.array_equal(query_labels, reference_labels[:nq])
            ):
                raise ValueError(
                    f"{fn}: with `ref_includes_query=True` the first len(query)={nq} rows of `reference` and "
                    "`reference_labels` must equal `query` and `query_labels`"
                )
    kind = "ids" if query_labels.ndim == 1 else "multi_hot"
    nq, nr = query.shape[0], reference.shape[0]
    self_count = int(bool(ref_includes_query))

    results: dict[str, Any] = {}
    if any(m in _CLUSTER_METRICS for m in selected):
        if kind != "ids" or label_comparison_fn is not None:
            raise ValueError(
                f"{fn}: NMI and AMI need class ids [N] and the default label comparison; got labels of shape "
                f"{query_labels.shape}{' and a label_comparison_fn' if label_comparison_fn is not None else ''}. "
                "Exclude them: exclude=('NMI', 'AMI')"
            )
        clusters = _cluster_labels(query, len(np.unique(query_labels)), kmeans_func, seed)
        for m in _CLUSTER_METRICS:
            if m in selected:
                results[m] = _mutual_information(m, query_labels, clusters)

    knn_selected = [m for m in selected if m in _KNN_METRICS]
    if knn_selected:
        results.update(
            _knn_results(
                knn_selected, query, query_labels, reference, reference_labels, self_count, kind, k, recall_ks,
                distance, label_comparison_fn, block_size, knn_backend, avg_of_avgs, return_per_class, fn,
            )
        )
    names = []
    for m in selected:
        names.extend([f"recall_at_{kk}" for kk in recall_ks] if m == "recall_at_k" else [m])
    return {name: results[name] for name in names}


def _knn_results(selected, query, query_labels, reference, reference_labels, self_count, kind, k, recall_ks,
                 distance, label_comparison_fn, block_size, knn_backend, avg_of_avgs, return_per_class, fn):
    nq, nr = query.shape[0], reference.shape[0]
    ql = jnp.asarray(query_labels)
    rl = jnp.asarray(reference_labels)
    # A custom rule sees [b, R, C] label blocks; the built-in rules [b, R].
    per_row = nr * (query_labels.shape[1] if (query_labels.ndim == 2 and label_comparison_fn is not None) else 1)
    count_block = max(1, min(nq, _BLOCK_ELEMENTS // max(per_row, 1)))
    if kind == "ids" and label_comparison_fn is None:
        values, ref_counts = np.unique(reference_labels, return_counts=True)
        pos = np.clip(np.searchsorted(values, query_labels), 0, len(values) - 1)
        counts = np.where(values[pos] == query_labels, ref_counts[pos], 0)
    else:
        counts = np.asarray(_relevant_counts(ql, rl, kind=kind, fn=label_comparison_fn, block_size=count_block))
    if self_count:
        counts_minus_self = counts - np.asarray(_self_match(kind, label_comparison_fn, ql)).astype(counts.dtype)
    else:
        counts_minus_self = counts
    # PML: R_q = count - 1 when the reference includes the query; lone when R_q <= 0.
    r_q = counts - self_count
    not_lone = counts_minus_self > 0
    max_bin = int(counts.max()) if counts.size else 0

    if k is None:
        k_pml = nr - self_count
    elif k == "max_bin_count":
        k_pml = max_bin - self_count
    else:
        k_pml = int(k)
    available = nr - self_count
    if k_pml < 1 or k_pml > available:
        raise ValueError(
            f"{fn}: `k` must select between 1 and {available} neighbours (the reference set"
            f"{' minus the query itself' if self_count else ''}); got k={k!r} -> {k_pml}"
        )
    want_recall = "recall_at_k" in selected
    if want_recall and max(recall_ks) > available:
        raise ValueError(f"{fn}: `recall_ks` must be at most {available} (the reference set size); got {recall_ks}")
    # Columns the requested metrics read: P@1 / R-precision / MAP@R stop at R_q.
    max_r = int(max(r_q[not_lone].max(), 1)) if not_lone.any() else 1
    if "mean_average_precision" in selected or "mean_reciprocal_rank" in selected:
        kp = k_pml
    else:
        kp = max(1, min(k_pml, max_r))
    num_cols = max(kp, max(recall_ks) if want_recall else 1)
    ks = recall_ks if want_recall else ()

    if knn_backend == "faiss":
        idx = _faiss_knn(query, reference, num_cols, distance, bool(self_count))
        per_query = _metrics_from_indices(
            jnp.asarray(idx), ql, jnp.asarray(r_q), rl, kp=kp, recall_ks=ks, kind=kind, fn=label_comparison_fn
        )
    else:
        bs = block_size if block_size is not None else _BLOCK_ELEMENTS // max(per_row, 1)
        bs = int(max(1, min(bs, nq)))
        per_query = _knn_metrics(
            jnp.asarray(query), ql, jnp.asarray(r_q), jnp.asarray(reference), rl,
            num_cols=num_cols, kp=kp, recall_ks=ks, distance=distance, exclude_self=bool(self_count),
            kind=kind, fn=label_comparison_fn, block_size=bs,
        )
    per_query = {name: np.asarray(v) for name, v in per_query.items()}

    labels_kept = query_labels[not_lone]
    out = {}
    for m in selected:
        for name in ([f"recall_at_{kk}" for kk in recall_ks] if m == "recall_at_k" else [m]):
            if not not_lone.any():
                n_classes = len(np.unique(query_labels, axis=0 if query_labels.ndim == 2 else None))
                out[name] = [float("nan")] * n_classes if return_per_class else float("nan")
            else:
                out[name] = _average(per_query[name][not_lone], labels_kept, avg_of_avgs, return_per_class)
    return out


@dataclasses.dataclass(frozen=True)
class AccuracyCalculator:
    """PML's ``AccuracyCalculator`` as a frozen configuration: port by renaming.

    ``AccuracyCalculator(include=..., k="max_bin_count").get_accuracy(q, ql, r, rl)`` calls
    :func:`get_accuracy` with these options. As in PML, ``include``/``exclude`` passed to
    :meth:`get_accuracy` select among the metrics chosen here. ``knn_func``/``device`` have no
    equivalent: pass ``distance`` (ranking) and ``knn_backend`` instead.
    """

    include: tuple = ()
    exclude: tuple = ()
    avg_of_avgs: bool = False
    return_per_class: bool = False
    k: int | str | None = None
    label_comparison_fn: Callable | None = None
    distance: BaseDistance = DEFAULT_KNN_DISTANCE
    recall_ks: tuple = (1, 2, 4, 8)
    block_size: int | None = None
    knn_backend: str = "jax"
    kmeans_func: Callable | None = None
    seed: int = 0

    def __post_init__(self):
        fn = "AccuracyCalculator"
        _check_names(self.include, "include", fn)
        _check_names(self.exclude, "exclude", fn)
        _check_k(self.k, fn)
        if self.avg_of_avgs and self.return_per_class:
            raise ValueError(f"{fn}: `avg_of_avgs` and `return_per_class` are mutually exclusive; got both True")
        if self.label_comparison_fn is not None and any(m in _CLUSTER_METRICS for m in self.get_curr_metrics()):
            raise ValueError(f"{fn}: NMI and AMI cannot use a custom `label_comparison_fn`; exclude them: exclude=('NMI', 'AMI')")

    def get_curr_metrics(self) -> list[str]:
        """The metrics this calculator computes (PML's method of the same name)."""
        chosen = [m for m in (self.include or PML_METRICS) if m not in self.exclude]
        return [m for m in METRICS if m in chosen]

    def get_accuracy(self, query, query_labels, reference=None, reference_labels=None, ref_includes_query=False, include=(), exclude=()):
        """:func:`get_accuracy` with this calculator's options."""
        fn = "AccuracyCalculator.get_accuracy"
        include, exclude = _check_names(include, "include", fn), _check_names(exclude, "exclude", fn)
        base = self.get_curr_metrics()
        chosen = [m for m in (include or base) if m in base and m not in exclude]
        if not chosen:
            return {}
        return get_accuracy(
            query, query_labels, reference, reference_labels, ref_includes_query=ref_includes_query,
            include=tuple(chosen), avg_of_avgs=self.avg_of_avgs, return_per_class=self.return_per_class, k=self.k,
            recall_ks=self.recall_ks, distance=self.distance, label_comparison_fn=self.label_comparison_fn,
            block_size=self.block_size, knn_backend=self.knn_backend, kmeans_func=self.kmeans_func, seed=self.seed,
        )


# -------------------------------------------------------------- one-metric shortcuts
def retrieval_metrics(
    query,
    query_labels,
    reference=None,
    reference_labels=None,
    *,
    distance: BaseDistance = DEFAULT_KNN_DISTANCE,
    block_size: int | None = None,
    **kwargs,
) -> dict[str, float]:
    """Precision@1, R-precision and MAP@R over the non-lone queries (the three metrics of
    Musgrave et al., "A Metric Learning Reality Check", ECCV 2020), as a dict.

    Only the first :math:`R_q` neighbours are searched, which gives PML's values for its
    default ``k`` (the whole reference set). Other keywords go to :func:`get_accuracy`.
    """
    return get_accuracy(
        query, query_labels, reference, reference_labels, distance=distance, block_size=block_size,
        include=("mean_average_precision_at_r", "precision_at_1", "r_precision"), **kwargs,
    )


def _one(name, query, query_labels, reference, reference_labels, kwargs):
    return get_accuracy(query, query_labels, reference, reference_labels, include=(name,), **kwargs)[name]


def precision_at_1(query, query_labels, reference=None, reference_labels=None, **kwargs) -> float:
    """Fraction of non-lone queries whose nearest reference is relevant. Keywords: :func:`get_accuracy`."""
    return _one("precision_at_1", query, query_labels, reference, reference_labels, kwargs)


def r_precision(query, query_labels, reference=None, reference_labels=None, **kwargs) -> float:
    """R-precision: mean over queries of (relevant among the first :math:`R_q`) / :math:`R_q`."""
    return _one("r_precision", query, query_labels, reference, reference_labels, kwargs)


def mean_average_precision_at_r(query, query_labels, reference=None, reference_labels=None, **kwargs) -> float:
    """MAP@R: :math:`\\mathrm{mean}_q \\frac{1}{R_q}\\sum_{j \\le R_q} P@j\\,\\mathrm{rel}_j`."""
    return _one("mean_average_precision_at_r", query, query_labels, reference, reference_labels, kwargs)


def mean_average_precision(query, query_labels, reference=None, reference_labels=None, **kwargs) -> float:
    """Mean average precision over the first ``k`` neighbours (default: all, the full AP)."""
    return _one("mean_average_precision", query, query_labels, reference, reference_labels, kwargs)


def mean_reciprocal_rank(query, query_labels, reference=None, reference_labels=None, **kwargs) -> float:
    """Mean over queries of 1 / rank of the first relevant neighbour (0 if none within ``k``)."""
    return _one("mean_reciprocal_rank", query, query_labels, reference, reference_labels, kwargs)


def recall_at_k(query, query_labels, reference=None, reference_labels=None, *, k: int | Sequence[int] = 1, **kwargs):
    """Recall@k, the "hit" definition: fraction of non-lone queries with at least one relevant
    reference among their ``k`` nearest. ``k`` a sequence gives ``{"recall_at_{k}": value}``."""
    ks = (k,) if isinstance(k, (int, np.integer)) else tuple(k)
    out = get_accuracy(query, query_labels, reference, reference_labels, include=("recall_at_k",), recall_ks=ks, **kwargs)
    return out[f"recall_at_{ks[0]}"] if isinstance(k, (int, np.integer)) else out


def nmi(query, query_labels, *, kmeans_func: Callable | None = None, seed: int = 0) -> float:
    """Normalized mutual information between ``query_labels`` (class ids) and a k-means
    clustering of ``query`` (scikit-learn, or ``kmeans_func``)."""
    return get_accuracy(query, query_labels, include=("NMI",), kmeans_func=kmeans_func, seed=seed)["NMI"]


def ami(query, query_labels, *, kmeans_func: Callable | None = None, seed: int = 0) -> float:
    """Adjusted mutual information between ``query_labels`` and a k-means clustering of ``query``."""
    return get_accuracy(query, query_labels, include=("AMI",), kmeans_func=kmeans_func, seed=seed)["AMI"]


__all__ = [
    "get_accuracy",
    "AccuracyCalculator",
    "retrieval_metrics",
    "precision_at_1",
    "r_precision",
    "mean_average_precision_at_r",
    "mean_average_precision",
    "mean_reciprocal_rank",
    "recall_at_k",
    "nmi",
    "ami",
    "knn",
    "METRICS",
    "PML_METRICS",
    "DEFAULT_KNN_DISTANCE",
]
