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

**Search and memory.** Neighbours are found exactly, a block of queries at a time, each block
reduced to per-query metric values before the next (no ``[N_query, k]`` array is kept). A
block streams over the reference set in tiles of one matrix product each and keeps a running
top ``k`` (see :func:`knn`): memory ``O(block * (tile * 8 + k * group))``, independent of
``N_ref``. ``k`` close to ``N_ref`` (``k=None``, PML's default, for MAP and MRR over every
reference) needs every reference ranked: those searches sort whole rows, ``[block, N_ref]``
with ``block * N_ref`` near 2**25 elements (128 MB). With ``mesh`` the reference set is split
over devices and the per-device lists are merged. faiss is used only when asked for
(``knn_backend="faiss"``) and installed.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxmetric._src import collectives, validate
from jaxmetric.distances import BaseDistance, CosineSimilarity, DotProductSimilarity, LpDistance

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

# Elements of one [block, N_ref] score matrix of the sorting search (k close to N_ref) when
# block_size is None (128 MB in float32).
_BLOCK_ELEMENTS = 1 << 25
# The streaming search is used while k (plus the query itself) is at most N_ref / 4; beyond,
# its running top-k is as large as a sorted row.
_STREAMING_SHARE = 4


# ----------------------------------------------------------------------------- kNN
# How a distance becomes one matrix product per tile of references. For the Euclidean
# distance, ``q . r - |r|^2 / 2`` orders the references of a query as ``-|q - r|^2`` does
# (``|q|^2`` is the same for all of them), so the distance matrix is never formed: the
# tile's product minus a per-reference offset is the ranking score. Inner products rank as
# they are. Any other distance is evaluated as it is, tile by tile.
_RANK_L2, _RANK_DOT, _RANK_GENERIC = "l2", "dot", "generic"
_INT32_MAX = np.iinfo(np.int32).max


def _ranking_kind(distance: BaseDistance) -> str:
    # Exact classes only: a subclass may redefine the matrix.
    if type(distance) is LpDistance and distance.p == 2 and distance.power > 0:
        return _RANK_L2
    if type(distance) in (DotProductSimilarity, CosineSimilarity) and distance.power == 1:
        return _RANK_DOT
    return _RANK_GENERIC


def _search_dtype(*arrays):
    """float64 when an input is float64 and x64 is on (parity tests), else float32."""
    return jnp.float64 if jax.config.jax_enable_x64 and any(a.dtype == np.float64 for a in arrays) else jnp.float32


@functools.partial(jax.jit, static_argnames=("kind", "distance", "dtype"))
def _search_operand(x, *, kind, distance, dtype):
    """``(rows, offsets)``: the rows the products are taken with (normalised once, when the
    distance normalises) and the per-row offset subtracted from every product."""
    x = jnp.asarray(x, dtype)
    if kind == _RANK_GENERIC:
        return x, jnp.zeros(x.shape[0], dtype)
    x = distance.maybe_normalize(x)
    if kind == _RANK_L2:
        return x, 0.5 * jnp.sum(x * x, axis=1)
    return x, jnp.zeros(x.shape[0], dtype)


def _tile_products(kind, distance, q, r):
    """``[b, t]``: the products of queries ``q`` with references ``r``; the ranking score is
    this minus the references' offsets (larger is nearer). Padding rows carry an infinite
    offset, so they score ``-inf`` and are never retrieved."""
    if kind == _RANK_GENERIC:
        mat = distance(q, r)
        return mat if distance.is_inverted else -mat
    return q @ r.T


def _scores_to_distances(kind, distance, q, s):
    """The ``distance`` values of retrieved neighbours from their ranking scores."""
    if kind == _RANK_L2:
        sq = jnp.maximum(jnp.sum(q * q, axis=1)[:, None] - 2.0 * s, 0.0)
        return sq if distance.power == 2 else sq ** (distance.power / 2)
    if kind == _RANK_DOT or distance.is_inverted:
        return s
    return -s


@dataclasses.dataclass(frozen=True)
class _SearchShape:
    """Static shapes of the search: ``block`` queries at a time; ``tile`` references per
    matrix product; ``tiles`` products between two merges of the running top-k; ``group``
    references per group (the unit the merges select, see :func:`_block_top_k`)."""

    block: int
    tile: int
    tiles: int
    group: int

    @property
    def step(self) -> int:
        return self.tile * self.tiles


# Defaults of the search, measured on a 2-core AVX-512 CPU (docs/benchmarks.md): products of
# [256, D] x [D, 4096]; 8 of them (32 MB of scores) between two merges amortise the merge's
# top_k, whose cost per call is mostly fixed; groups of about sqrt(N_ref / k) references
# balance the merges' width (N_ref / group keys) against the final selection's (k * group).
_SEARCH_BLOCK = 256
_SEARCH_TILE = 4096
_SEARCH_TILES = 8
_MAX_GROUP = 64


