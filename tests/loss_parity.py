"""Shared helpers of the per-family PML 2.9 parity tests (float64, value and gradients).

Batch data, PML miner outputs as index tuples and masks, and ``parity`` (PML's value and
gradients against a JAX loss), the four parity checks every pair-list loss passes (labels with
default and other settings, a reference set, PML miners' tuples as masks, a mask with a
reference set) and ``parity_tests``, which makes them a module's parametrized tests:
tests/test_lifted.py, test_angular.py, test_tuplet_margin.py, test_pair_based.py,
test_snr_contrastive.py, test_margin_based.py, test_softmax_based.py, test_loss_properties.py.

PML in float64 throughout (``pml_float64``, ``pml``), cached jitted JAX value and gradients
(``jvg``), ``check`` and random index tuples: tests/test_listwise.py, test_histogram.py,
test_manifold.py, test_vicreg.py.
"""
from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np

import jaxmetric as jm
from pml_utils import assert_close, jax_value_and_grads, pml_miners, pml_value_and_grads, torch
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

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


@contextlib.contextmanager
def pml_float64():
    """Runs PML in float64 throughout.

    A few PML losses create float32 temporaries in a float64 computation (``torch.zeros(n)``
    without a dtype in SmoothAP, ``long * float`` in HistogramLoss, ``.float()`` before the
    inverse in ManifoldLoss), which caps their float64 precision near 1e-7. Inside this context
    the default dtype is float64 and ``Tensor.float()`` keeps float64 tensors as they are, so
    parity is measured against PML's formulas, not its float32 rounding.
    """
    orig_float = torch.Tensor.float
    orig_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.Tensor.float = lambda self, *a, **k: self if self.dtype == torch.float64 else orig_float(self, *a, **k)
    try:
        yield
    finally:
        torch.Tensor.float = orig_float
        torch.set_default_dtype(orig_dtype)


def pml(loss_fn, emb, labels=None, **kw):
    """``pml_value_and_grads`` under :func:`pml_float64`."""
    with pml_float64():
        return pml_value_and_grads(loss_fn, emb, labels, **kw)


@functools.lru_cache(maxsize=None)
def _compiled(fn, static_kw, has_aux):
    def call(diff, rest, dyn):
        return fn(diff[0], *rest, *diff[1:], **dict(static_kw), **dyn)

    return jax.jit(jax.value_and_grad(call, has_aux=has_aux))


def jvg(fn, diff, rest=(), static=None, dyn=None, has_aux=False):
    """Jitted value and gradients of ``fn(diff[0], *rest, *diff[1:], **static, **dyn)`` with
    respect to every array in ``diff`` (float64).

    Compiled functions are cached by ``(fn, static)``; ``rest`` (labels, masks, state) and
    ``dyn`` (float hyperparameters, traced) are arguments, so tests with the same shapes share
    one compilation (compiles dominate this suite's runtime on a small shared CPU).
    Returns ``(value, [grads...])`` or, with ``has_aux``, ``(value, aux, [grads...])``.
    """
    static_kw = tuple(sorted((static or {}).items()))
    diff = tuple(jnp.asarray(d, jnp.float64) for d in diff)
    out, grads = _compiled(fn, static_kw, has_aux)(diff, tuple(rest), dict(dyn or {}))
    grads = [np.asarray(g) for g in grads]
    if has_aux:
        return float(out[0]), out[1], grads
    return float(out), grads


def check(jv, jgrads, pv, pgrads, what=""):
    assert_close(jv, pv, what=f"{what} value")
    for i, (a, b) in enumerate(zip(jgrads, pgrads)):
        assert_close(a, b, what=f"{what} grad {i}")


def sorted_blocks(num_classes, per_class):
    """Labels sorted into contiguous equal blocks: [0]*m + [1]*m + ..."""
    return np.repeat(np.arange(num_classes), per_class)


