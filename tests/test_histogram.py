"""Histogram loss and dynamic soft margin loss: parity with PML 2.9 (float64, value and
gradient), the running histogram threaded through several steps, pinned differences, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from loss_parity import check, jvg, pml, pml_float64, random_pairs, random_triplets
from pml_utils import assert_close, pml_distances, pml_losses, pml_value_and_grads

B, D = 12, 8


def _emb(rng, b=B):
    return rng.normal(size=(b, D))


# ----------------------------------------------------------------------------- histogram loss

@pytest.mark.parametrize("kw", [{}, {"n_bins": 7}, {"delta": 0.05}, {"n_bins": 40, "delta": 0.05}])
def test_histogram_parity(rng, kw):
    emb, labels = _emb(rng), rng.integers(0, 3, B)
    pv, pg, _, _ = pml(pml_losses.HistogramLoss(**kw), emb, labels)
    jv, jg = jvg(jm.histogram_loss, (emb,), (labels,), kw)
    check(jv, jg, pv, [pg])


def test_histogram_index_tuples(rng):
    """PML turns any tuple into triplets, then unique unordered (a, p) and (a, n) pairs."""
    labels = rng.integers(0, 3, B)
    emb = _emb(rng)
    for tup in (random_pairs(rng, labels), random_triplets(rng, labels)):
        mask = jm.from_indices(tuple(jnp.asarray(t) for t in tup), B, dtype=jnp.float64)
        pv, pg, _, _ = pml(pml_losses.HistogramLoss(), emb, None, indices_tuple=tup)
        jv, jg = jvg(jm.histogram_loss, (emb,), (mask,))
        check(jv, jg, pv, [pg], f"{len(tup)}-tuple")


def test_histogram_edge_batches(rng):
    for labels in (np.zeros(B, int), np.arange(B)):
        emb = _emb(rng)
        pv, pg, _, _ = pml(pml_losses.HistogramLoss(), emb, labels)
        jv, jg = jvg(jm.histogram_loss, (emb,), (labels,))
        check(jv, jg, pv, [pg])
        assert jv == 0.0


def test_histogram_similarity_one_pinned(rng):
    """Duplicate unit vectors have similarity exactly 1: PML indexes past its histogram and
    raises; jaxmetric puts them on the end node and stays finite."""
    emb = np.eye(D)[[0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]] * 1.0
    labels = np.arange(B) // 2
    with pytest.raises(RuntimeError, match="out of bounds"):
        pml(pml_losses.HistogramLoss(), emb, labels)
    v, (g,) = jvg(jm.histogram_loss, (emb,), (labels,))
    assert np.isfinite(v) and np.all(np.isfinite(g))
    # All positives at s = 1 (the last node), all negatives at s = 0: the CDF of p+ is 0 there.
    assert v == pytest.approx(0.0, abs=1e-12)


def test_histogram_where_and_errors(rng):
    emb, labels = _emb(rng, 9), rng.integers(0, 3, 9)
    pad_emb = np.concatenate([emb, rng.normal(size=(3, D))])
    pad_lab = np.concatenate([labels, labels[:3]])
    v, (g,) = jvg(jm.histogram_loss, (emb,), (labels,))
    pv, (pgr,) = jvg(lambda e, y, w: jm.histogram_loss(e, y, where=w), (pad_emb,), (pad_lab, jnp.arange(B) < 9))
    assert_close(pv, v)
    assert_close(pgr[:9], g)
    x, y = jnp.ones((6, 4)), jnp.arange(6) % 2
    with pytest.raises(ValueError, match="histogram_loss: `delta` and `n_bins` must satisfy"):
        jm.histogram_loss(x, y, n_bins=10, delta=0.1)
    with pytest.raises(ValueError, match="histogram_loss: `delta` must be a positive"):
        jm.histogram_loss(x, y, delta=-0.1)
    with pytest.raises(TypeError, match="histogram_loss: `n_bins` must be a Python int"):
        jm.histogram_loss(x, y, n_bins=jnp.asarray(10))
    with pytest.raises(ValueError, match="histogram_loss: `ref_emb` is not supported"):
        jm.histogram_loss(x, y, ref_emb=x, ref_labels=y)


# ----------------------------------------------------------------------------- dynamic soft margin

class _PMLDetachedHistogram(pml_losses.DynamicSoftMarginLoss):
    """PML with the histogram update on detached values: jaxmetric's deliberate fix."""

    def update_histogram(self, data):
        super().update_histogram(data.detach())


def _dsml(e, y, state, **kw):
    return jm.dynamic_soft_margin_loss(e, y, state, **kw)


DSML_NON_DEFAULT = (
    {"min_val": -4.0, "num_bins": 20, "momentum": 0.1},
    {"distance": jm.LpDistance(power=2)},
    {"distance": pml_distances.LpDistance(power=2)},
)