def _search_shape(nq: int, nr: int, kk: int, block: int | None = None) -> _SearchShape:
    group = 1
    while group < _MAX_GROUP and (2 * group) ** 2 * kk <= nr:
        group *= 2
    tile = min(_SEARCH_TILE, -(-nr // group) * group)
    tiles = max(1, min(_SEARCH_TILES, nr // tile))
    if block is None:
        block = min(_SEARCH_BLOCK, -(-nq // 8) * 8)
    return _SearchShape(block=int(max(1, block)), tile=tile, tiles=tiles, group=group)


def _top_k(x, k: int):
    """``lax.top_k``, kept as XLA:CPU's TopK call. XLA lowers top_k to a sort plus a slice and
    turns the pair back into its (much faster) TopK call only while the slice is the sort's
    sole user; a later gather or offset slice merged into it leaves a full sort of every row.
    A barrier on each result keeps the consumers apart."""
    top, pos = jax.lax.top_k(x, k)
    return jax.lax.optimization_barrier(top), jax.lax.optimization_barrier(pos)


def _merge_groups(state, products, offsets, first_group, kk: int, group: int):
    """Streaming top-k merge of one step into ``state``: the step's ranking scores are
    ``products [b, step] - offsets [step]``.

    ``state = (keys [b, kk], values [b, kk, group], ids [b, kk])``: the ``kk`` best groups so
    far (a group is ``group`` consecutive references; its key is its best score), their scores
    and their global group ids. The top ``kk`` references always lie in the top ``kk`` groups
    (a reference outside them is beaten by the ``kk`` keys), so keeping the top groups keeps
    the answer while ``top_k`` only sees one key per group.
    """
    keys, values, ids = state
    b = keys.shape[0]
    groups = products.reshape(b, -1, group)
    group_offsets = offsets.reshape(-1, group)
    # The scores are never stored: the offsets are subtracted inside the group maximum and
    # again on the few gathered groups, so the product is the only [b, step] array.
    step_keys = jnp.max(groups - group_offsets[None], axis=2)
    # The running keys come first: their groups hold lower indices, so equal keys keep them.
    top, pos = _top_k(jnp.concatenate([keys, step_keys], axis=1), kk)
    kept = pos < kk
    pos_kept = jnp.minimum(pos, kk - 1)
    pos_new = jnp.maximum(pos - kk, 0)
    fresh = jnp.take_along_axis(groups, pos_new[:, :, None], axis=1) - group_offsets[pos_new]
    values = jnp.where(kept[:, :, None], jnp.take_along_axis(values, pos_kept[:, :, None], axis=1), fresh)
    ids = jnp.where(kept, jnp.take_along_axis(ids, pos_kept, axis=1), (first_group + pos_new).astype(jnp.int32))
    return top, values, ids


def _block_top_k(q, reference, offsets, *, kind, distance, kk: int, shape: _SearchShape, valid, axis_name=None):
    """The ``kk`` best references of each query ``q [b, D]``: ``(scores, indices) [b, kk]``,
    scores descending, equal scores by ascending index; memory ``O(b * (step + kk * group))``.

    ``reference [n, D]`` is read a step at a time (no copy of it is made); the last partial
    step is padded with rows of infinite offset.
    """
    b = q.shape[0]
    n = reference.shape[0]
    t, g = shape.tile, shape.group
    dtype = q.dtype

    def merge(st, r, off, first_group):
        return _merge_groups(st, _tile_products(kind, distance, q, r), off, first_group, kk, g)

    state = (
        jnp.full((b, kk), -jnp.inf, dtype),
        jnp.full((b, kk, g), -jnp.inf, dtype),
        jnp.full((b, kk), _INT32_MAX, jnp.int32),
    )
    # Under shard_map the state holds this device's (varying) values.
    state = jax.tree.map(lambda x: collectives.varying(x, axis_name), state)
    step = shape.step
    n_full = n // step
    if n_full:

        def body(st, i):
            r = jax.lax.dynamic_slice_in_dim(reference, i * step, step)
            off = jax.lax.dynamic_slice_in_dim(offsets, i * step, step)
            return merge(st, r, off, i * (step // g)), None

        state, _ = jax.lax.scan(body, state, jnp.arange(n_full))
    tail = n - n_full * step
    if tail:
        # Whole tiles, or one narrower product when the tail is shorter than a tile.
        width = -(-tail // t) * t if tail > t else -(-tail // g) * g
        r = jnp.pad(reference[n_full * step :], ((0, width - tail), (0, 0)))
        off = jnp.pad(offsets[n_full * step :], (0, width - tail), constant_values=jnp.inf)
        state = merge(state, r, off, n_full * (step // g))
    return _select_from_groups(*state, kk=kk, valid=valid)


def _select_from_groups(keys, values, ids, *, kk: int, valid):
    """The top ``kk`` references ``(scores, indices)`` among the candidate groups.

    The groups are first put in reference order. Fast path: the groups' maxima come first
    (most of them are in the answer, so XLA's top_k seldom updates its heap), then the other
    scores. That layout orders equal scores by index except when a group's maximum ties with
    a non-maximum of an earlier group; the result is kept when its order is the index order
    and the ``kk``-th score is strictly above the next (no tie at the cut), which a check
    over the answer decides. Otherwise the block falls back to the plain reference-order
    layout, where top_k's own rule (lower position first) is the index rule.
    """
    b, _, g = values.shape
    # An extra -inf column keeps this a top_k call (XLA turns a full-width top_k into a sort).
    neg_ids = jnp.concatenate([-ids.astype(jnp.float32), jnp.full((b, 1), -jnp.inf, jnp.float32)], axis=1)
    _, order = _top_k(neg_ids, kk)
    ids = jnp.take_along_axis(ids, order, axis=1)
    values = jnp.take_along_axis(values, order[:, :, None], axis=1)
    keys = jnp.take_along_axis(keys, order, axis=1)
    best = jnp.argmax(values, axis=2).astype(jnp.int32)  # the first maximum of each group is its key
    rest = jnp.where(jnp.arange(g)[None, None, :] == best[:, :, None], -jnp.inf, values)
    top, pos = _top_k(jnp.concatenate([keys, rest.reshape(b, kk * g)], axis=1), kk + 1)
    is_key = pos < kk
    group = jnp.where(is_key, pos, (pos - kk) // g)
    offset = jnp.where(is_key, jnp.take_along_axis(best, jnp.minimum(pos, kk - 1), axis=1), (pos - kk) % g)
    idx = jnp.take_along_axis(ids, group, axis=1) * g + offset
    nxt = jnp.minimum(jnp.arange(1, kk + 1), kk)[None, :]
    top_next = jnp.take_along_axis(top, nxt, axis=1)
    idx_next = jnp.take_along_axis(idx, nxt, axis=1)
    in_order = (top[:, :kk] > top_next) | ((top[:, :kk] == top_next) & (idx[:, :kk] < idx_next))
    cut_ok = top[:, kk - 1] > top[:, kk]
    exact = jnp.all((jnp.all(in_order[:, : kk - 1], axis=1) & cut_ok) | ~valid)

    def by_index(_):
        t, p = _top_k(values.reshape(b, kk * g), kk)
        return t, jnp.take_along_axis(ids, p // g, axis=1) * g + p % g

    return jax.lax.cond(exact, lambda _: (top[:, :kk], idx[:, :kk]), by_index, None)


def _merge_shards(top, idx, axis_name, kk: int):
    """Global top-kk from every device's top-kk (device order is reference order, so equal
    scores still go to the lower index)."""
    # Every device's [b, kk] lists side by side, [b, n_devices * kk] in device order, typed as the
    # same on every device (out_specs=P()): the replicated row gather of the transposes.
    top, pos = _top_k(collectives.gather_replicated(top.T, axis_name).T, kk)
    return top, jnp.take_along_axis(collectives.gather_replicated(idx.T, axis_name).T, pos, axis=1)


def _drop_self(top, idx, rows, k: int):
    """Remove each query's own row from its ``k + 1`` neighbours (or the last one, when it is
    not among them): the ``k`` nearest others, as PML does with faiss."""
    is_self = idx == rows[:, None]
    cut = jnp.where(jnp.any(is_self, axis=1), jnp.argmax(is_self, axis=1), k).astype(jnp.int32)
    j = jnp.arange(k)[None, :]
    src = j + (j >= cut[:, None])
    return jnp.take_along_axis(top, src, axis=1), jnp.take_along_axis(idx, src, axis=1)


def _search_block(q, rows, valid, reference, offsets, *, kind, distance, k, exclude_self, shape, axis_name):
    """Top ``k`` (scores, global indices) of one query block; ``reference`` is this device's
    shard when ``axis_name`` is given (shards are consecutive rows, in device order)."""
    kk = k + int(exclude_self)
    top, idx = _block_top_k(q, reference, offsets, kind=kind, distance=distance, kk=kk, shape=shape, valid=valid, axis_name=axis_name)
    if axis_name is not None:
        idx = idx + collectives.row_offset(reference.shape[0], axis_name)
        top, idx = _merge_shards(top, idx, axis_name, kk)
    if exclude_self:
        top, idx = _drop_self(top, idx, rows, k)
    return top, idx


def _query_blocks(x, block):
    n = x.shape[0]
    nblk = -(-n // block)
    return jnp.pad(x, [(0, nblk * block - n)] + [(0, 0)] * (x.ndim - 1)).reshape((nblk, block) + x.shape[1:])


@functools.partial(jax.jit, static_argnames=("k", "distance", "exclude_self", "shape", "axis_name"))
def _knn(query, reference, *, k, distance, exclude_self, shape, axis_name):
    kind = _ranking_kind(distance)
    dtype = _search_dtype(query, reference)
    q, _ = _search_operand(query, kind=kind, distance=distance, dtype=dtype)
    r, offsets = _search_operand(reference, kind=kind, distance=distance, dtype=dtype)
    nq = q.shape[0]

    def block(args):
        qb, rows = args
        top, idx = _search_block(qb, rows, rows < nq, r, offsets, kind=kind, distance=distance, k=k, exclude_self=exclude_self, shape=shape, axis_name=axis_name)
        return idx, _scores_to_distances(kind, distance, qb, top)

    idx, dist = jax.lax.map(block, (_query_blocks(q, shape.block), _query_blocks(jnp.arange(nq), shape.block)))
    return idx.reshape(-1, k)[:nq], dist.reshape(-1, k)[:nq]


def knn(
    query, reference, *, k: int, distance: BaseDistance = DEFAULT_KNN_DISTANCE, exclude_self: bool = False,
    block_size: int | None = None, axis_name=None,
):
    """Exact ``k`` nearest references of every query: ``(indices [Nq, k], distances [Nq, k])``.

    ``distances`` are values of ``distance``, nearest first (ascending distances, descending
    similarities). Neighbours are ranked by a score that orders them exactly as ``distance``
    does in exact arithmetic, computed in the inputs' precision (float32, or float64 when
    given float64 with x64 enabled): ``q . r - |r|^2 / 2`` for ``LpDistance(p=2)``, ``q . r``
    for dot-product and cosine similarity (after normalising once, as the distance does), the
    distance itself otherwise. **Ties** (equal scores) go to the lower reference index.

    With ``exclude_self`` (the first ``Nq`` reference rows are the queries), query ``i`` never
    returns reference ``i``. Memory: ``O(block_size * (4096 * 8 + k * group))`` beyond the
    inputs and outputs whatever ``Nr``: references are streamed in tiles and merged into a
    running top-k (see ``docs/evaluation.md``). ``block_size``: queries per block (default 256).

    With ``axis_name`` (inside ``jax.shard_map``), ``reference`` is this device's shard of the
    reference set (equal shards, in device order) and ``query`` is the same on every device;
    each device searches its shard and the per-device lists are merged, so every device gets
    the neighbours of a search over the whole reference set.
    """
    fn = "knn"
    query = validate.check_embeddings(query, "query", fn=fn)
    reference = validate.check_embeddings(reference, "reference", fn=fn)
    if reference.shape[1] != query.shape[1]:
        raise ValueError(f"{fn}: `reference` must have dim {query.shape[1]} like `query`; got shape {tuple(reference.shape)}")
    n_ref = reference.shape[0] * collectives.axis_size(axis_name)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 or k > n_ref - int(bool(exclude_self)):
        raise ValueError(
            f"{fn}: `k` must be an int in [1, {n_ref - int(bool(exclude_self))}] (the reference set size"
            f"{' minus the query itself' if exclude_self else ''}); got {k!r}"
        )
    if exclude_self and query.shape[0] > n_ref:
        raise ValueError(f"{fn}: `exclude_self` needs the queries to be the first rows of `reference`; got {query.shape[0]} queries and {n_ref} references")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1):
        raise ValueError(f"{fn}: `block_size` must be None or an int >= 1; got {block_size!r}")
    shape = _search_shape(query.shape[0], reference.shape[0], int(k) + int(bool(exclude_self)), block_size)
    return _knn(query, reference, k=int(k), distance=distance, exclude_self=bool(exclude_self), shape=shape, axis_name=axis_name)


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
        _, idx = _top_k(scores, num_cols)
        full = _relevance_matrix(kind, None, qlb, reference_labels) if (kind == "multi_hot" and fn is None) else None
        rel = _neighbour_relevance(kind, fn, qlb, reference_labels, idx, full)
        return _per_query(rel, rqb, kp=kp, recall_ks=recall_ks, dtype=dtype)

    xs = (_blocks(query, block_size), _blocks(query_labels, block_size), _blocks(r_q, block_size), rows)
    if xs[0].shape[0] == 1:  # one block: no loop (compiles faster)
        out = jax.tree.map(lambda v: v[None], block(jax.tree.map(lambda x: x[0], xs)))
    else:
        out = jax.lax.map(block, xs)
    return {name: v.reshape(-1)[:nq] for name, v in out.items()}


def _streaming_block_metrics(query, rows, query_labels, r_q, reference, offsets, reference_labels, *, rank, distance,
                             num_cols, exclude_self, shape, kp, recall_ks, kind, fn, nq, axis_name):
    """Per-query metric values of the queries ``query [B * block, D]`` (global indices ``rows``;
    rows ``>= nq`` are padding): streaming exact search, block by block, each block reduced to
    its metric values before the next, so memory is one block's search whatever ``N_ref``."""
    dtype = _metric_dtype()

    def block(args):
        qb, rb, qlb, rqb = args
        _, idx = _search_block(qb, rb, rb < nq, reference, offsets, kind=rank, distance=distance, k=num_cols,
                               exclude_self=exclude_self, shape=shape, axis_name=axis_name)
        rel = _neighbour_relevance(kind, fn, qlb, reference_labels, idx)
        return _per_query(rel, rqb, kp=kp, recall_ks=recall_ks, dtype=dtype)

    xs = tuple(x.reshape((-1, shape.block) + x.shape[1:]) for x in (query, rows, query_labels, r_q))
    out = jax.lax.map(block, xs)
    return {name: v.reshape(-1) for name, v in out.items()}


_STREAMING_STATICS = ("rank", "distance", "num_cols", "exclude_self", "shape", "kp", "recall_ks", "kind", "fn", "nq")
_streaming_metrics = jax.jit(functools.partial(_streaming_block_metrics, axis_name=None), static_argnames=_STREAMING_STATICS)


@functools.lru_cache(maxsize=32)
def _sharded_metrics(mesh, **statics):
    """:func:`_streaming_block_metrics` over ``mesh``: the reference (and its offsets) split
    over all the mesh's devices, everything else replicated; the per-device top-k lists are
    merged inside, so the values are those of one device."""
    axes = tuple(mesh.axis_names)
    body = functools.partial(_streaming_block_metrics, axis_name=axes, **statics)
    split = P(axes)
    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(), P(), P(), P(), split, split, P()), out_specs=P()))


# Pairs (query x reference) per call of the streaming search: calls are where the host reports
# progress and collects values, so a long evaluation reports every few seconds.
_PAIRS_PER_CALL = 1 << 30


def _streaming_per_query(query, query_labels, r_q, reference, reference_labels, *, same_set, distance, num_cols,
                         exclude_self, kp, recall_ks, kind, fn, block_size, mesh, progress):
    """Host driver of the streaming search: equal-shape calls over consecutive query blocks
    (one compilation), ``progress(done, total)`` after each."""
    nq, nr = query.shape[0], reference.shape[0]
    rank = _ranking_kind(distance)
    dtype = _search_dtype(query, reference)
    r, offsets = _search_operand(reference, kind=rank, distance=distance, dtype=dtype)
    q = r if same_set else _search_operand(query, kind=rank, distance=distance, dtype=dtype)[0]
    kk = num_cols + int(exclude_self)
    ndev = 1 if mesh is None else mesh.devices.size
    if mesh is not None:
        # Equal shards: pad the reference with rows of infinite offset (never retrieved).
        pad = -nr % ndev
        r = jnp.pad(r, ((0, pad), (0, 0)))
        offsets = jnp.pad(offsets, (0, pad), constant_values=jnp.inf)

        split = NamedSharding(mesh, P(tuple(mesh.axis_names)))
        r, offsets = jax.device_put(r, split), jax.device_put(offsets, split)
    shape = _search_shape(nq, r.shape[0] // ndev, kk, block_size)
    blocks = -(-nq // shape.block)
    per_call = max(1, min(blocks, _PAIRS_PER_CALL // max(shape.block * nr, 1)))
    calls = -(-blocks // per_call)
    per_call = -(-blocks // calls)  # balanced: less than one padded block per call
    width = per_call * shape.block
    statics = dict(rank=rank, distance=distance, num_cols=num_cols, exclude_self=exclude_self, shape=shape, kp=kp,
                   recall_ks=recall_ks, kind=kind, fn=fn, nq=nq)
    run = _streaming_metrics if mesh is None else _sharded_metrics(mesh, **statics)
    ql, rq, rl = jnp.asarray(query_labels), jnp.asarray(r_q), jnp.asarray(reference_labels)
    parts: dict[str, list] = {}
    for c in range(calls):
        lo, hi = c * width, min((c + 1) * width, nq)
        pad = width - (hi - lo)

        def part(x):
            return jnp.pad(x[lo:hi], [(0, pad)] + [(0, 0)] * (x.ndim - 1))

        args = (part(q), jnp.arange(lo, lo + width), part(ql), part(rq), r, offsets, rl)
        out = run(*args, **statics) if mesh is None else run(*args)
        for name, v in out.items():
            parts.setdefault(name, []).append(np.asarray(v)[: hi - lo])
        if progress is not None:
            progress(hi, nq)
    return {name: np.concatenate(v) for name, v in parts.items()}


@functools.partial(jax.jit, static_argnames=("kp", "recall_ks", "kind", "fn"))
def _metrics_from_indices(idx, query_labels, r_q, reference_labels, *, kp, recall_ks, kind, fn):
    rel = _neighbour_relevance(kind, fn, query_labels, reference_labels, idx)
    return _per_query(rel, r_q, kp=kp, recall_ks=recall_ks, dtype=_metric_dtype())


# ---------------------------------------------------------------------------- faiss
def _faiss_knn(query, reference, k, distance, exclude_self):
    """Neighbour indices ``[Nq, k]`` from faiss (flat, exact) with PML's self removal."""
    try:
        import faiss  # noqa: PLC0415 -- an optional dependency, imported when used
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
    validate.check_labels(labels, n, name, fn=fn)
    return labels


def _as_embeddings(x, name: str, fn: str) -> jax.Array:
    # A JAX array (no host copy of the embeddings; NumPy inputs are copied to the device once).
    return jnp.asarray(validate.check_embeddings(x if hasattr(x, "shape") else np.asarray(x), name, fn=fn))


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


def _sklearn(submodule: str):
    """``sklearn.<submodule>``, imported when NMI or AMI is asked for: scikit-learn is an
    optional dependency."""
    try:
        return importlib.import_module(f"sklearn.{submodule}")
    except ImportError as e:
        raise ImportError(
            "jaxmetric.evaluation: NMI and AMI need scikit-learn (pip install scikit-learn), "
            "which is not a dependency of jaxmetric; or exclude them: exclude=('NMI', 'AMI')"
        ) from e


def _cluster_labels(query, num_clusters, kmeans_func, seed):
    if kmeans_func is not None:
        return np.asarray(kmeans_func(query, num_clusters)).reshape(-1)
    return _sklearn("cluster").KMeans(n_clusters=num_clusters, n_init="auto", random_state=seed).fit_predict(np.asarray(query, np.float64))


def _mutual_information(name, labels, clusters):
    metrics = _sklearn("metrics")
    score = metrics.normalized_mutual_info_score if name == "NMI" else metrics.adjusted_mutual_info_score
    return float(score(labels, clusters))


# ---------------------------------------------------------------------- main entry
def get_accuracy(
    query, query_labels, reference=None, reference_labels=None, *, ref_includes_query: bool = False,
    include: Sequence[str] = (), exclude: Sequence[str] = (), avg_of_avgs: bool = False,
    return_per_class: bool = False, k: int | str | None = None, recall_ks: Sequence[int] = (1, 2, 4, 8),
    distance: BaseDistance = DEFAULT_KNN_DISTANCE, label_comparison_fn: Callable | None = None,
    block_size: int | None = None, knn_backend: str = "jax", kmeans_func: Callable | None = None, seed: int = 0,
    mesh: Any = None, progress: Callable[[int, int], Any] | None = None,
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
      block_size: queries per block of the exact search (default 256; for ``k`` close to
        the reference size, whose search sorts whole rows, one ``[block, N_ref]`` matrix near
        2**25 elements).
      knn_backend: ``"jax"`` (exact, streaming, any distance) or ``"faiss"`` (needs faiss;
        ``LpDistance(p=2)`` or dot-product/cosine similarity).
      kmeans_func: ``kmeans_func(query [Nq, D] numpy, num_clusters) -> cluster ids [Nq]``
        for NMI/AMI; default scikit-learn ``KMeans(n_init="auto", random_state=seed)``.
      seed: k-means seed.
      mesh: a ``jax.sharding.Mesh``: the reference set is split over all its devices, each
        device searches its part and the per-device neighbour lists are merged (the values
        equal one device's).
      progress: ``progress(done, total)`` called on the host after each chunk of queries
        of the search (``done`` queries of ``total`` searched), e.g. to update a progress bar.

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
    validate.check_choice(knn_backend, KNN_BACKENDS, "knn_backend", fn=fn)
    if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"{fn}: `mesh` must be None or a jax.sharding.Mesh; got {type(mesh).__name__}")
    if mesh is not None and knn_backend == "faiss":
        raise ValueError(f"{fn}: `mesh` shards the jax search; got knn_backend='faiss' with a mesh")
    if progress is not None and not callable(progress):
        raise TypeError(f"{fn}: `progress` must be None or a callable progress(done, total); got {type(progress).__name__}")
    if not isinstance(distance, BaseDistance):
        raise TypeError(f"{fn}: `distance` must be a jaxmetric distance (e.g. LpDistance()); got {type(distance).__name__}")
    recall_ks = tuple(int(x) for x in recall_ks)
    if not recall_ks or any(x < 1 for x in recall_ks):
        raise ValueError(f"{fn}: `recall_ks` must be a non-empty sequence of ints >= 1; got {recall_ks}")
    selected = [m for m in (include or PML_METRICS) if m not in exclude]
    selected = [m for m in METRICS if m in selected]

    query = _as_embeddings(query, "query", fn)
    query_labels = _as_labels(query_labels, query.shape[0], "query_labels", fn)
    same_set = reference is None
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
            raise ValueError(f"{fn}: `reference` must have dim {query.shape[1]} like `query`; got shape {tuple(reference.shape)}")
        if reference_labels.ndim != query_labels.ndim or reference_labels.shape[1:] != query_labels.shape[1:]:
            raise ValueError(
                f"{fn}: `reference_labels` must be labels of the same kind as `query_labels` "
                f"(shape [N{', ' + str(query_labels.shape[1]) if query_labels.ndim == 2 else ''}]); got shape {reference_labels.shape}"
            )
        if ref_includes_query:
            nq = query.shape[0]
            if reference.shape[0] < nq or not (
                bool(jnp.allclose(query, reference[:nq])) and np.array_equal(query_labels, reference_labels[:nq])
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
        clusters = _cluster_labels(np.asarray(query), len(np.unique(query_labels)), kmeans_func, seed)
        for m in _CLUSTER_METRICS:
            if m in selected:
                results[m] = _mutual_information(m, query_labels, clusters)

    knn_selected = [m for m in selected if m in _KNN_METRICS]
    if knn_selected:
        results.update(
            _knn_results(
                knn_selected, query, query_labels, reference, reference_labels, self_count, kind, k, recall_ks,
                distance, label_comparison_fn, block_size, knn_backend, avg_of_avgs, return_per_class, fn,
                same_set=same_set, mesh=mesh, progress=progress,
            )
        )
    names = []
    for m in selected:
        names.extend([f"recall_at_{kk}" for kk in recall_ks] if m == "recall_at_k" else [m])
    return {name: results[name] for name in names}


def _knn_results(selected, query, query_labels, reference, reference_labels, self_count, kind, k, recall_ks,
                 distance, label_comparison_fn, block_size, knn_backend, avg_of_avgs, return_per_class, fn,
                 same_set=False, mesh=None, progress=None):
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
    elif mesh is not None or _STREAMING_SHARE * (num_cols + self_count) <= nr:
        per_query = _streaming_per_query(
            query, ql, r_q, reference, rl, same_set=same_set, distance=distance, num_cols=num_cols,
            exclude_self=bool(self_count), kp=kp, recall_ks=ks, kind=kind, fn=label_comparison_fn,
            block_size=block_size, mesh=mesh, progress=progress,
        )
    else:
        # k near the reference size (k=None: MAP and MRR over every reference): one sort of
        # each query's whole row, block by block (the streaming merge would keep as much).
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
    mesh: Any = None

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

    def get_accuracy(self, query, query_labels, reference=None, reference_labels=None, ref_includes_query=False, include=(), exclude=(), progress=None):
        """:func:`get_accuracy` with this calculator's options (``progress``: see there)."""
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
            mesh=self.mesh, progress=progress,
        )


# ------------------------------------------------------------- training-loop hook
# Query-reference pairs from which the hook shows a progress bar when progress=None (about a
# minute of search on a 2-core CPU).
_LONG_EVALUATION_PAIRS = 1 << 33


class EvaluationHook:
    """Retrieval metrics of a held-out set every ``every`` steps of a training loop.

    ::

        hook = evaluation.EvaluationHook(
            lambda params, x: model.apply({"params": params}, x),   # embeddings of a batch
            x_test, y_test, every=250, include=("precision_at_1", "mean_average_precision_at_r"),
            distance=jm.CosineSimilarity(),
        )
        for step in range(steps):
            state, loss = train_step(state, ...)
            metrics = hook(step, state.params)      # a dict after steps 250, 500, ...; else None

    Args:
      embed: ``embed(params, inputs) -> [b, D]``, the embeddings of a batch of inputs (jit it:
        it is called on batches of ``batch_size`` rows, the last one padded, so it compiles once).
      query, query_labels: the inputs ``embed`` takes (leading dimension: examples) and their
        labels (class ids ``[N]`` or multi-hot ``[N, C]``).
      reference, reference_labels: a separate reference set; default: the query set searched
        against itself (each query's own row excluded).
      every: evaluate after steps ``every, 2 * every, ...`` (``step`` counts from 0); 0: only
        when :meth:`evaluate` is called.
      batch_size: rows per ``embed`` call.
      progress: a tqdm bar over the search: ``True``, ``False``, or ``None`` to show one on long
        evaluations (more than 2**33 query-reference pairs) when tqdm is installed. tqdm is
        imported only then; it is not a dependency of jaxmetric.
      **options: keywords of :func:`get_accuracy` (``include``, ``k``, ``distance``, ``mesh``, ...).

    ``history`` lists ``(step, metrics)`` of every evaluation.
    """

    def __init__(self, embed: Callable, query, query_labels, reference=None, reference_labels=None, *, every: int = 100,
                 batch_size: int = 1024, progress: bool | None = None, **options):
        fn = "EvaluationHook"
        if not callable(embed):
            raise TypeError(f"{fn}: `embed` must be a callable embed(params, inputs) -> [batch, dim]; got {type(embed).__name__}")
        for name, value, low in (("every", every, 0), ("batch_size", batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{fn}: `{name}` must be an int >= {low}; got {value!r}")
        if progress not in (None, True, False):
            raise ValueError(f"{fn}: `progress` must be True, False or None (automatic); got {progress!r}")
        if (reference is None) != (reference_labels is None):
            raise ValueError(f"{fn}: `reference` and `reference_labels` must be given together; got only one of them")

        allowed = set(inspect.signature(get_accuracy).parameters) - {"query", "query_labels", "reference", "reference_labels", "progress"}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise TypeError(f"{fn}: unknown get_accuracy option(s) {unknown}; expected some of {sorted(allowed)}")
        for name, x, labels in (("query", query, query_labels), ("reference", reference, reference_labels)):
            if x is not None and (not hasattr(x, "shape") or len(x) != len(labels)):
                raise ValueError(
                    f"{fn}: `{name}` must be an array with one row per label; got "
                    f"{getattr(x, 'shape', type(x).__name__)} for {len(labels)} labels"
                )
        self.embed, self.every, self.batch_size, self.progress, self.options = embed, int(every), int(batch_size), progress, options
        self.query, self.query_labels = query, np.asarray(query_labels)
        self.reference = reference
        self.reference_labels = None if reference_labels is None else np.asarray(reference_labels)
        self.history: list[tuple[int | None, dict]] = []

    def __call__(self, step: int, params) -> dict | None:
        """:meth:`evaluate` after steps ``every, 2 * every, ...``; ``None`` at the other steps."""
        if self.every == 0 or (int(step) + 1) % self.every:
            return None
        return self.evaluate(params, step=int(step))

    def _embeddings(self, params, inputs):
        n = len(inputs)
        out = []
        for start in range(0, n, self.batch_size):
            batch = jnp.asarray(inputs[start : start + self.batch_size])
            pad = self.batch_size - batch.shape[0]
            if pad and n > self.batch_size:  # keep every call the same shape (no retrace)
                batch = jnp.pad(batch, [(0, pad)] + [(0, 0)] * (batch.ndim - 1))
            out.append(jnp.asarray(self.embed(params, batch))[: min(self.batch_size, n - start)])
        return jnp.concatenate(out) if len(out) > 1 else out[0]

    def _progress_bar(self, pairs: int):
        if self.progress is False:
            return None
        try:
            from tqdm.auto import tqdm  # noqa: PLC0415 -- an optional dependency, imported when used
        except ImportError as e:
            if self.progress:
                raise ImportError("EvaluationHook: `progress=True` needs tqdm (pip install tqdm), which is not a dependency of jaxmetric") from e
            return None
        if self.progress is None and pairs < _LONG_EVALUATION_PAIRS:
            return None
        return tqdm(total=len(self.query_labels), desc="retrieval evaluation", unit="query", leave=False)

    def evaluate(self, params, step: int | None = None) -> dict:
        """Embed the held-out sets with ``params`` and return :func:`get_accuracy`'s dict."""
        query = self._embeddings(params, self.query)
        reference = None if self.reference is None else self._embeddings(params, self.reference)
        n_ref = len(self.query_labels) if reference is None else len(self.reference_labels)
        bar = self._progress_bar(len(self.query_labels) * n_ref)
        try:
            metrics = get_accuracy(
                query, self.query_labels, reference, self.reference_labels, **self.options,
                progress=None if bar is None else (lambda done, total: bar.update(done - bar.n)),
            )
        finally:
            if bar is not None:
                bar.close()
        self.history.append((step, metrics))
        return metrics


# -------------------------------------------------------------- one-metric shortcuts
def retrieval_metrics(
    query, query_labels, reference=None, reference_labels=None, *, distance: BaseDistance = DEFAULT_KNN_DISTANCE,
    block_size: int | None = None, **kwargs,
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
    "EvaluationHook",
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