def random_pairs(rng, labels, n_pairs=20):
    """A PML pair tuple (a1, p, a2, n) of valid pairs, with repeats."""
    labels = np.asarray(labels)
    b = len(labels)
    same = (labels[:, None] == labels[None, :]) & ~np.eye(b, dtype=bool)
    diff = labels[:, None] != labels[None, :]
    pa, pp = np.nonzero(same)
    na, nn = np.nonzero(diff)
    ip = rng.integers(0, len(pa), n_pairs)
    ineg = rng.integers(0, len(na), n_pairs)
    return pa[ip], pp[ip], na[ineg], nn[ineg]


def random_triplets(rng, labels, n=20):
    a1, p, _, _ = random_pairs(rng, labels, n)
    labels = np.asarray(labels)
    negs = [rng.choice(np.nonzero(labels != labels[a])[0]) for a in a1]
    return a1, p, np.asarray(negs)


# ------------------------------------------------------------ parity checks of a pair-list loss
# ``fn`` is the jaxmetric loss, ``cls`` the PML loss class, ``settings`` a list of
# ``(jaxmetric kwargs, PML kwargs)`` non-default settings.

def parity_labels_defaults_and_settings(fn, cls, settings, seed=1):
    emb, lab, _, _ = data(seed)
    parity(lambda e: fn(e, jnp.asarray(lab)), cls(), emb, lab)
    for jkw, pkw in settings:
        parity(lambda e: fn(e, jnp.asarray(lab), **jkw), cls(**pkw), emb, lab)


def parity_ref_emb(fn, cls, seed=2):
    emb, lab, ref, rlab = data(seed)
    parity(lambda e, r: fn(e, jnp.asarray(lab), ref_emb=r, ref_labels=jnp.asarray(rlab)), cls(), emb, lab, ref=ref, ref_labels=rlab)


def parity_miner_masks(fn, cls, miner, seed=3):
    """PML is given the mined tuple only (no labels): the tuple alone defines the pairs."""
    emb, lab, _, _ = data(seed)
    m = pml_miners.MultiSimilarityMiner(epsilon=0.2) if miner == "ms" else pml_miners.TripletMarginMiner(margin=0.3)
    tup = mine(m, emb, lab)
    assert len(tup[0]) > 1
    parity(lambda e: fn(e, mask_of(tup, B)), cls(), emb, None, indices_tuple=tup)


def parity_miner_mask_with_ref(fn, cls, seed=4):
    """Positives restricted to reference rows >= B, so that PML's lifted index quirk (query row
    p) cannot apply; then both definitions agree."""
    emb, lab, ref, rlab = data(seed)
    a1, p, a2, n = (x.numpy() for x in lmu.get_all_pairs_indices(torch.tensor(lab), torch.tensor(rlab)))
    keep = p >= B
    tup = (a1[keep], p[keep], a2, n)
    parity(lambda e, r: fn(e, mask_of(tup, B, R), ref_emb=r), cls(), emb, None, indices_tuple=tup, ref=ref)



def parity_tests(losses, ref_emb=(), miner_mask_with_ref=()):
    """The parity tests of a module's ``losses`` (name -> ``(fn, cls, settings)``): labels with
    default and other settings and PML miners' masks for every loss, a reference set for the
    names in ``ref_emb``, a mask with a reference set for those in ``miner_mask_with_ref``.
    Returns the test functions, for the module to bind to ``test_*`` names (the ones it asks
    for: labels, ref_emb if any, miner masks, mask with ref if any)."""
    import pytest

    @pytest.mark.parametrize("name", sorted(losses))
    def labels_defaults_and_settings(name):
        parity_labels_defaults_and_settings(*losses[name])

    @pytest.mark.parametrize("name", sorted(ref_emb))
    def with_ref_emb(name):
        parity_ref_emb(*losses[name][:2])

    @pytest.mark.parametrize("name", sorted(losses))
    @pytest.mark.parametrize("miner", ["ms", "triplet"])
    def miner_masks(name, miner):
        parity_miner_masks(*losses[name][:2], miner)

    @pytest.mark.parametrize("name", sorted(miner_mask_with_ref))
    def miner_mask_with_ref_emb(name):
        parity_miner_mask_with_ref(*losses[name][:2])

    tests = [labels_defaults_and_settings, with_ref_emb if ref_emb else None, miner_masks,
             miner_mask_with_ref_emb if miner_mask_with_ref else None]
    return tuple(t for t in tests if t is not None)
