"""Distances and similarities between two sets of embeddings.

Each distance is a frozen (hashable, static) dataclass: pass it as a keyword argument to any
loss or miner, and it is a static part of the traced computation. ``distance(query, ref)``
returns the ``[Nq, Nr]`` matrix. Defaults equal pytorch-metric-learning's: every distance
L2-normalises its inputs unless ``normalize_embeddings=False``.

``is_inverted`` is True for similarities (larger means closer); :meth:`BaseDistance.margin`,
:meth:`BaseDistance.smallest_dist` and :meth:`BaseDistance.largest_dist` hide the direction
from the losses, as in PML.

Numerics: matrices are computed in the dtype of the inputs (losses upcast to float32 before
calling); norms and square roots are safe at zero, so zero vectors and duplicate embeddings
give finite values and gradients (the gradient of a zero distance is zero, as in
``torch.cdist``).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

# Below this squared distance the square root's gradient is taken as 0 (torch.cdist clamps at
# 1e-30 too), which keeps the gradient of duplicate embeddings finite.
_SQRT_FLOOR = 1e-30
# Floor of the SNR denominator Var(q): a constant query (zero signal) gives a large, finite
# distance whose gradient stays finite in float32 (PML divides by zero there).
_SNR_FLOOR = 1e-12
# F.normalize's epsilon.
_NORM_EPS = 1e-12


def safe_norm(x: jax.Array, p: float = 2, axis: int = -1, keepdims: bool = False) -> jax.Array:
    """The p-norm of ``x`` along ``axis`` with a zero (not NaN) gradient at the zero vector.

    Computed as ``m * ||x / m||_p`` with ``m = max|x|`` (held constant for the gradient, which
    the identity leaves exact), so that squaring neither overflows for large entries (1e30 in
    float32) nor underflows to a zero norm for tiny ones (1e-20)."""
    if p == jnp.inf:
        return jnp.max(jnp.abs(x), axis=axis, keepdims=keepdims)
    if p == 1:
        return jnp.sum(jnp.abs(x), axis=axis, keepdims=keepdims)
    m = jax.lax.stop_gradient(jnp.max(jnp.abs(x), axis=axis, keepdims=True))
    m = jnp.where(m > 0, m, 1.0)
    y = x / m
    s = jnp.sum(y * y if p == 2 else jnp.abs(y) ** p, axis=axis, keepdims=True)
    positive = s > 0
    s = jnp.where(positive, s, 1.0)
    norm = jnp.where(positive, m * (jnp.sqrt(s) if p == 2 else s ** (1.0 / p)), 0.0)
    return norm if keepdims else jnp.squeeze(norm, axis=axis)


def l2_normalize(x: jax.Array, p: float = 2, axis: int = -1) -> jax.Array:
    """``x / max(||x||_p, 1e-12)``, PyTorch's ``F.normalize``; zero vectors stay zero.

    The gradient at an exactly zero vector is 0. (``F.normalize``'s is ``1 / 1e-12`` times the
    incoming gradient: about 1e11 in float32, ``inf`` once cast back to float16 inputs.)
    """
    nonzero = jnp.any(x != 0, axis=axis, keepdims=True)
    return jnp.where(nonzero, x / jnp.maximum(safe_norm(x, p, axis=axis, keepdims=True), _NORM_EPS), 0.0)


def _safe_sqrt(sq: jax.Array) -> jax.Array:
    ok = sq > _SQRT_FLOOR
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, sq, 1.0)), 0.0)


def squared_euclidean(query: jax.Array, ref: jax.Array) -> jax.Array:
    """``||q_i - r_j||^2`` via one matrix product (memory ``[Nq, Nr]``, not ``[Nq, Nr, D]``)."""
    qq = jnp.sum(query * query, axis=1)[:, None]
    rr = jnp.sum(ref * ref, axis=1)[None, :]
    return jnp.maximum(qq + rr - 2.0 * (query @ ref.T), 0.0)


@dataclasses.dataclass(frozen=True)
class BaseDistance:
    """Common behaviour: optional normalisation, the matrix, then ``mat ** power``."""

    normalize_embeddings: bool = True
    p: float = 2
    power: float = 1

    is_inverted = False

    def __call__(self, query: jax.Array, ref: jax.Array | None = None) -> jax.Array:
        if ref is None:
            ref = query
        if query.ndim != 2 or ref.ndim != 2:
            raise ValueError(
                f"{type(self).__name__}: query and ref must be 2-D [n, dim]; got shapes "
                f"{tuple(query.shape)} and {tuple(ref.shape)}"
            )
        if query.shape[1] != ref.shape[1]:
            raise ValueError(
                f"{type(self).__name__}: query and ref must have the same dim; got shapes "
                f"{tuple(query.shape)} and {tuple(ref.shape)}"
            )
        query, ref = self.maybe_normalize(query), self.maybe_normalize(ref)
        return self._apply_power(self.compute_mat(query, ref))

    def pairwise(self, query: jax.Array, ref: jax.Array) -> jax.Array:
        """Row-wise distance between ``query[i]`` and ``ref[i]`` (shape ``[N]``)."""
        query, ref = self.maybe_normalize(query), self.maybe_normalize(ref)
        return self._apply_power(self.compute_pairwise(query, ref))

    def _apply_power(self, mat: jax.Array) -> jax.Array:
        if self.power == 1:
            return mat
        return mat**self.power

    def maybe_normalize(self, x: jax.Array) -> jax.Array:
        return l2_normalize(x, self.p) if self.normalize_embeddings else x

    def normalize(self, x: jax.Array) -> jax.Array:
        return l2_normalize(x, self.p)

    def compute_mat(self, query: jax.Array, ref: jax.Array) -> jax.Array:  # pragma: no cover
        raise NotImplementedError

    def compute_pairwise(self, query: jax.Array, ref: jax.Array) -> jax.Array:  # pragma: no cover
        raise NotImplementedError

    # Direction-free helpers, as in PML's BaseDistance.
    def margin(self, x, y):
        """``x - y`` for distances, ``y - x`` for similarities."""
        return y - x if self.is_inverted else x - y

    def smallest_dist(self, x, y):
        """The closer of the two: ``min`` for distances, ``max`` for similarities."""
        return jnp.maximum(x, y) if self.is_inverted else jnp.minimum(x, y)

    def largest_dist(self, x, y):
        return jnp.minimum(x, y) if self.is_inverted else jnp.maximum(x, y)


@dataclasses.dataclass(frozen=True)
class LpDistance(BaseDistance):
    """``||q - r||_p ** power`` (PML ``LpDistance``; default ``p=2, power=1``, normalised).

    For ``p=2`` the matrix is one matrix product, as ``torch.cdist`` computes it for large
    batches; ``power=2`` skips the square root, so squared distances are exact and smooth.
    """

    def __post_init__(self):
        if not (isinstance(self.p, (int, float)) and self.p > 0):
            raise ValueError(f"LpDistance: `p` must be a number > 0 (or inf); got {self.p!r}")

    def __call__(self, query, ref=None):
        if ref is None:
            ref = query
        if self.p == 2 and self.power == 2:
            # (sqrt(x))**2 == x, without the square root's kink at zero.
            query, ref = self.maybe_normalize(query), self.maybe_normalize(ref)
            return squared_euclidean(query, ref)
        return super().__call__(query, ref)

    def compute_mat(self, query, ref):
        if self.p == 2:
            return _safe_sqrt(squared_euclidean(query, ref))
        # General p needs the [Nq, Nr, D] difference tensor.
        return safe_norm(query[:, None, :] - ref[None, :, :], self.p, axis=-1)

    def compute_pairwise(self, query, ref):
        return safe_norm(query - ref, self.p, axis=-1)


@dataclasses.dataclass(frozen=True)
class DotProductSimilarity(BaseDistance):
    """``q . r`` (PML ``DotProductSimilarity``). Normalises by default, so it equals cosine
    similarity unless ``normalize_embeddings=False``, exactly as in PML."""

    is_inverted = True

    def compute_mat(self, query, ref):
        return query @ ref.T

    def compute_pairwise(self, query, ref):
        return jnp.sum(query * ref, axis=-1)


@dataclasses.dataclass(frozen=True)
class CosineSimilarity(DotProductSimilarity):
    """Cosine similarity (PML ``CosineSimilarity``): always normalises."""

    def __post_init__(self):
        if not self.normalize_embeddings:
            raise ValueError("CosineSimilarity: `normalize_embeddings` must be True; use DotProductSimilarity")


@dataclasses.dataclass(frozen=True)
class SNRDistance(BaseDistance):
    """Signal-to-noise ratio distance ``Var(q - r) / Var(q)`` (Yuan et al., CVPR 2019).

    Variances are unbiased over the embedding dimension, as ``torch.var``. Computed with
    centred matrix products, so memory is ``[Nq, Nr]``.
    """

    def compute_mat(self, query, ref):
        dim = query.shape[1]
        qc = query - jnp.mean(query, axis=1, keepdims=True)
        rc = ref - jnp.mean(ref, axis=1, keepdims=True)
        noise = jnp.maximum(squared_euclidean(qc, rc), 0.0) / (dim - 1)
        signal = jnp.sum(qc * qc, axis=1, keepdims=True) / (dim - 1)
        return noise / jnp.maximum(signal, _SNR_FLOOR)

    def compute_pairwise(self, query, ref):
        diff = query - ref
        noise = jnp.var(diff, axis=-1, ddof=1)
        signal = jnp.var(query, axis=-1, ddof=1)
        return noise / jnp.maximum(signal, _SNR_FLOOR)
