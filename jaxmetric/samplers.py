"""NumPy batch samplers with a fixed batch size, so jitted train steps never retrace."""
from __future__ import annotations

import numpy as np


def m_per_class_batches(labels, m: int, batch_size: int, *, seed: int = 0, num_batches: int | None = None):
    """Yields index arrays of exactly ``batch_size``: ``batch_size // m`` distinct classes, ``m``
    samples each (without replacement when a class has at least ``m`` samples).

    Like PML's ``MPerClassSampler(labels, m, batch_size)``. ``num_batches=None`` yields one
    epoch's worth (``len(labels) // batch_size`` batches). Every class is drawn before any is
    drawn again (classes are cycled in shuffled order), so an epoch covers all classes.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"m_per_class_batches: `labels` must be class ids of shape (N,); got shape {labels.shape}")
    if m < 1 or batch_size % m != 0:
        raise ValueError(f"m_per_class_batches: `batch_size` must be a positive multiple of `m`; got batch_size={batch_size}, m={m}")
    classes = np.unique(labels)
    per_batch = batch_size // m
    if per_batch > len(classes):
        raise ValueError(
            f"m_per_class_batches: `batch_size // m` = {per_batch} classes per batch, but `labels` has only {len(classes)} classes"
        )
    index = {c: np.flatnonzero(labels == c) for c in classes}
    rng = np.random.default_rng(seed)
    n = len(labels) // batch_size if num_batches is None else num_batches
    order = rng.permutation(classes)
    pos = 0
    for _ in range(n):
        if pos + per_batch > len(order):
            # Finish this cycle's classes, then start a new shuffled cycle (no class twice in a batch).
            tail = order[pos:]
            fresh = rng.permutation(classes)
            order = np.concatenate([tail, fresh[~np.isin(fresh, tail)]])
            pos = 0
        chosen = order[pos : pos + per_batch]
        pos += per_batch
        batch = [rng.choice(index[c], size=m, replace=len(index[c]) < m) for c in chosen]
        yield np.concatenate(batch)
