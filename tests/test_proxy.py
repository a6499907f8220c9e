"""Parity of the proxy losses (ProxyNCA, ProxyAnchor, SoftTriple) with PML 2.9, float64,
value and gradients w.r.t. the embeddings and the proxies."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from class_matrix_utils import check_parity, l2_mean, random_batch, random_tuple
from pml_utils import assert_close, pml_distances, pml_losses, pml_reducers, pml_regularizers, torch

import jaxmetric

pytestmark = pytest.mark.pml

B, D, C = 12, 6, 5


def ident(w):
    return w


# ----------------------------------------------------------------------------- ProxyNCA

NCA_CASES = [
    ({}, {}, None),
    ({"softmax_scale": 3.0}, {"softmax_scale": 3.0}, None),
    ({"distance": jaxmetric.CosineSimilarity()}, {"distance": pml_distances.CosineSimilarity()}, None),
    ({}, {}, "pairs"),
    ({"softmax_scale": 2.0}, {"softmax_scale": 2.0}, "triplets"),
    ({"weight_regularizer": l2_mean, "weight_reg_weight": 0.3},
     {"weight_regularizer": pml_regularizers.LpRegularizer(), "weight_reg_weight": 0.3}, None),
]


@pytest.mark.parametrize("jkw,pkw,tup", NCA_CASES)
def test_proxy_nca_parity(rng, jkw, pkw, tup):
    emb, labels = random_batch(rng, B, D, C)
    w = rng.normal(size=(C, D))
    loss = pml_losses.ProxyNCALoss(C, D, **pkw)
    it = None if tup is None else random_tuple(rng, B, tup)
    check_parity(jaxmetric.proxy_nca_loss, loss, loss.proxies, emb, labels, w, to_pml=ident, indices_tuple=it, **jkw)


# ----------------------------------------------------------------------------- ProxyAnchor

ANCHOR_CASES = [
    ({}, {}, None),
    ({"margin": 0.3, "alpha": 8.0}, {"margin": 0.3, "alpha": 8}, None),
    ({}, {}, "pairs"),
    ({"alpha": 16.0}, {"alpha": 16}, "triplets"),
    ({"distance": jaxmetric.LpDistance(), "margin": 0.5}, {"distance": pml_distances.LpDistance(), "margin": 0.5}, None),
    ({"weight_regularizer": l2_mean, "weight_reg_weight": 2.0},
     {"weight_regularizer": pml_regularizers.LpRegularizer(), "weight_reg_weight": 2.0}, None),
    ({"reduction": "avg_nonzero"}, {"reducer": pml_reducers.AvgNonZeroReducer()}, None),
]


@pytest.mark.parametrize("jkw,pkw,tup", ANCHOR_CASES)
def test_proxy_anchor_parity(rng, jkw, pkw, tup):
    # Classes 4 and 5 are absent: their positive terms are empty and leave the divisor.
    emb, labels = random_batch(rng, B, D, C + 1, present=C - 1)
    w = rng.normal(size=(C + 1, D)) * 0.5
    loss = pml_losses.ProxyAnchorLoss(C + 1, D, **pkw)
    it = None if tup is None else random_tuple(rng, B, tup)
    check_parity(jaxmetric.proxy_anchor_loss, loss, loss.proxies, emb, labels, w, to_pml=ident, indices_tuple=it, **jkw)


def test_proxy_anchor_mean_reducer_as_callable(rng):
    """PML's MeanReducer on ProxyAnchor averages both terms over all proxies."""
    emb, labels = random_batch(rng, B, D, C, present=C - 2)
    w = rng.normal(size=(C, D))
    loss = pml_losses.ProxyAnchorLoss(C, D, reducer=pml_reducers.MeanReducer())
    check_parity(jaxmetric.proxy_anchor_loss, loss, loss.proxies, emb, labels, w, to_pml=ident,
                 reduction=lambda l, wt: jnp.mean(l))


def test_proxy_anchor_none_is_per_proxy(rng):
    emb, labels = random_batch(rng, B, D, C, present=C - 1)
    w = rng.normal(size=(C, D))
    per = jaxmetric.proxy_anchor_loss(emb, labels, w, reduction="none")
    assert per.shape == (C,)
    pos = jaxmetric.proxy_anchor_loss(emb, labels, w, reduction=lambda l, wt: jnp.sum(l))
    assert_close(jnp.sum(per), pos)


