"""Multi-label metrics: parity with scikit-learn on random inputs (ties, empty rows and
classes, all-true rows, sample weights), the reference's golden values, jit."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmetric import metrics as M

if os.environ.get("CI"):
    import sklearn  # noqa: F401  (required in CI)
sk = pytest.importorskip("sklearn.metrics")

# The random cases include empty rows and classes on purpose: the sklearn reference warns there
# (its ill-defined scores are set to 0, and its ranking curves have no positive class).
pytestmark = [
    pytest.mark.filterwarnings("ignore:.* is ill-defined and being set to 0.0:sklearn.exceptions.UndefinedMetricWarning"),
    pytest.mark.filterwarnings("ignore:No positive class found in y_true:UserWarning"),
]

SHAPE = (8, 5)


def make_case(seed):
    rng = np.random.default_rng(seed)
    n, L = SHAPE
    y = (rng.random((n, L)) < rng.uniform(0.2, 0.6)).astype(np.int32)
    y[0] = 0  # a row without labels
    y[1] = 1  # a row with every label
    y[:, 0] = 0  # a class without positives
    y[1, 0] = 0
    if seed % 2:
        s = rng.integers(0, 3, (n, L)).astype(np.float64)  # many ties
    else:
        s = np.round(rng.normal(size=(n, L)), 1)  # some ties
    s[2] = 0.5  # a fully tied row
    p = (rng.random((n, L)) < 0.4).astype(np.int32)
    p[3] = 0  # predicts nothing
    p[:, 1] = 0  # a label never predicted
    w = rng.random(n)
    w[4] = 0.0
    return y, s, p, w


def close(a, b):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-9, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("weighted", [False, True])
def test_threshold_metrics_vs_sklearn(seed, weighted):
    y, _, p, w = make_case(seed)
    w = w if weighted else None
    close(M.hamming_loss(y, p, sample_weight=w), sk.hamming_loss(y, p, sample_weight=w))
    close(M.subset_accuracy(y, p, sample_weight=w), sk.accuracy_score(y, p, sample_weight=w))
    for average in ["micro", "macro", "samples", "weighted", None]:
        for zd in ["warn", 0.0, 1.0, np.nan]:
            close(
                M.f1_score(y, p, average=average, zero_division=zd, sample_weight=w),
                sk.f1_score(y, p, average=average, zero_division=zd, sample_weight=w),
            )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("weighted", [False, True])
def test_ranking_metrics_vs_sklearn(seed, weighted):
    y, s, _, w = make_case(seed)
    w = w if weighted else None
    for average in ["macro", "micro", "samples", "weighted", None]:
        close(M.average_precision(y, s, average=average, sample_weight=w), sk.average_precision_score(y, s, average=average, sample_weight=w))
    close(M.label_ranking_average_precision(y, s, sample_weight=w), sk.label_ranking_average_precision_score(y, s, sample_weight=w))
    close(M.coverage_error(y, s, sample_weight=w), sk.coverage_error(y, s, sample_weight=w))
    close(M.label_ranking_loss(y, s, sample_weight=w), sk.label_ranking_loss(y, s, sample_weight=w))


def test_golden_values():
    """reference/multilabel-reference.md §3.1, computed with scikit-learn 1.9.1."""
    Y = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 1], [0, 0, 0, 1]])
    S = np.array([[0.9, 0.2, 0.6, 0.1], [0.4, 0.8, 0.3, 0.2], [0.7, 0.1, 0.5, 0.6], [0.2, 0.3, 0.1, 0.9]])
    P = (S >= 0.5).astype(int)
    r = lambda v: round(float(v), 6)  # noqa: E731
    assert r(M.hamming_loss(Y, P)) == 0.125
    assert r(M.subset_accuracy(Y, P)) == 0.75
    assert r(M.f1_score(Y, P, average="micro")) == 0.857143
    assert r(M.f1_score(Y, P, average="macro")) == 0.833333
    assert r(M.f1_score(Y, P, average="samples")) == 0.916667
    assert r(M.f1_score(Y, P, average="weighted")) == 0.857143
    assert r(M.average_precision(Y, S)) == 0.9375
    np.testing.assert_allclose(np.asarray(M.average_precision(Y, S, average=None)), [1, 0.75, 1, 1])
    assert r(M.average_precision(Y, S, average="micro")) == 0.919643
    assert r(M.label_ranking_average_precision(Y, S)) == 0.979167
    assert r(M.coverage_error(Y, S)) == 2.0
    assert r(M.label_ranking_loss(Y, S)) == 0.083333
    assert r(M.one_error(Y, S)) == 0.0


def test_sklearn_edge_cases():
    # all scores tied: LRAP 1/3, coverage 3, ranking loss 1
    y, s = np.array([[1, 0, 0]]), np.array([[0.5, 0.5, 0.5]])
    close(M.label_ranking_average_precision(y, s), 1 / 3)
    close(M.coverage_error(y, s), 3.0)
    close(M.label_ranking_loss(y, s), 1.0)
    # a class with no positives has AP 0 and stays in the macro mean: per class [1, 0, 1]
    y = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 0]])
    s = np.array([[0.9, 0.1, 0.8], [0.2, 0.5, 0.7], [0.8, 0.3, 0.1]])
    np.testing.assert_allclose(np.asarray(M.average_precision(y, s, average=None)), [1.0, 0.0, 1.0])
    close(M.average_precision(y, s), 2 / 3)
    close(M.average_precision(y, s, drop_empty=True), 1.0)
    # no labels at all: LRAP 1, coverage 0, ranking loss 0; AP 0 (or 0 when dropping everything)
    y0 = np.zeros((3, 3), int)
    close(M.label_ranking_average_precision(y0, s), 1.0)
    close(M.coverage_error(y0, s), 0.0)
    close(M.label_ranking_loss(y0, s), 0.0)
    close(M.average_precision(y0, s, drop_empty=True), 0.0)
    close(M.average_precision(y0, s, average="weighted"), sk.average_precision_score(y0, s, average="weighted"))


def test_drop_empty_matches_sklearn_on_present_classes():
    y, s, _, _ = make_case(1)
    keep = y.sum(0) > 0
    close(M.average_precision(y, s, drop_empty=True), sk.average_precision_score(y[:, keep], s[:, keep]))
    rows = y.sum(1) > 0
    close(M.average_precision(y, s, average="samples", drop_empty=True), sk.average_precision_score(y[rows], s[rows], average="samples"))


def ref_one_error(y, s):
    return np.mean([y[i, np.argmax(s[i])] == 0 for i in range(len(y))])


@pytest.mark.parametrize("seed", range(3))
def test_one_error(seed):
    y, s, _, w = make_case(seed)
    close(M.one_error(y, s), ref_one_error(y, s))
    close(M.one_error(y, s, sample_weight=w), np.average([y[i, np.argmax(s[i])] == 0 for i in range(len(y))], weights=w))


def test_jit_vmap_and_padded_rows():
    y, s, p, w = make_case(2)

    @jax.jit
    def all_metrics(y, s, p, w):
        return jnp.stack([
            M.hamming_loss(y, p, sample_weight=w),
            M.subset_accuracy(y, p, sample_weight=w),
            M.f1_score(y, p, average="macro", sample_weight=w),
            M.f1_score(y, p, average="samples", sample_weight=w),
            M.average_precision(y, s, sample_weight=w),
            M.average_precision(y, s, average="micro", sample_weight=w),
            M.label_ranking_average_precision(y, s, sample_weight=w),
            M.coverage_error(y, s, sample_weight=w),
            M.label_ranking_loss(y, s, sample_weight=w),
            M.one_error(y, s, sample_weight=w),
        ])

    got = np.asarray(all_metrics(jnp.asarray(y), jnp.asarray(s), jnp.asarray(p), jnp.asarray(w)))
    eager = [
        M.hamming_loss(y, p, sample_weight=w), M.subset_accuracy(y, p, sample_weight=w),
        M.f1_score(y, p, average="macro", sample_weight=w), M.f1_score(y, p, average="samples", sample_weight=w),
        M.average_precision(y, s, sample_weight=w), M.average_precision(y, s, average="micro", sample_weight=w),
        M.label_ranking_average_precision(y, s, sample_weight=w), M.coverage_error(y, s, sample_weight=w),
        M.label_ranking_loss(y, s, sample_weight=w), M.one_error(y, s, sample_weight=w),
    ]
    np.testing.assert_allclose(got, np.asarray(eager, np.float64), rtol=1e-12)
    # a padded evaluation batch (weight 0 rows) equals the unpadded one
    keep = w > 0
    close(M.average_precision(y, s, sample_weight=keep.astype(float)), sk.average_precision_score(y[keep], s[keep]))
    close(M.f1_score(y, p, average="macro", sample_weight=keep.astype(float)), sk.f1_score(y[keep], p[keep], average="macro"))
    # vmap over a leading axis == loop
    ys = jnp.asarray(np.stack([make_case(k)[0] for k in range(3)]))
    ss = jnp.asarray(np.stack([make_case(k)[1] for k in range(3)]))
    vm = np.asarray(jax.vmap(lambda a, b: M.average_precision(a, b))(ys, ss))
    np.testing.assert_allclose(vm, [float(M.average_precision(ys[k], ss[k])) for k in range(3)], rtol=1e-12)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: M.hamming_loss(np.zeros(3), np.zeros(3)), ValueError, r"`y_true` must be a 2-D multi-hot array"),
        (lambda: M.f1_score(np.zeros((2, 3)), np.zeros((2, 4))), ValueError, r"`y_pred` must have the shape of `y_true` \(2, 3\)"),
        (lambda: M.f1_score(np.zeros((2, 3)), np.zeros((2, 3)), average="binary"), ValueError, "`average` must be one of"),
        (lambda: M.f1_score(np.zeros((2, 3)), np.zeros((2, 3)), zero_division=2), ValueError, "`zero_division`"),
        (lambda: M.average_precision(np.full((2, 3), 2), np.zeros((2, 3))), ValueError, "`y_true` must hold only 0 and 1"),
        (lambda: M.coverage_error(np.zeros((2, 3)), np.zeros((3, 3))), ValueError, "`y_score` must have the shape"),
        (lambda: M.one_error(np.zeros((2, 3)), np.zeros((2, 3)), sample_weight=np.ones(3)), ValueError, r"`sample_weight` must have shape \(2,\)"),
        (lambda: M.label_ranking_loss(np.zeros((2, 3)), np.array([["a"] * 3] * 2)), TypeError, "`y_score` must be a float"),
    ],
)
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402


@jax.jit
def _all_scores(y, s):
    return jnp.stack([
        M.average_precision(y, s), M.average_precision(y, s, average="micro"), M.average_precision(y, s, average="samples"),
        M.label_ranking_average_precision(y, s), M.coverage_error(y, s), M.label_ranking_loss(y, s),
        M.f1_score(y, (s > 1).astype(jnp.int32), average="macro"), M.f1_score(y, (s > 1).astype(jnp.int32), average="samples"),
    ])


@settings(max_examples=20, deadline=None)
@given(hnp.arrays(np.int32, SHAPE, elements=st.integers(0, 1)), hnp.arrays(np.int32, SHAPE, elements=st.integers(0, 3)))
def test_property_vs_sklearn_with_ties(y, s):
    s = s.astype(np.float64)
    got = np.asarray(_all_scores(jnp.asarray(y), jnp.asarray(s)))
    p = (s > 1).astype(int)
    want = [
        sk.average_precision_score(y, s), sk.average_precision_score(y, s, average="micro"),
        sk.average_precision_score(y, s, average="samples"), sk.label_ranking_average_precision_score(y, s),
        sk.coverage_error(y, s), sk.label_ranking_loss(y, s),
        sk.f1_score(y, p, average="macro", zero_division=0), sk.f1_score(y, p, average="samples", zero_division=0),
    ]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
