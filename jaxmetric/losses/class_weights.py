"""Initialisers and inference logits for the learned class matrices of the proxy and
classifier-head losses.

``init_class_weights(key, num_classes, dim, kind=...)`` draws the matrix a loss expects, with
PML's initialisation for that loss, shaped ``(num_classes, dim)`` (``(num_classes, K, dim)`` for
SoftTriple and the sub-center losses). ``class_logits(embeddings, weights, kind=...)`` is PML's
``get_logits``: the ``[B, num_classes]`` scores used at inference (no margin).

========================  ========================================  ==========================
kind                      PML initialisation (on PML's layout)        ``class_logits``
========================  ========================================  ==========================
``proxy_nca``             ``normal_``: N(0, 1)                        ``distance(x, p)`` (raw
                                                                      distances, as PML)
``proxy_anchor``          ``kaiming_normal_(mode="fan_out")``:        ``distance(x, p)``
                          N(0, 2 / num_classes)
``soft_triple``           ``kaiming_uniform_(a=sqrt 5)`` on           relaxed similarity
                          ``(D, C K)``: U(±1/sqrt(C K))               ``S_ic``
``normalized_softmax``    N(0, 1)                                     ``s(x, w/|w|) / T``
``large_margin_softmax``  N(0, 1)                                     ``s |w_c| |x| cos``
``sphereface``            N(0, 1)                                     ``s |x| cos``
``arcface``, ``cosface``  N(0, 1)                                     ``s cos``
``subcenter_arcface``,    N(0, 1), K = 3 sub-centers                  ``s max_k cos``
``dynamic_arcface``
``p2sgrad``               U(-1, 1), rows renormalised to unit norm    ``cos`` (clamped)
========================  ========================================  ==========================
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import math

import jax
import jax.numpy as jnp

from jaxmetric._src import class_matrix as cm, validate
from jaxmetric._src.front_door import front_door
from jaxmetric.distances import CosineSimilarity, DotProductSimilarity, LpDistance, l2_normalize, safe_norm
from jaxmetric.losses import classifier as _clf
from jaxmetric.losses import proxy as _proxy

if TYPE_CHECKING:  # annotations only: no import at run time, so no import circle
    from jaxmetric._typing import Array, ArrayLike, DTypeLike

KINDS = (
    "proxy_nca",
    "proxy_anchor",
    "soft_triple",
    "normalized_softmax",
    "large_margin_softmax",
    "sphereface",
    "arcface",
    "cosface",
    "subcenter_arcface",
    "dynamic_arcface",
    "p2sgrad",
)

_CENTER_KINDS = {"soft_triple": ("centers_per_class", 10), "subcenter_arcface": ("sub_centers", 3), "dynamic_arcface": ("sub_centers", 3)}


@front_door
def init_class_weights(key: Array, num_classes: int, dim: int, *, kind: str, centers_per_class: int | None = None, sub_centers: int | None = None, dtype: DTypeLike = jnp.float32) -> Array:
    """A class matrix for the loss ``kind`` with PML's initialisation (see the module table).

    Args:
      key: a PRNG key.
      num_classes, dim: the matrix is ``(num_classes, dim)``.
      kind: the loss name without ``_loss`` (``"arcface"``, ``"proxy_anchor"``, ...).
      centers_per_class: SoftTriple's K (default 10); the result is ``(num_classes, K, dim)``.
      sub_centers: K of ``subcenter_arcface`` / ``dynamic_arcface`` (default 3); the result is
        ``(num_classes, K, dim)``.
      dtype: float dtype of the result (float32 by default, also with bf16 models).
    """
    fn = "init_class_weights"
    validate.check_choice(kind, KINDS, "kind", fn=fn)
    for name, val in (("num_classes", num_classes), ("dim", dim)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{fn}: `{name}` must be a positive int; got {val!r}")
    given = {"centers_per_class": centers_per_class, "sub_centers": sub_centers}
    wanted, default = _CENTER_KINDS.get(kind, (None, None))
    for name, val in given.items():
        if val is not None and name != wanted:
            raise ValueError(f"{fn}: `{name}` does not apply to kind={kind!r}" + (f" (use `{wanted}`)" if wanted else ""))
    k = None
    if wanted is not None:
        k = given[wanted] if given[wanted] is not None else default
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"{fn}: `{wanted}` must be a positive int; got {k!r}")
    shape = (num_classes, dim) if k is None else (num_classes, k, dim)
    if kind == "proxy_anchor":
        # kaiming_normal_(mode="fan_out") on (C, D): gain sqrt(2), fan_out = C.
        w = jax.random.normal(key, shape, jnp.float32) * math.sqrt(2.0 / num_classes)
    elif kind == "soft_triple":
        # kaiming_uniform_(a=sqrt(5)) on (D, C*K): bound = sqrt(6 / ((1 + a^2) fan_in)) = 1/sqrt(C K).
        bound = 1.0 / math.sqrt(num_classes * k)
        w = jax.random.uniform(key, shape, jnp.float32, -bound, bound)
    elif kind == "p2sgrad":
        w = l2_normalize(jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0))
    else:
        w = jax.random.normal(key, shape, jnp.float32)
    return w.astype(dtype)


_LOGIT_DEFAULTS = {
    "proxy_nca": {"distance": LpDistance(power=2)},
    "proxy_anchor": {"distance": CosineSimilarity()},
    "soft_triple": {"centers_per_class": None, "gamma": 0.1, "distance": CosineSimilarity()},
    "normalized_softmax": {"temperature": 0.05, "distance": DotProductSimilarity()},
    "large_margin_softmax": {"scale": 1.0},
    "sphereface": {"scale": 1.0},
    "arcface": {"scale": 64.0},
    "cosface": {"scale": 64.0},
    "subcenter_arcface": {"scale": 64.0, "sub_centers": None},
    "dynamic_arcface": {"scale": 64.0, "sub_centers": None},
    "p2sgrad": {},
}


@front_door
def class_logits(embeddings: ArrayLike, weights: ArrayLike, *, kind: str, **hyperparameters) -> Array:
    """PML's ``get_logits``: ``[B, num_classes]`` class scores for inference (no margin).

    Args:
      embeddings: ``[B, D]``.
      weights: the class matrix the loss ``kind`` was trained with.
      kind: the loss name without ``_loss`` (see the module table for what each returns).
      **hyperparameters: the loss's hyperparameters that the logits use, with the loss's
        defaults: ``distance`` (proxy_nca, proxy_anchor, soft_triple, normalized_softmax),
        ``scale`` (margin losses), ``temperature`` (normalized_softmax), ``gamma`` and
        ``centers_per_class`` (soft_triple), ``sub_centers`` (sub-center losses).

    Note: for ``proxy_nca`` the result is PML's raw distance matrix (smaller is closer with
    the default distance), not negated.
    """
    fn = "class_logits"
    validate.check_choice(kind, KINDS, "kind", fn=fn)
    allowed = _LOGIT_DEFAULTS[kind]
    unknown = set(hyperparameters) - set(allowed)
    if unknown:
        raise TypeError(f"{fn}: kind={kind!r} takes hyperparameters {sorted(allowed)}; got unexpected {sorted(unknown)}")
    hp = {**allowed, **hyperparameters}
    embeddings = validate.check_embeddings(embeddings, "embeddings", fn=fn)
    d = embeddings.shape[1]
    centers = None
    if kind in _CENTER_KINDS:
        name, default = _CENTER_KINDS[kind]
        centers = (hp[name], default, name)
    weights = cm.check_class_matrix(weights, d, fn, allow_3d=centers is not None)
    if centers is not None:
        weights = cm.as_centers(weights, *centers, fn=fn)
    dtype = validate.compute_dtype(embeddings, weights)
    emb, w = embeddings.astype(dtype), weights.astype(dtype)
    if kind in ("proxy_nca", "proxy_anchor"):
        out = hp["distance"](emb, w)
    elif kind == "soft_triple":
        out = _proxy._soft_triple_sim(emb, w, hp["gamma"], hp["distance"])
    elif kind == "normalized_softmax":
        out = _clf._normalized_softmax_logits(emb, hp["distance"].normalize(w), hp["temperature"], hp["distance"])
    elif kind == "large_margin_softmax":
        out = _clf._cosine(emb, w) * _clf._lsoftmax_magnitudes(emb, w) * hp["scale"]
    elif kind == "sphereface":
        out = _clf._cosine(emb, w) * safe_norm(emb, axis=1)[:, None] * hp["scale"]
    elif kind in ("arcface", "cosface"):
        out = _clf._cosine(emb, w) * hp["scale"]
    elif kind in ("subcenter_arcface", "dynamic_arcface"):
        out = _clf._subcenter_cosine(emb, w) * hp["scale"]
    else:  # p2sgrad
        out = _clf._p2s_cosine(emb, w)
    return out.astype(dtype)
