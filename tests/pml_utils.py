"""Harness for parity tests against pytorch-metric-learning (PML 2.9) in float64.

In CI (``CI=true``) PML must be importable: the parity tests are never skipped there.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

if os.environ.get("CI"):
    import pytorch_metric_learning  # noqa: F401  (fail loudly in CI if missing)
    import torch  # noqa: F401
torch = pytest.importorskip("torch")
pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
pml_distances = pytest.importorskip("pytorch_metric_learning.distances")
pml_reducers = pytest.importorskip("pytorch_metric_learning.reducers")
pml_regularizers = pytest.importorskip("pytorch_metric_learning.regularizers")

RTOL = 1e-5
ATOL = 1e-9


def to_torch(x, grad=False):
    if x is None:
        return None
    t = torch.tensor(np.asarray(x))
    if grad:
        t.requires_grad_(True)
    return t


def pml_value_and_grads(loss_fn, emb, labels=None, *, indices_tuple=None, ref_emb=None, ref_labels=None, extra=()):
    """Value of ``loss_fn(emb, labels, indices_tuple, ref_emb, ref_labels)`` and the gradients
    w.r.t. ``emb``, ``ref_emb`` (None when not given) and each tensor in ``extra``
    (torch Parameters / tensors with requires_grad already set)."""
    e = to_torch(emb, grad=True)
    r = to_torch(ref_emb, grad=True)
    kw = {}
    if indices_tuple is not None:
        kw["indices_tuple"] = tuple(torch.as_tensor(np.asarray(i), dtype=torch.long) for i in indices_tuple)
    if r is not None:
        kw["ref_emb"] = r
        kw["ref_labels"] = None if ref_labels is None else torch.as_tensor(np.array(ref_labels))
    lab = None if labels is None else torch.as_tensor(np.array(labels))
    value = loss_fn(e, lab, **kw)
    if not torch.is_tensor(value):
        value = torch.tensor(float(value), dtype=torch.float64)
    params = [e] + ([r] if r is not None else []) + list(extra)
    if value.requires_grad:
        grads = torch.autograd.grad(value, params, allow_unused=True)
    else:
        grads = [None] * len(params)
    grads = [np.zeros(p.shape) if g is None else g.detach().numpy() for g, p in zip(grads, params)]
    ge = grads[0]
    gr = grads[1] if r is not None else None
    gx = grads[2:] if r is not None else grads[1:]
    return float(value.detach()), ge, gr, gx


def assert_close(actual, expected, rtol=RTOL, atol=ATOL, what=""):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64), rtol=rtol, atol=atol, err_msg=what)


def jax_value_and_grads(fn, emb, ref_emb=None):
    """``fn(emb)`` or ``fn(emb, ref_emb)`` with gradients, in float64."""
    if ref_emb is None:
        v, g = jax.value_and_grad(fn)(jnp.asarray(emb, jnp.float64))
        return float(v), np.asarray(g), None
    v, (g, gr) = jax.value_and_grad(fn, argnums=(0, 1))(jnp.asarray(emb, jnp.float64), jnp.asarray(ref_emb, jnp.float64))
    return float(v), np.asarray(g), np.asarray(gr)