# ----------------------------------------------------------------------------- SoftTriple

def flat_t(w):
    """(C, K, D) -> PML's fc (D, C*K)."""
    w = np.asarray(w)
    return w.reshape(-1, w.shape[-1]).T


SOFT_CASES = [
    ({}, {}, 10, None),
    ({"la": 10.0, "gamma": 0.3, "margin": 0.05}, {"la": 10, "gamma": 0.3, "margin": 0.05}, 3, None),
    ({"centers_per_class": 2}, {}, 2, "pairs"),
    ({}, {}, 4, "triplets"),
    ({"distance": jaxmetric.DotProductSimilarity(normalize_embeddings=False)},
     {"distance": pml_distances.DotProductSimilarity(normalize_embeddings=False)}, 3, None),
    ({"weight_regularizer": l2_mean, "weight_reg_weight": 0.5},
     {"weight_regularizer": pml_regularizers.LpRegularizer(), "weight_reg_weight": 0.5}, 3, None),
]


@pytest.mark.parametrize("jkw,pkw,k,tup", SOFT_CASES)
def test_soft_triple_parity(rng, jkw, pkw, k, tup):
    emb, labels = random_batch(rng, B, D, C)
    w = rng.normal(size=(C, k, D)) * (0.3 if "distance" in jkw else 1.0)
    loss = pml_losses.SoftTripleLoss(C, D, centers_per_class=k, **pkw)
    it = None if tup is None else random_tuple(rng, B, tup)
    check_parity(jaxmetric.soft_triple_loss, loss, loss.fc, emb, labels, w, to_pml=flat_t, indices_tuple=it, **jkw)


def test_soft_triple_flat_layout_equals_3d(rng):
    emb, labels = random_batch(rng, B, D, C)
    w = rng.normal(size=(C, 4, D))
    a = jaxmetric.soft_triple_loss(emb, labels, w)
    b = jaxmetric.soft_triple_loss(emb, labels, w.reshape(C * 4, D), centers_per_class=4)
    assert_close(a, b, rtol=1e-12)
    # 2-D without centers_per_class uses PML's default 10.
    w10 = rng.normal(size=(C * 10, D))
    assert_close(jaxmetric.soft_triple_loss(emb, labels, w10), jaxmetric.soft_triple_loss(emb, labels, w10.reshape(C, 10, D)), rtol=1e-12)


def test_soft_triple_sparse_centers_regularizer_receives_flat_centers(rng):
    """The regularizer sees PML's fc.t(): (C*K, D) rows."""
    emb, labels = random_batch(rng, B, D, C)
    w = rng.normal(size=(C, 3, D))
    seen = []
    jaxmetric.soft_triple_loss(emb, labels, w, weight_regularizer=lambda m: (seen.append(m.shape), jnp.sum(m))[1])
    assert seen == [(C * 3, D)]


# ----------------------------------------------------------------------------- deliberate difference


def test_proxy_nca_keeps_underflowing_rows(rng):
    """PML drops rows whose target probability underflows to 0; jaxmetric keeps them with a
    finite loss computed in log space."""
    emb, labels = random_batch(rng, B, D, C)
    w = rng.normal(size=(C, D))
    loss = pml_losses.ProxyNCALoss(C, D, softmax_scale=5000.0)
    loss.proxies.data = torch.tensor(w)
    pml_v = float(loss(torch.tensor(emb), torch.tensor(labels)).detach())
    ours = jaxmetric.proxy_nca_loss(jnp.asarray(emb), jnp.asarray(labels), jnp.asarray(w), softmax_scale=5000.0)
    g = jax.grad(lambda e: jaxmetric.proxy_nca_loss(e, jnp.asarray(labels), jnp.asarray(w), softmax_scale=5000.0))(jnp.asarray(emb))
    assert np.isfinite(float(ours)) and np.all(np.isfinite(g))
    assert float(ours) > pml_v  # the dropped rows have the largest losses