@pytest.mark.parametrize("non_default", [False, True])
def test_dsml_steps_match_pml(rng, non_default):
    """Several consecutive steps with the state threaded == PML's successive calls (values,
    histograms; gradients vs PML with the histogram update detached)."""
    dyn, static, pml_dist = DSML_NON_DEFAULT if non_default else ({"min_val": -2.0, "num_bins": 10, "momentum": 0.01}, {}, {})
    num_bins = dyn.get("num_bins", 10)
    static = dict(static, num_bins=num_bins)
    dyn = {k: v for k, v in dyn.items() if k != "num_bins"}
    pfn = _PMLDetachedHistogram(num_bins=num_bins, **dyn, **pml_dist)
    state = jm.init_dynamic_soft_margin_state(num_bins, jnp.float64)
    for step in range(3):
        emb, labels = _emb(rng), rng.integers(0, 3, B)
        pv, pg, _, _ = pml(pfn, emb, labels)
        jv, state, jg = jvg(_dsml, (emb,), (labels, state), static, dyn, has_aux=True)
        check(jv, jg, pv, [pg], f"step {step}")
        assert_close(state.hist, pfn.hist_.detach().numpy(), what=f"hist step {step}")
    assert state.hist.dtype == jnp.float64


def test_dsml_histogram_gradient_fix_pinned(rng):
    """PML differentiates through its histogram update (the CDF weights get a gradient and the
    graph leaks into the next step); jaxmetric's histogram is a constant: same value,
    different gradient."""
    emb, labels = _emb(rng), rng.integers(0, 3, B)
    state = jm.init_dynamic_soft_margin_state(10, jnp.float64)
    with pml_float64():
        raw = pml_value_and_grads(pml_losses.DynamicSoftMarginLoss(), emb, labels)
    jv, _, (jg,) = jvg(_dsml, (emb,), (labels, state), has_aux=True)
    assert_close(jv, raw[0])
    assert not np.allclose(jg, raw[1], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("kind", ["pairs", "triplets", "ref_emb"])
def test_dsml_index_tuples_and_ref(rng, kind):
    emb, labels = _emb(rng), rng.integers(0, 3, B)
    state = jm.init_dynamic_soft_margin_state(10, jnp.float64)
    pfn = _PMLDetachedHistogram()
    if kind == "ref_emb":
        ref, ref_labels = rng.normal(size=(10, D)), rng.integers(0, 3, 10)
        pv, pg, pgr, _ = pml(pfn, emb, labels, ref_emb=ref, ref_labels=ref_labels)
        f = lambda e, y, ry, s, r: jm.dynamic_soft_margin_loss(e, y, s, ref_emb=r, ref_labels=ry)  # noqa: E731
        jv, _, jg = jvg(f, (emb, ref), (labels, ref_labels, state), has_aux=True)
        check(jv, jg, pv, [pg, pgr])
        return
    tup = random_pairs(rng, labels) if kind == "pairs" else random_triplets(rng, labels)
    mask = jm.from_indices(tuple(jnp.asarray(t) for t in tup), B, dtype=jnp.float64)
    pv, pg, _, _ = pml(pfn, emb, labels, indices_tuple=tup)
    jv, new, jg = jvg(_dsml, (emb,), (mask, state), has_aux=True)
    check(jv, jg, pv, [pg])
    assert_close(new.hist, pfn.hist_.detach().numpy())


class _CloningLpDistance(pml_distances.LpDistance):
    """PML's labels-free path fills the diagonal of the distance matrix in place, which breaks
    its own backward pass (pinned below); a copy of the matrix makes PML differentiable."""

    def forward(self, query_emb, ref_emb=None):
        return super().forward(query_emb, ref_emb).clone()


def test_dsml_without_labels_pml_backward_bug_pinned(rng):
    emb = _emb(rng)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        pml(pml_losses.DynamicSoftMarginLoss(), emb, None)
    state = jm.init_dynamic_soft_margin_state(10, jnp.float64)
    v, _, (g,) = jvg(_dsml, (emb,), (None, state), has_aux=True)
    assert np.isfinite(v) and np.all(np.isfinite(g)) and np.any(g != 0)
    # A single pair has no negative (PML: x = -inf); the element is dropped.
    v1, s1 = jax.jit(lambda e: _dsml(e, None, state))(jnp.ones((1, D)))
    assert float(v1) == 0.0 and np.all(np.asarray(s1.hist) == 0)


@pytest.mark.parametrize("ref_rows", [None, 9, 15])
def test_dsml_without_labels(rng, ref_rows):
    """Descriptor matching: emb[i] <-> ref[i] are the positives (zero-padded when sizes differ)."""
    pfn = _PMLDetachedHistogram(distance=_CloningLpDistance())
    state = jm.init_dynamic_soft_margin_state(10, jnp.float64)
    for step in range(2):
        emb = _emb(rng)
        if ref_rows is None:
            pv, pg, _, _ = pml(pfn, emb, None)
            jv, state, jg = jvg(_dsml, (emb,), (None, state), has_aux=True)
            check(jv, jg, pv, [pg])
        else:
            ref = emb[:ref_rows] + 0.3 * rng.normal(size=(ref_rows, D)) if ref_rows <= B else rng.normal(size=(ref_rows, D))
            pv, pg, pgr, _ = pml(pfn, emb, None, ref_emb=ref)
            f = lambda e, s, r: jm.dynamic_soft_margin_loss(e, None, s, ref_emb=r)  # noqa: E731
            jv, state, jg = jvg(f, (emb, ref), (state,), has_aux=True)
            check(jv, jg, pv, [pg, pgr])
        assert_close(state.hist, pfn.hist_.detach().numpy())


def test_dsml_empty_selection_keeps_state(rng):
    emb = _emb(rng)
    state = jm.DynamicSoftMarginState(jnp.linspace(0.0, 1.0, 10) / 4.5)
    pv, pg, _, _ = pml(pml_losses.DynamicSoftMarginLoss(), emb, np.zeros(B, int))
    jv, new, (jg,) = jvg(_dsml, (emb,), (np.zeros(B, int), state), has_aux=True)
    assert jv == pv == 0.0 and np.all(jg == 0) and np.all(pg == 0)
    assert_close(new.hist, state.hist)


def test_dsml_out_of_range_pinned():
    """x = d_ap - d_an >= 1.6 (default bins) makes PML index past its histogram; jaxmetric
    clamps to the end bins."""
    e = np.zeros((4, D))
    e[0, 0], e[1, 0], e[2, 0], e[3, 1] = 1.0, -1.0, 1.0, 1.0  # d_ap = 2, d_an = 0
    labels = np.array([0, 0, 1, 2])
    with pytest.raises(RuntimeError, match="out of bounds"):
        pml(pml_losses.DynamicSoftMarginLoss(), e, labels)
    state = jm.init_dynamic_soft_margin_state(10, jnp.float64)
    v, new, (g,) = jvg(_dsml, (e,), (labels, state), has_aux=True)
    assert np.isfinite(v) and np.all(np.isfinite(g)) and np.all(np.isfinite(new.hist))
    assert float(jnp.sum(new.hist)) == pytest.approx(1.0)


def test_dsml_blocks_reductions_and_scan(rng):
    emb, labels = jnp.asarray(_emb(rng)), jnp.asarray(rng.integers(0, 3, B))
    state = jm.init_dynamic_soft_margin_state(10, jnp.float64)
    v, s1, (g,) = jvg(_dsml, (emb,), (labels, state), has_aux=True)
    bv, bs, (bg,) = jvg(_dsml, (emb,), (labels, state), {"block_size": 5}, has_aux=True)
    assert_close(bv, v)
    assert_close(bg, g)
    assert_close(bs.hist, s1.hist)
    cube, total = jax.jit(lambda e: (_dsml(e, labels, state, reduction="none")[0], _dsml(e, labels, state, reduction="sum", block_size=5)[0]))(emb)
    assert cube.shape == (B, B, B)
    assert_close(jnp.sum(cube), total)

    # State threaded through lax.scan under jit == Python loop of eager steps.
    embs = jnp.asarray(rng.normal(size=(3, B, D)))

    def step(s, e):
        loss, s = _dsml(e, labels, s)
        return s, loss

    final, losses = jax.jit(lambda s, es: jax.lax.scan(step, s, es))(state, embs)
    s = state
    one = jax.jit(lambda e, s: _dsml(e, labels, s))
    for i in range(3):
        loss, s = one(embs[i], s)
        assert_close(losses[i], loss)
    assert_close(final.hist, s.hist)


def test_dsml_bad_inputs():
    x, y = jnp.ones((6, 4)), jnp.arange(6) % 2
    st = jm.init_dynamic_soft_margin_state(10)
    cases = [
        (ValueError, r"`state.hist` must be a float array of shape \(8,\)", lambda: _dsml(x, y, st, num_bins=8)),
        (TypeError, "`state` must be a DynamicSoftMarginState", lambda: _dsml(x, y, jnp.zeros(10))),
        (ValueError, "`distance` must be LpDistance with normalize", lambda: _dsml(x, y, st, distance=jm.LpDistance(p=1))),
        (TypeError, "`distance` must be a LpDistance", lambda: _dsml(x, y, st, distance=jm.CosineSimilarity())),
        (ValueError, "`momentum` must be in", lambda: _dsml(x, y, st, momentum=2.0)),
        (ValueError, "`min_val` must be non-zero", lambda: _dsml(x, y, st, min_val=0.0)),
        (ValueError, "`ref_labels` is required with `ref_emb`", lambda: _dsml(x, y, st, ref_emb=x)),
        (ValueError, "`labels` must have 6 rows", lambda: _dsml(x, y[:4], st)),
    ]
    for exc, msg, call in cases:
        with pytest.raises(exc, match="dynamic_soft_margin_loss: " + msg):
            call()
