"""Shared data and parity helpers for tests/test_losses_a_*.py."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import jaxmetric as jm
from pml_utils import assert_close, jax_value_and_grads, pml_value_and_grads, torch

B, R, DIM, NCLS = 12, 16, 6, 4


def data(seed=0, b=B, r=R, dim=DIM, ncls=NCLS):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(b, dim))
    lab = rng.integers(0, ncls, b)
    ref = rng.normal(size=(r, dim))
    rlab = rng.integers(0, ncls, r)
    return emb, lab, ref, rlab


def normalized(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def mine(miner, emb, lab, ref=None, rlab=None):
    t = torch.tensor
    if ref is None:
        out = miner(t(emb), t(lab))
    else:
        out = miner(t(emb), t(lab), t(ref), t(rlab))
    return tuple(np.asarray(x) for x in out)


def mask_of(tup, b, r=None):
    return jm.from_indices(tuple(jnp.asarray(x) for x in tup), b, r, dtype=jnp.float64)


def parity(jfn, pml_loss, emb, labels=None, *, indices_tuple=None, ref=None, ref_labels=None):
    """PML's value and gradients against ``jfn(e)`` / ``jfn(e, r)`` (float64); returns PML's value."""
    pv, pg, pgr, _ = pml_value_and_grads(pml_loss, emb, labels, indices_tuple=indices_tuple, ref_emb=ref, ref_labels=ref_labels)
    if ref is None:
        jv, jg, _ = jax_value_and_grads(jfn, emb)
    else:
        jv, jg, jgr = jax_value_and_grads(jfn, emb, ref)
        assert_close(jgr, pgr, what="grad ref_emb")
    assert np.isfinite(pv)
    assert_close(jv, pv, what="value")
    assert_close(jg, pg, what="grad embeddings")
    return pv
