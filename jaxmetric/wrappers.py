"""Loss wrappers: self-supervised pairing, cross-batch memory and weighted sums of losses.

All are pure functions. PML keeps the cross-batch memory inside a module; here it is an
explicit pytree (:class:`CrossBatchMemoryState`) passed in and returned, with static shapes:
the memory always has ``memory_size`` rows, unfilled slots are masked through ``ref_where``, and
the queue position is a traced integer, so a jitted train step never retraces.

A *miner* here is any callable ``miner(embeddings, labels, *, ref_emb, ref_labels, ref_where)
-> PairMask | TripletMask`` (``where=`` is also passed when the miner accepts it).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from jaxmetric._src import collectives, validate
from jaxmetric._src.front_door import front_door, wrap
from jaxmetric.masks import PairMask, TripletMask, pair_mask

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, AxisName, DTypeLike, Scalar

# ------------------------------------------------------------------------------------------
# Self-supervised pairing
# ------------------------------------------------------------------------------------------


def _stack_views(views, fn: str) -> list:
    if hasattr(views, "shape"):
        if views.ndim != 3:
            raise ValueError(f"{fn}: `views` must be an array [V, B, D] or a sequence of [B, D] arrays; got shape {tuple(views.shape)}")
        views = [views[v] for v in range(views.shape[0])]
    elif isinstance(views, (list, tuple)):
        views = list(views)
    else:
        raise TypeError(f"{fn}: `views` must be an array [V, B, D] or a sequence of [B, D] arrays; got {type(views).__name__}")
    if len(views) < 2:
        raise ValueError(f"{fn}: `views` must hold at least 2 views; got {len(views)}")
    views = [validate.check_embeddings(v, f"views[{i}]", fn=fn) for i, v in enumerate(views)]
    shape = tuple(views[0].shape)
    for i, v in enumerate(views[1:], start=1):
        if tuple(v.shape) != shape:
            raise ValueError(f"{fn}: `views[{i}]` must have the shape of views[0], {shape}; got shape {tuple(v.shape)}")
    return views


@front_door
def multi_view_loss(loss_fn: Callable[..., Array], views: Sequence[ArrayLike], *, symmetric: bool = True, where: ArrayLike | None = None, axis_name: AxisName | None = None, **loss_kwargs) -> Array:
    """Self-supervised loss over ``V >= 2`` augmented views of the same ``B`` samples.

    Row ``i`` of every view shows sample ``i``: label ``i`` is given to row ``i`` of each view,
    so all views of a sample are positives of each other and every other row is a negative.

    - ``symmetric=True``: ``loss_fn(concat(views), tile(arange(B), V))`` -- every row of every
      view is an anchor (SimCLR).
    - ``symmetric=False``: ``loss_fn(views[0], arange(B), ref_emb=concat(views[1:]),
      ref_labels=tile(arange(B), V - 1))`` -- only the first view anchors.

    Args:
      loss_fn: a jaxmetric loss (or any function with its signature) that takes labels.
      views: array ``[V, B, D]`` or a sequence of ``V`` arrays ``[B, D]``.
      where: optional bool ``[B]``: real samples (applied to every view).
      axis_name: inside ``pmap``/``shard_map``/``vmap(axis_name=...)``, each device holds its
        shard of the samples (every view of them); forwarded to ``loss_fn`` (which must accept
        it), and the sample ids become global (``axis_index * B + i``), so a sample's views are
        positives of each other only. The value equals the single-device loss on the
        concatenated samples (for losses whose value does not depend on the order of the rows).
      **loss_kwargs: forwarded to ``loss_fn``.

    PML: ``SelfSupervisedLoss(loss, symmetric=True)`` for two views; the multi-view form follows
    PML 3's ``SelfSupervisedLoss(embeddings, ref_emb, *other_views)``.
    """
    fn = "multi_view_loss"
    views = _stack_views(views, fn)
    validate.check_choice(bool(symmetric), (True, False), "symmetric", fn=fn)
    for k in ("ref_emb", "ref_labels", "ref_where"):
        if k in loss_kwargs:
            raise ValueError(f"{fn}: `{k}` is built from the views; got it in loss_kwargs")
    n_views, b = len(views), views[0].shape[0]
    where = validate.check_where(where, b, "where", fn=fn)
    ids = jnp.arange(b, dtype=jnp.int32) + jnp.asarray(collectives.row_offset(b, axis_name), jnp.int32)
    if axis_name is not None:
        loss_kwargs["axis_name"] = axis_name
    if symmetric:
        if where is not None:
            loss_kwargs["where"] = jnp.tile(where, n_views)
        return loss_fn(jnp.concatenate(views, axis=0), jnp.tile(ids, n_views), **loss_kwargs)
    if where is not None:
        loss_kwargs["where"] = where
        loss_kwargs["ref_where"] = jnp.tile(where, n_views - 1)
    return loss_fn(
        views[0], ids, ref_emb=jnp.concatenate(views[1:], axis=0), ref_labels=jnp.tile(ids, n_views - 1), **loss_kwargs
    )


@front_door
def self_supervised_loss(loss_fn: Callable[..., Array], embeddings: ArrayLike, ref_emb: ArrayLike, *, symmetric: bool = True, where: ArrayLike | None = None, axis_name: AxisName | None = None, **loss_kwargs) -> Array:
    """PML's ``SelfSupervisedLoss``: ``embeddings[i]`` and ``ref_emb[i]`` are two views of sample
    ``i`` (a positive pair); every other pairing is negative. Two-view case of
    :func:`multi_view_loss` (see there for ``symmetric`` and ``axis_name``)."""
    fn = "self_supervised_loss"
    embeddings = validate.check_embeddings(embeddings, "embeddings", fn=fn)
    ref_emb = validate.check_embeddings(ref_emb, "ref_emb", fn=fn)
    if ref_emb.shape != embeddings.shape:
        raise ValueError(
            f"{fn}: `ref_emb` must have the shape of `embeddings`, {tuple(embeddings.shape)}; got shape {tuple(ref_emb.shape)}"
        )
    return multi_view_loss(loss_fn, [embeddings, ref_emb], symmetric=symmetric, where=where, axis_name=axis_name, **loss_kwargs)


# ------------------------------------------------------------------------------------------
# Cross-batch memory (Wang et al., "Cross-Batch Memory for Embedding Learning", CVPR 2020)
# ------------------------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CrossBatchMemoryState:
    """A ring buffer of past (detached) embeddings and their labels.

    Attributes:
      embeddings: ``[M, D]`` stored embeddings (zeros where unfilled).
      labels: ``[M]`` class ids or ``[M, C]`` multi-hot labels.
      filled: bool ``[M]``: the slot holds an embedding.
      queue_idx: int32 scalar: the next slot to write.
    """

    embeddings: jax.Array
    labels: jax.Array
    filled: jax.Array
    queue_idx: jax.Array

    @property
    def memory_size(self) -> int:
        return self.embeddings.shape[0]

    @property
    def num_filled(self) -> jax.Array:
        return jnp.sum(self.filled.astype(jnp.int32))


@front_door
def init_cross_batch_memory(memory_size: int, dim: int, label_shape: tuple = (), label_dtype: DTypeLike = jnp.int32, dtype: DTypeLike = jnp.float32) -> CrossBatchMemoryState:
    """An empty :class:`CrossBatchMemoryState` with ``memory_size`` slots of ``dim`` floats.

    ``label_shape=()`` stores class ids; ``label_shape=(C,)`` stores multi-hot labels.
    PML: ``CrossBatchMemory(loss, embedding_size=dim, memory_size=1024)`` (whose ``reset_queue``
    is calling this again).
    """
    fn = "init_cross_batch_memory"
    if not (isinstance(memory_size, int) and memory_size > 0):
        raise ValueError(f"{fn}: `memory_size` must be a positive int; got {memory_size!r}")
    if not (isinstance(dim, int) and dim > 0):
        raise ValueError(f"{fn}: `dim` must be a positive int; got {dim!r}")
    label_shape = tuple(label_shape)
    if len(label_shape) > 1:
        raise ValueError(f"{fn}: `label_shape` must be () for class ids or (C,) for multi-hot; got {label_shape}")
    if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
        raise TypeError(f"{fn}: `dtype` must be a float dtype; got {dtype}")
    return CrossBatchMemoryState(
        embeddings=jnp.zeros((memory_size, dim), dtype),
        labels=jnp.zeros((memory_size,) + label_shape, label_dtype),
        filled=jnp.zeros((memory_size,), bool),
        queue_idx=jnp.zeros((), jnp.int32),
    )


def _enqueue(state: CrossBatchMemoryState, embeddings, labels, enq):
    """Writes the rows with ``enq`` into consecutive slots; returns (state, slot per row)."""
    m = state.memory_size
    rank = jnp.cumsum(enq.astype(jnp.int32)) - 1
    slot = jnp.where(enq, (state.queue_idx + rank) % m, m)  # m = out of range: dropped
    new = CrossBatchMemoryState(
        embeddings=state.embeddings.at[slot].set(jax.lax.stop_gradient(embeddings).astype(state.embeddings.dtype), mode="drop"),
        labels=state.labels.at[slot].set(labels.astype(state.labels.dtype), mode="drop"),
        filled=state.filled.at[slot].set(True, mode="drop"),
        queue_idx=((state.queue_idx + jnp.sum(enq.astype(jnp.int32))) % m).astype(jnp.int32),
    )
    return new, slot


@front_door
def cross_batch_memory_loss(
    loss_fn: Callable, embeddings: ArrayLike, labels: ArrayLike, state: CrossBatchMemoryState, *,
    miner: Callable | None = None, enqueue_mask: ArrayLike | None = None, where: ArrayLike | None = None,
    axis_name: AxisName | None = None, **loss_kwargs,
) -> tuple[Array, CrossBatchMemoryState]:
    """Cross-batch memory (XBM): the batch's anchors against a memory of past embeddings.

    Steps, as PML's ``CrossBatchMemory.forward``:

    1. enqueue the batch (``stop_gradient``) into the ring buffer -- only the rows with
       ``enqueue_mask`` when it is given (MoCo style), and never rows with ``where=False``;
    2. select pairs between the batch (queries) and the whole memory (references, unfilled slots
       masked with ``ref_where``): ``miner(...)`` when given, else all pairs from the labels;
    3. without ``enqueue_mask``, remove the self-comparisons (a query and its own just-written
       slot); with it, only the rows *not* enqueued are queries and nothing is removed;
    4. ``loss_fn(embeddings, mask, ref_emb=memory, ref_where=filled, where=queries, **kw)``.

    Returns ``(loss, new_state)``. Shapes never depend on how full the memory is.

    Args:
      loss_fn: a pair or triplet loss accepting a mask, ``ref_emb``, ``where`` and ``ref_where``.
      embeddings: ``[B, D]``, ``B <= memory_size``.
      labels: ``[B]`` class ids (or ``[B, C]`` multi-hot, matching the state).
      state: from :func:`init_cross_batch_memory` or a previous call.
      miner: optional miner (see module docstring).
      enqueue_mask: optional bool ``[B]``: rows to enqueue; the others are the queries.
      where: optional bool ``[B]``: real rows.
      axis_name: inside ``pmap``/``shard_map``/``vmap(axis_name=...)`` with the batch sharded
        over the axis: every device enqueues the *global* batch (in device order), so all
        devices keep the same memory (the returned state is replicated, e.g. ``out_specs=P()``),
        and its local rows are the queries against the whole memory; the reductions are summed
        over devices (``loss_fn`` must accept ``axis_name``; it is given its shard of the memory
        as ``ref_emb`` and gathers it back). Value, gradient (after ``pmean``) and new state
        equal the single-device call on the concatenated batch. Needs ``memory_size`` divisible
        by the number of devices and the global batch to fit in the memory. A ``miner`` sees
        the local queries against the whole memory (exact for per-anchor miners).
    """
    fn = "cross_batch_memory_loss"
    if not isinstance(state, CrossBatchMemoryState):
        raise TypeError(f"{fn}: `state` must be a CrossBatchMemoryState (init_cross_batch_memory); got {type(state).__name__}")
    for k in ("ref_emb", "ref_labels", "ref_where"):
        if k in loss_kwargs:
            raise ValueError(f"{fn}: `{k}` is the memory; got it in loss_kwargs")
    embeddings = validate.check_embeddings(embeddings, "embeddings", fn=fn)
    b, m = embeddings.shape[0], state.memory_size
    if embeddings.shape[1] != state.embeddings.shape[1]:
        raise ValueError(f"{fn}: `embeddings` must have dim {state.embeddings.shape[1]} (the memory's); got shape {tuple(embeddings.shape)}")
    ndev = collectives.axis_size(axis_name)
    if b * ndev > m:
        what = "batch" if axis_name is None else f"global batch ({ndev} devices x {b})"
        raise ValueError(f"{fn}: the batch must fit in the memory ({what} <= memory_size = {m}); got batch {b * ndev}")
    if m % ndev:
        raise ValueError(f"{fn}: with `axis_name`, `memory_size` ({m}) must be divisible by the number of devices ({ndev})")
    labels = validate.check_labels(labels, b, "labels", fn=fn)
    if tuple(labels.shape[1:]) != tuple(state.labels.shape[1:]):
        raise ValueError(
            f"{fn}: `labels` must have shape {(b,) + tuple(state.labels.shape[1:])} (as the memory's labels); got shape {tuple(labels.shape)}"
        )
    where = validate.check_where(where, b, "where", fn=fn)
    enqueue_mask = validate.check_where(enqueue_mask, b, "enqueue_mask", fn=fn)

    real = jnp.ones((b,), bool) if where is None else where
    if enqueue_mask is None:
        enq, query_where = real, where
    else:
        enq, query_where = real & enqueue_mask, real & ~enqueue_mask
    if axis_name is None:
        new_state, slot = _enqueue(state, embeddings, labels, enq)
    else:  # every device enqueues the global batch: the memories stay identical
        g = lambda a: collectives.gather_replicated(a, axis_name)  # noqa: E731
        new_state, slot_g = _enqueue(state, g(jax.lax.stop_gradient(embeddings)), g(labels), g(enq))
        slot = collectives.local_rows(slot_g, b, axis_name)

    if miner is None:
        mask = pair_mask(labels, new_state.labels, where=query_where, ref_where=new_state.filled)
    else:
        mkw = dict(ref_emb=new_state.embeddings, ref_labels=new_state.labels, ref_where=new_state.filled)
        if query_where is not None and validate.accepts_keyword(miner, "where"):
            mkw["where"] = query_where
        mask = miner(embeddings, labels, **mkw)
        if not isinstance(mask, (PairMask, TripletMask)):
            raise TypeError(f"{fn}: `miner` must return a PairMask or TripletMask; got {type(mask).__name__}")

    if enqueue_mask is None:
        # A query's own slot is a copy of itself: never its positive (PML remove_self_comparisons).
        own = jax.nn.one_hot(slot, m, dtype=jnp.float32) > 0  # rows with slot == m are all False
        if isinstance(mask, PairMask):
            pos = jnp.asarray(mask.pos)
            pos = pos & ~own if pos.dtype == jnp.bool_ else pos * (~own).astype(pos.dtype)
            mask = PairMask(pos=pos, neg=mask.neg)
        else:
            w = jnp.asarray(mask.weights)
            keep = ~own[:, :, None]
            mask = TripletMask(weights=w & keep if w.dtype == jnp.bool_ else w * keep.astype(w.dtype))

    kw = dict(loss_kwargs)
    if query_where is not None:
        kw["where"] = query_where
    ref, ref_where = new_state.embeddings, new_state.filled
    if axis_name is not None:  # the loss gathers the references: give it this device's shard
        ref, ref_where = collectives.local_rows(ref, m // ndev, axis_name), collectives.local_rows(ref_where, m // ndev, axis_name)
        kw["axis_name"] = axis_name
    loss = loss_fn(embeddings, mask, ref_emb=ref, ref_where=ref_where, **kw)
    return loss, new_state


# ------------------------------------------------------------------------------------------
# Weighted sums
# ------------------------------------------------------------------------------------------


@front_door
def multiple_losses(
    losses: Sequence[Callable[..., Array]] | Mapping[str, Callable[..., Array]],
    weights: ArrayLike | Sequence[Scalar] | Mapping[str, Scalar] | None = None,
    miners: Sequence[Callable | None] | Mapping[str, Callable] | None = None,
) -> Callable[..., Array]:
    """PML's ``MultipleLosses``: a loss function returning ``sum_k w_k * losses[k](...)``.

    Args:
      losses: a sequence or dict of loss functions (configure each with ``functools.partial``).
      weights: same structure (a dict must have every key); default 1 each. May be traced.
      miners: optional miners, a sequence of the same length (``None`` entries allowed) or a
        dict over a subset of the keys. A loss with a miner gets ``miner(embeddings, labels,
        ...)`` in place of the labels (so the call must then pass labels, not a mask).

    Returns:
      ``f(embeddings, labels_or_mask, **kwargs)``; ``kwargs`` (``ref_emb``, ``where``,
      ``axis_name``, ...) go to every loss and, for ``ref_emb``/``ref_labels``/``where``/
      ``ref_where``, to every miner; ``axis_name`` goes to a miner that accepts it (a miner
      without it would return a local ``[B, B]`` mask where the loss expects ``[B, R_global]``).
      With ``axis_name`` every loss returns the global value, so the weighted sum does too.
    """
    fn = "multiple_losses"
    is_dict = isinstance(losses, Mapping)
    if not is_dict and not isinstance(losses, Sequence):
        raise TypeError(f"{fn}: `losses` must be a sequence or dict of loss functions; got {type(losses).__name__}")
    keys = list(losses.keys()) if is_dict else list(range(len(losses)))
    if not keys:
        raise ValueError(f"{fn}: `losses` must not be empty; got {losses!r}")
    for k in keys:
        if not callable(losses[k]):
            raise TypeError(f"{fn}: `losses[{k!r}]` must be callable; got {type(losses[k]).__name__}")

    def _check_struct(x, name, all_keys):
        if is_dict:
            if not isinstance(x, Mapping):
                raise TypeError(f"{fn}: `{name}` must be a dict like `losses`; got {type(x).__name__}")
            bad = [k for k in x if k not in losses]
            if bad or (all_keys and sorted(map(str, x)) != sorted(map(str, keys))):
                raise ValueError(f"{fn}: `{name}` keys must {'equal' if all_keys else 'be among'} {keys}; got {list(x)}")
        else:
            if not isinstance(x, Sequence) or len(x) != len(keys):
                raise ValueError(f"{fn}: `{name}` must be a sequence of length {len(keys)}; got {x!r}")

    if weights is None:
        weights = {k: 1.0 for k in keys} if is_dict else [1.0] * len(keys)
    _check_struct(weights, "weights", True)
    if miners is not None:
        _check_struct(miners, "miners", False)

    def miner_of(k):
        if miners is None:
            return None
        return miners.get(k) if is_dict else miners[k]

    def combined(embeddings, labels_or_mask, **kwargs):
        total = 0.0
        for k in keys:
            miner = miner_of(k)
            if miner is None:
                value = losses[k](embeddings, labels_or_mask, **kwargs)
            else:
                if isinstance(labels_or_mask, (PairMask, TripletMask)):
                    raise ValueError(f"{fn}: with a miner for loss {k!r}, pass labels, not a {type(labels_or_mask).__name__}")
                mkw = {a: kwargs[a] for a in ("ref_emb", "ref_labels", "where", "ref_where") if kwargs.get(a) is not None}
                if kwargs.get("axis_name") is not None and validate.accepts_keyword(miner, "axis_name"):
                    mkw["axis_name"] = kwargs["axis_name"]
                mask = miner(embeddings, labels_or_mask, **mkw)
                lkw = {a: v for a, v in kwargs.items() if a != "ref_labels"}
                value = losses[k](embeddings, mask, **lkw)
            total = total + weights[k] * value
        return total

    # The sum is a loss too: behind the front door (any array type, NaN in -> NaN out).
    return wrap(combined, name=fn)
