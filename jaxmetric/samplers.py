"""NumPy batch samplers: seeded, with a fixed batch size, so jitted train steps never retrace.

Two forms, usable from a plain Python loop (``for idx in ...: step(x[idx], y[idx])``) or from
any data loader that takes an index sampler (grain, torch ``DataLoader``):

- **index samplers** with PML's semantics, iterated as a flat stream of indices
  (:class:`MPerClassSampler`, :class:`FixedSetOfTriplets`), and **batch samplers** that yield
  index lists (:class:`HierarchicalSampler`). Each has ``batches()`` yielding ``int64``
  arrays of exactly the batch size;
- **batch generators** that cover every class (or label) each epoch:
  :func:`m_per_class_batches`, :func:`m_per_label_batches`.

Every sampler takes ``seed``; iterating it again continues the same random stream, so a run
is reproducible from its seed. PML draws from a global NumPy state instead, so the indices
differ from PML's while the distribution is the same.
"""
from __future__ import annotations

import itertools
from typing import Iterator

import numpy as np


def _shuffled_cycles(rng, groups: np.ndarray, per_batch: int, n: int):
    """``n`` draws of ``per_batch`` distinct groups: the groups in shuffled order, cycle after
    cycle; a draw that crosses the end of a cycle finishes it, then takes the first groups of a
    new shuffled cycle that are not already in the draw (no group twice in a batch)."""
    order = rng.permutation(groups)
    pos = 0
    for _ in range(n):
        if pos + per_batch > len(order):
            tail = order[pos:]
            fresh = rng.permutation(groups)
            order = np.concatenate([tail, fresh[~np.isin(fresh, tail)]])
            pos = 0
        yield order[pos : pos + per_batch]
        pos += per_batch


def _labels_to_indices(labels: np.ndarray) -> dict:
    order = np.argsort(labels, kind="stable")
    values, starts = np.unique(labels[order], return_index=True)
    return {v: order[s:e] for v, s, e in zip(values.tolist(), starts, list(starts[1:]) + [len(labels)])}


def _safe_choice(rng: np.random.Generator, items: np.ndarray, size: int) -> np.ndarray:
    """PML's ``safe_random_choice``: without replacement unless there are fewer than ``size``."""
    return rng.choice(items, size=size, replace=len(items) < size)


