"""Parity helpers for the losses with a learned class matrix (proxy and classifier heads)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pml_utils import assert_close, pml_value_and_grads, torch

import jaxmetric
from jaxmetric.distances import safe_norm


def random_batch(rng, b=12, d=6, c=5, present=None):
    """Float64 embeddings ``[b, d]`` and int labels ``[b]`` drawn from the first ``present``
    classes (default all ``c``; fewer leaves some proxies without positives)."""
    emb = rng.normal(size=(b, d))
    labels = rng.integers(0, c if present is None else present, size=b)
    return emb, labels


def random_tuple(rng, b, kind):
    if kind == "pairs":
        return tuple(rng.integers(0, b, size=n) for n in (9, 9, 11, 11))
    return tuple(rng.integers(0, b, size=10) for _ in range(3))


def jax_mask(indices_tuple, b):
    if indices_tuple is None:
        return None
    return jaxmetric.from_indices(tuple(jnp.asarray(i) for i in indices_tuple), b, dtype=jnp.float64)


def l2_mean(w):
    """Mean row norm: PML's ``LpRegularizer()`` (p=2, power=1, MeanReducer)."""
    return jnp.mean(safe_norm(w, axis=1))


def check_parity(jax_fn, pml_loss, pml_param, emb, labels, w, *, to_pml=lambda w: w.T, indices_tuple=None, **kwargs):
    """Value and gradients w.r.t. the embeddings and the class matrix equal PML's (float64).

    ``to_pml`` maps jaxmetric's class matrix to PML's parameter layout (the transpose for the
    softmax family, identity for proxies)."""
    pml_param.data = torch.tensor(np.ascontiguousarray(to_pml(np.asarray(w))), dtype=torch.float64)
    v_ref, ge_ref, _, (gw_ref,) = pml_value_and_grads(
        pml_loss, emb, labels, indices_tuple=indices_tuple, extra=(pml_param,)
    )
    mask = jax_mask(indices_tuple, emb.shape[0])
    if mask is not None:
        kwargs["mask"] = mask
    lab = jnp.asarray(labels)
    v, (ge, gw) = jax.value_and_grad(lambda e, ww: jax_fn(e, lab, ww, **kwargs), argnums=(0, 1))(
        jnp.asarray(emb, jnp.float64), jnp.asarray(w, jnp.float64)
    )
    assert v.dtype == jnp.float64
    assert_close(v, v_ref, what="value")
    assert_close(ge, ge_ref, what="grad wrt embeddings")
    assert_close(to_pml(np.asarray(gw)), gw_ref, what="grad wrt class matrix")
    return float(v)