def _class_ids(labels, fn: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{fn}: `labels` must be class ids of shape (N,); got shape {labels.shape}")
    if len(labels) == 0:
        raise ValueError(f"{fn}: `labels` must not be empty; got shape {labels.shape}")
    return labels


def _positive_int(value, name: str, fn: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{fn}: `{name}` must be an int >= 1; got {value!r}")
    return int(value)


def _chunks(stream: Iterator[int], batch_size: int, drop_last: bool) -> Iterator[np.ndarray]:
    it = iter(stream)
    while True:
        chunk = np.fromiter(itertools.islice(it, batch_size), dtype=np.int64)
        if len(chunk) == 0 or (drop_last and len(chunk) < batch_size):
            return
        yield chunk


# ------------------------------------------------------------------------- m per class
class MPerClassSampler:
    """``m`` samples per class, PML's ``MPerClassSampler(labels, m, batch_size=None,
    length_before_new_iter=100000)`` semantics, as an index sampler.

    Iterating yields ``len(self)`` indices (plus PML's overshoot when ``batch_size`` is None
    and one pass over the classes is longer than ``length_before_new_iter``). With
    ``batch_size``: every consecutive chunk of ``batch_size`` indices holds ``batch_size // m``
    distinct classes drawn at random for that chunk, ``m`` samples each (without replacement
    when the class has at least ``m``). Without it: each pass shuffles the classes and emits
    ``m`` indices for every class, so chunks are not guaranteed to be ``m`` per class.

    PML draws the classes of each chunk independently, so a class can be missed for a while
    (PML issues #684, #725); :func:`m_per_class_batches` covers every class each epoch.

    Example::

        sampler = MPerClassSampler(labels, m=4, batch_size=32, length_before_new_iter=len(labels))
        for idx in sampler.batches():      # int64 arrays of exactly 32 indices
            state, loss = train_step(state, x[idx], labels[idx])
    """

    def __init__(self, labels, m: int, batch_size: int | None = None, length_before_new_iter: int = 100000, *, seed: int = 0):
        fn = "MPerClassSampler"
        labels = _class_ids(labels, fn)
        self.m_per_class = _positive_int(m, "m", fn)
        self.batch_size = None if batch_size is None else _positive_int(batch_size, "batch_size", fn)
        self.labels_to_indices = _labels_to_indices(labels)
        self.labels = list(self.labels_to_indices.keys())
        self.length_of_single_pass = self.m_per_class * len(self.labels)
        self.list_size = _positive_int(length_before_new_iter, "length_before_new_iter", fn)
        if self.batch_size is None:
            if self.length_of_single_pass < self.list_size:
                self.list_size -= self.list_size % self.length_of_single_pass
        else:
            if self.list_size < self.batch_size:
                raise ValueError(
                    f"{fn}: `length_before_new_iter` must be >= batch_size={self.batch_size}; got {self.list_size}"
                )
            if self.length_of_single_pass < self.batch_size:
                raise ValueError(
                    f"{fn}: m * (number of classes) = {self.m_per_class} * {len(self.labels)} must be >= batch_size; "
                    f"got batch_size={self.batch_size}"
                )
            if self.batch_size % self.m_per_class:
                raise ValueError(f"{fn}: `batch_size` must be a multiple of m={self.m_per_class}; got {self.batch_size}")
            self.list_size -= self.list_size % self.batch_size
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.list_size

    def calculate_num_iters(self) -> int:
        divisor = self.length_of_single_pass if self.batch_size is None else self.batch_size
        return self.list_size // divisor if divisor < self.list_size else 1

    def _index_list(self) -> list:
        idx_list = [0] * self.list_size
        i = 0
        labels = np.array(self.labels, dtype=object)
        for _ in range(self.calculate_num_iters()):
            self._rng.shuffle(labels)
            chosen = labels if self.batch_size is None else labels[: self.batch_size // self.m_per_class]
            for label in chosen:
                idx_list[i : i + self.m_per_class] = _safe_choice(self._rng, self.labels_to_indices[label], self.m_per_class).tolist()
                i += self.m_per_class
        return idx_list

    def __iter__(self) -> Iterator[int]:
        return iter(self._index_list())

    def batches(self, batch_size: int | None = None, *, drop_last: bool = True) -> Iterator[np.ndarray]:
        """One pass (``len(self)`` indices) as ``int64`` arrays of ``batch_size`` (default:
        the sampler's); an incomplete last chunk is dropped unless ``drop_last=False``."""
        batch_size = self.batch_size if batch_size is None else batch_size
        if batch_size is None:
            raise ValueError("MPerClassSampler.batches: `batch_size` must be given when the sampler has none; got None")
        return _chunks(iter(self), _positive_int(batch_size, "batch_size", "MPerClassSampler.batches"), drop_last)


def m_per_class_batches(labels, m: int, batch_size: int, *, seed: int = 0, num_batches: int | None = None):
    """Yields index arrays of exactly ``batch_size``: ``batch_size // m`` distinct classes, ``m``
    samples each (without replacement when a class has at least ``m`` samples).

    Like PML's ``MPerClassSampler(labels, m, batch_size)``, but every class is drawn before any
    is drawn again (classes are cycled in shuffled order), so an epoch covers all classes.
    ``num_batches=None`` yields one epoch's worth (``len(labels) // batch_size`` batches).
    """
    fn = "m_per_class_batches"
    labels = _class_ids(labels, fn)
    if not isinstance(m, (int, np.integer)) or not isinstance(batch_size, (int, np.integer)) or m < 1 or batch_size < 1 or batch_size % m:
        raise ValueError(f"{fn}: `batch_size` must be a positive multiple of `m`; got batch_size={batch_size}, m={m}")
    classes = np.unique(labels)
    per_batch = batch_size // m
    if per_batch > len(classes):
        raise ValueError(
            f"{fn}: `batch_size // m` = {per_batch} classes per batch, but `labels` has only {len(classes)} classes"
        )
    index = _labels_to_indices(labels)
    rng = np.random.default_rng(seed)
    n = len(labels) // batch_size if num_batches is None else num_batches
    for chosen in _shuffled_cycles(rng, classes, per_batch, n):
        batch = [rng.choice(index[c.item()], size=m, replace=len(index[c.item()]) < m) for c in chosen]
        yield np.concatenate(batch)


# ------------------------------------------------------------------------- m per label
def m_per_label_batches(labels, m: int, batch_size: int, *, seed: int = 0, num_batches: int | None = None):
    """Batches for multi-hot labels ``[N, C]``: ``batch_size // m`` distinct labels per batch and
    ``m`` samples carrying each label.

    Labels are cycled in shuffled order, so an epoch (``len(labels) // batch_size`` batches
    when ``num_batches`` is None) visits every label that some sample carries; a sample never
    appears twice in a batch while the label still has unused samples (otherwise it is
    repeated, as PML's ``safe_random_choice`` does). Every batch therefore has, for each of
    its labels, at least ``m`` samples sharing it: positives for every anchor. Samples without
    any label are never drawn. Yields ``int64`` arrays of exactly ``batch_size``.
    """
    fn = "m_per_label_batches"
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{fn}: `labels` must be multi-hot of shape (N, num_labels); got shape {labels.shape}")
    bad = ~((labels == 0) | (labels == 1))
    if bad.any():
        raise ValueError(f"{fn}: `labels` as multi-hot must hold only 0 and 1; got value {labels[bad].flat[0].item()!r}")
    if not isinstance(m, (int, np.integer)) or not isinstance(batch_size, (int, np.integer)) or m < 1 or batch_size < 1 or batch_size % m:
        raise ValueError(f"{fn}: `batch_size` must be a positive multiple of `m`; got batch_size={batch_size}, m={m}")
    present = np.flatnonzero(labels.sum(0) > 0)
    per_batch = batch_size // m
    if per_batch > len(present):
        raise ValueError(
            f"{fn}: `batch_size // m` = {per_batch} labels per batch, but only {len(present)} labels have samples"
        )
    index = {c: np.flatnonzero(labels[:, c] > 0) for c in present.tolist()}
    rng = np.random.default_rng(seed)
    n = len(labels) // batch_size if num_batches is None else num_batches
    for chosen in _shuffled_cycles(rng, present, per_batch, n):
        taken: set = set()
        batch = []
        for c in chosen.tolist():
            pool = index[c]
            fresh_pool = pool[~np.isin(pool, list(taken))] if taken else pool
            if len(fresh_pool) >= m:
                pick = rng.choice(fresh_pool, size=m, replace=False)
            else:
                pick = np.concatenate([fresh_pool, rng.choice(pool, size=m - len(fresh_pool), replace=True)])
            taken.update(pick.tolist())
            batch.append(pick)
        yield np.concatenate(batch).astype(np.int64)


# ------------------------------------------------------------------------ hierarchical
SHORT_BATCH_POLICIES = ("fill", "drop", "keep")


class HierarchicalSampler:
    """Batches from pairs of super-classes, PML's ``HierarchicalSampler`` semantics.

    ``labels`` is ``[N, levels]`` (column ``inner_label`` = class, ``outer_label`` =
    super-class). For every combination of ``super_classes_per_batch`` super-classes it makes
    ``batches_per_super_tuple`` batches; each batch is split equally among the super-classes
    and each part is filled by visiting that super-class's classes in random order, taking
    ``samples_per_class`` samples (``"all"``: the whole class) from each that still fits.
    Batches are shuffled, and regenerated on every iteration.

    PML yields a short batch when a super-class runs out of classes that fit. Here
    ``short_batches`` decides: ``"fill"`` (default) tops each part up with random samples of
    the same super-class (with replacement only if it is too small), ``"drop"`` leaves short
    batches out, ``"keep"`` yields them as PML does (their size varies: jitted steps retrace).

    Iterating yields ``int64`` index arrays (a batch sampler); :meth:`batches` is the same.
    """

    def __init__(
        self, labels, batch_size: int, samples_per_class: int | str, batches_per_super_tuple: int = 4,
        super_classes_per_batch: int = 2, inner_label: int = 0, outer_label: int = 1, *, short_batches: str = "fill",
        seed: int = 0,
    ):
        fn = "HierarchicalSampler"
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.shape[1] < 2:
            raise ValueError(f"{fn}: `labels` must be hierarchical labels of shape (N, levels >= 2); got shape {labels.shape}")
        if short_batches not in SHORT_BATCH_POLICIES:
            raise ValueError(f"{fn}: `short_batches` must be one of {list(SHORT_BATCH_POLICIES)}; got {short_batches!r}")
        self.batch_size = _positive_int(batch_size, "batch_size", fn)
        self.super_classes_per_batch = _positive_int(super_classes_per_batch, "super_classes_per_batch", fn)
        self.batches_per_super_tuple = _positive_int(batches_per_super_tuple, "batches_per_super_tuple", fn)
        if self.batch_size % self.super_classes_per_batch:
            raise ValueError(
                f"{fn}: `batch_size` must be a multiple of super_classes_per_batch={self.super_classes_per_batch}; got {self.batch_size}"
            )
        self.sub_batch_len = self.batch_size // self.super_classes_per_batch
        if samples_per_class != "all":
            samples_per_class = _positive_int(samples_per_class, "samples_per_class", fn)
            if self.sub_batch_len % samples_per_class:
                raise ValueError(
                    f"{fn}: batch_size / super_classes_per_batch = {self.sub_batch_len} must be a multiple of "
                    f"`samples_per_class`; got {samples_per_class}"
                )
        self.samples_per_class = samples_per_class
        self.short_batches = short_batches
        supers = labels[:, outer_label]
        self.super_image_lists = {}
        for slb in np.unique(supers).tolist():
            rows = np.flatnonzero(supers == slb)
            self.super_image_lists[slb] = {k: rows[v] for k, v in _labels_to_indices(labels[rows, inner_label]).items()}
        if len(self.super_image_lists) < self.super_classes_per_batch:
            raise ValueError(
                f"{fn}: `labels` has {len(self.super_image_lists)} super-classes, fewer than "
                f"super_classes_per_batch={self.super_classes_per_batch}"
            )
        self.super_pairs = list(itertools.combinations(sorted(self.super_image_lists), self.super_classes_per_batch))
        self._rng = np.random.default_rng(seed)
        self.reshuffle()

    def reshuffle(self) -> None:
        batches = []
        for combination in self.super_pairs:
            for _ in range(self.batches_per_super_tuple):
                batch = []
                for slb in combination:
                    sub_batch: list = []
                    classes = list(self.super_image_lists[slb].keys())
                    self._rng.shuffle(classes)
                    for cl in classes:
                        if len(sub_batch) >= self.sub_batch_len:
                            break
                        instances = self.super_image_lists[slb][cl]
                        spc = len(instances) if self.samples_per_class == "all" else self.samples_per_class
                        if len(sub_batch) + spc > self.sub_batch_len:
                            continue
                        sub_batch.extend(_safe_choice(self._rng, instances, spc).tolist())
                    missing = self.sub_batch_len - len(sub_batch)
                    if missing and self.short_batches == "fill":
                        pool = np.concatenate(list(self.super_image_lists[slb].values()))
                        unused = pool[~np.isin(pool, sub_batch)]
                        src = unused if len(unused) >= missing else pool
                        sub_batch.extend(_safe_choice(self._rng, src, missing).tolist())
                    batch.extend(sub_batch)
                if len(batch) < self.batch_size and self.short_batches == "drop":
                    continue
                batch = np.asarray(batch, dtype=np.int64)
                self._rng.shuffle(batch)
                batches.append(batch)
        order = self._rng.permutation(len(batches))
        self.batches_list = [batches[i] for i in order]

    def __len__(self) -> int:
        return len(self.batches_list)

    def __iter__(self) -> Iterator[np.ndarray]:
        self.reshuffle()
        return iter(list(self.batches_list))

    def batches(self) -> Iterator[np.ndarray]:
        """One fresh pass of batches (same as iterating)."""
        return iter(self)


# ----------------------------------------------------------------------------- triplets
class FixedSetOfTriplets:
    """A fixed set of ``num_triplets`` (anchor, positive, negative) index rows, PML's
    ``FixedSetOfTriplets`` semantics: for each row two distinct classes are drawn, anchor and
    positive from the first (distinct unless the class has one sample), the negative from the
    second. Iterating shuffles the rows and yields the flattened indices ``a, p, n, a, p, n, ...``.

    :meth:`batches` yields ``3 * triplets_per_batch`` indices; inside such a batch triplet
    ``t`` is rows ``(3t, 3t + 1, 3t + 2)``, which :meth:`indices_tuple` gives as PML's
    ``(a, p, n)``; ``jaxmetric.from_indices(sampler.indices_tuple(t), 3 * t)`` turns it into
    the :class:`~jaxmetric.TripletMask` every loss accepts in place of labels.
    """

    def __init__(self, labels, num_triplets: int, *, seed: int = 0):
        fn = "FixedSetOfTriplets"
        labels = _class_ids(labels, fn)
        self.num_triplets = _positive_int(num_triplets, "num_triplets", fn)
        self.labels_to_indices = _labels_to_indices(labels)
        if len(self.labels_to_indices) < 2:
            raise ValueError(f"{fn}: `labels` must have at least 2 classes; got {len(self.labels_to_indices)}")
        self._rng = np.random.default_rng(seed)
        self.create_fixed_set_of_triplets()

    def create_fixed_set_of_triplets(self) -> None:
        label_list = np.array(list(self.labels_to_indices.keys()), dtype=object)
        out = np.full((self.num_triplets, 3), -1, dtype=np.int64)
        for i in range(self.num_triplets):
            anchor_label, negative_label = self._rng.choice(label_list, size=2, replace=False)
            anchor, positive = _safe_choice(self._rng, self.labels_to_indices[anchor_label], 2)
            negative = self._rng.choice(self.labels_to_indices[negative_label])
            out[i] = (anchor, positive, negative)
        self.fixed_set_of_triplets = out

    @property
    def triplets(self) -> np.ndarray:
        """The ``[num_triplets, 3]`` array of (anchor, positive, negative) indices."""
        return self.fixed_set_of_triplets

    def __len__(self) -> int:
        return self.fixed_set_of_triplets.shape[0] * 3

    def __iter__(self) -> Iterator[int]:
        self._rng.shuffle(self.fixed_set_of_triplets)
        return iter(self.fixed_set_of_triplets.reshape(-1).tolist())

    def batches(self, triplets_per_batch: int, *, drop_last: bool = True) -> Iterator[np.ndarray]:
        """One shuffled pass as ``int64`` arrays of ``3 * triplets_per_batch`` indices."""
        t = _positive_int(triplets_per_batch, "triplets_per_batch", "FixedSetOfTriplets.batches")
        return _chunks(iter(self), 3 * t, drop_last)

    @staticmethod
    def indices_tuple(triplets_per_batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(a, p, n)`` positions of the triplets inside a batch from :meth:`batches`."""
        a = np.arange(triplets_per_batch, dtype=np.int32) * 3
        return a, a + 1, a + 2


__all__ = [
    "FixedSetOfTriplets",
    "HierarchicalSampler",
    "MPerClassSampler",
    "m_per_class_batches",
    "m_per_label_batches",
]
