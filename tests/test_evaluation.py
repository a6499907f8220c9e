"""Retrieval metrics: PML AccuracyCalculator parity, blockwise kNN, memory bound, options, errors."""
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from jaxmetric import evaluation as ev

torch = pytest.importorskip("torch")
pml_acc = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
pml_inference = pytest.importorskip("pytorch_metric_learning.utils.inference")
pml_distances = pytest.importorskip("pytorch_metric_learning.distances")
KMeans = pytest.importorskip("sklearn.cluster").KMeans


def kmeans(x, n):
    return KMeans(n_clusters=n, n_init="auto", random_state=0).fit_predict(np.asarray(x, np.float64))


def pml_kmeans(x, n):
    return torch.tensor(kmeans(x.cpu().numpy(), n))


def pml_calc(distance=None, **kw):
    distance = distance or pml_distances.LpDistance(normalize_embeddings=False)
    return pml_acc.AccuracyCalculator(
        knn_func=pml_inference.CustomKNN(distance), kmeans_func=pml_kmeans, device=torch.device("cpu"), **kw
    )


def assert_same(pml_out, ours, rtol=1e-6):
    assert list(pml_out) == [k for k in ours if not k.startswith("recall_at_")]
    for key, value in pml_out.items():
        np.testing.assert_allclose(np.asarray(ours[key], float), np.asarray(value, float), rtol=rtol, atol=1e-12, err_msg=key)


def data(seed=0, nq=40, nr=60, dim=6, classes=7):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(nq, dim)).astype(np.float32)
    r = rng.normal(size=(nr, dim)).astype(np.float32)
    return q, rng.integers(0, classes, nq), r, rng.integers(0, classes + 2, nr)


SETS = ["self", "separate", "ref_includes_query"]


def args_for(which, q, ql, r, rl):
    if which == "self":
        return (q, ql), False
    if which == "separate":
        return (q, ql, r, rl), False
    return (q, ql, np.concatenate([q, r]), np.concatenate([ql, rl])), True


def shares_a_label(a, b):
    """Multi-hot relevance written once for both libraries (torch and jnp broadcast alike)."""
    return (a * b).sum(-1) > 0


@pytest.mark.pml
@pytest.mark.parametrize(
    "opts",
    [{}, {"avg_of_avgs": True}, {"return_per_class": True}, {"k": "max_bin_count"}, {"k": 5}, {"k": 9, "avg_of_avgs": True}],
    ids=["default", "avg_of_avgs", "per_class", "max_bin_count", "k5", "k9_avg"],
)
def test_matches_pml_accuracy_calculator(opts):
    q, ql, r, rl = data(seed=0)
    for which in SETS:
        args, ref_includes_query = args_for(which, q, ql, r, rl)
        expected = pml_calc(**opts).get_accuracy(*args, ref_includes_query=ref_includes_query)
        ours = ev.get_accuracy(*args, ref_includes_query=ref_includes_query, kmeans_func=kmeans, **opts)
        assert_same(expected, ours)
        assert set(expected) == set(ev.PML_METRICS)
        # The object form gives the same.
        calc = ev.AccuracyCalculator(kmeans_func=kmeans, **opts)
        assert_same(expected, calc.get_accuracy(*args, ref_includes_query=ref_includes_query))


@pytest.mark.pml
@pytest.mark.parametrize(
    "opts, sets", [({}, SETS), ({"k": 4, "avg_of_avgs": True}, ["separate"])], ids=["default", "k4_avg"]
)
def test_multi_hot_matches_pml_with_shared_label_rule(opts, sets):
    rng = np.random.default_rng(3)
    q, _, r, _ = data(seed=4)
    ql = (rng.random((len(q), 5)) < 0.25).astype(np.int64)
    rl = (rng.random((len(r), 5)) < 0.25).astype(np.int64)
    for which in sets:
        args, ref_includes_query = args_for(which, q, ql, r, rl)
        calc = pml_calc(pml_distances.CosineSimilarity(), exclude=("NMI", "AMI"), label_comparison_fn=shares_a_label, **opts)
        expected = calc.get_accuracy(*args, ref_includes_query=ref_includes_query)
        kw = dict(ref_includes_query=ref_includes_query, exclude=("NMI", "AMI"), distance=jm.CosineSimilarity(), **opts)
        assert_same(expected, ev.get_accuracy(*args, **kw))  # built-in rule for [N, C] labels
        if which == sets[-1]:  # the same rule passed explicitly, PML style
            assert_same(expected, ev.get_accuracy(*args, label_comparison_fn=shares_a_label, **kw))


@pytest.mark.pml
def test_lone_queries_and_all_lone_match_pml():
    rng = np.random.default_rng(5)
    q, r = rng.normal(size=(30, 4)), rng.normal(size=(50, 4))
    ql, rl = rng.integers(0, 9, 30), rng.integers(0, 5, 50)  # classes 5..8 are lone
    for opts in ({}, {"avg_of_avgs": True}, {"return_per_class": True}):
        calc = pml_calc(exclude=("NMI", "AMI"), **opts)
        assert_same(calc.get_accuracy(q, ql, r, rl), ev.get_accuracy(q, ql, r, rl, exclude=("NMI", "AMI"), **opts))
        out = ev.get_accuracy(q, ql + 100, r, rl, exclude=("NMI", "AMI"), **opts)
        assert_same(calc.get_accuracy(q, ql + 100, r, rl), out)
    # A class with one member is lone against itself.
    ql1 = np.arange(30) % 10
    ql1[0] = 99
    assert_same(pml_calc(exclude=("NMI", "AMI")).get_accuracy(q, ql1), ev.get_accuracy(q, ql1, exclude=("NMI", "AMI")))


@pytest.mark.pml
def test_cosine_ranking_and_include_subset_match_pml():
    q, ql, r, rl = data(seed=7)
    # (PML cannot compute mean_reciprocal_rank alone: it is missing from its requires_knn().)
    chosen = ("mean_reciprocal_rank", "precision_at_1", "r_precision")
    calc = pml_calc(pml_distances.CosineSimilarity(), include=chosen)
    ours = ev.AccuracyCalculator(include=chosen, distance=jm.CosineSimilarity())
    assert_same(calc.get_accuracy(q, ql, r, rl), ours.get_accuracy(q, ql, r, rl))
    # Per-call include/exclude select among the constructor's metrics, as in PML.
    assert_same(calc.get_accuracy(q, ql, r, rl, exclude=("precision_at_1",)), ours.get_accuracy(q, ql, r, rl, exclude=("precision_at_1",)))


def brute_force(q, ql, r, rl, exclude_self, k):
    d = ((q[:, None] - r[None]) ** 2).sum(-1)
    if exclude_self:
        np.fill_diagonal(d[:, : len(q)], np.inf)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    rel = rl[order] == ql[:, None]
    counts = (ql[:, None] == rl[None]).sum(1) - int(exclude_self)
    return order, rel, counts


def test_recall_at_k_is_the_hit_rate_and_p_at_1_equals_recall_at_1():
    q, ql, r, rl = data(seed=8, nq=50, nr=70)
    _, rel, counts = brute_force(q, ql, r, rl, False, 8)
    keep = counts > 0
    out = ev.get_accuracy(q, ql, r, rl, include=("recall_at_k", "precision_at_1"), recall_ks=(1, 3, 8))
    assert list(out) == ["precision_at_1", "recall_at_1", "recall_at_3", "recall_at_8"]
    for kk in (1, 3, 8):
        np.testing.assert_allclose(out[f"recall_at_{kk}"], rel[keep, :kk].any(1).mean(), rtol=1e-6)
    assert out["recall_at_1"] == pytest.approx(out["precision_at_1"])
    assert ev.recall_at_k(q, ql, r, rl, k=3) == pytest.approx(out["recall_at_3"])
    assert ev.recall_at_k(q, ql, r, rl, k=(1, 8)) == {"recall_at_1": out["recall_at_1"], "recall_at_8": out["recall_at_8"]}


def test_one_metric_functions_and_retrieval_metrics_agree_with_get_accuracy():
    q, ql, _, _ = data(seed=9)
    full = ev.get_accuracy(q, ql, exclude=("NMI", "AMI"))
    for name in ("precision_at_1", "r_precision", "mean_average_precision_at_r", "mean_average_precision", "mean_reciprocal_rank"):
        assert getattr(ev, name)(q, ql) == pytest.approx(full[name], rel=1e-6)
    rm = ev.retrieval_metrics(q, ql)
    assert set(rm) == {"precision_at_1", "r_precision", "mean_average_precision_at_r"}
    for key, value in rm.items():
        assert value == pytest.approx(full[key], rel=1e-6)
    assert 0.0 <= ev.nmi(q, ql) <= 1.0 and -1.0 <= ev.ami(q, ql) <= 1.0


@pytest.mark.parametrize("block_size", [1, 7, 64])
def test_block_size_does_not_change_values(block_size):
    q, ql, r, rl = data(seed=10, nq=45, nr=50)
    base = ev.get_accuracy(q, ql, r, rl, exclude=("NMI", "AMI"), include=(), k=12)
    assert ev.get_accuracy(q, ql, r, rl, exclude=("NMI", "AMI"), k=12, block_size=block_size) == pytest.approx(base, rel=1e-6)


def test_jax_inputs_and_dtypes():
    q, ql, r, rl = data(seed=11)
    a = ev.get_accuracy(q, ql, r, rl, exclude=("NMI", "AMI"))
    b = ev.get_accuracy(jnp.asarray(q, jnp.bfloat16).astype(jnp.float32), jnp.asarray(ql), jnp.asarray(r), jnp.asarray(rl), exclude=("NMI", "AMI"))
    assert set(a) == set(b)


def test_knn_matches_brute_force_and_excludes_self():
    q, ql, _, _ = data(seed=12, nq=33)
    idx, dist = ev.knn(jnp.asarray(q), jnp.asarray(q), k=5, exclude_self=True, block_size=8)
    order, _, _ = brute_force(q, ql, q, ql, True, 5)
    np.testing.assert_array_equal(np.asarray(idx), order)
    assert not np.any(np.asarray(idx) == np.arange(33)[:, None])
    assert np.all(np.diff(np.asarray(dist), axis=1) >= 0)


def test_memory_is_bounded_by_the_block_not_the_full_matrix():
    """The compiled blockwise search holds O(block * N_ref), not [N_query, N_ref] (nor [N_query, k])."""
    n = 2048
    q = jnp.zeros((n, 16), jnp.float32)
    labels = jnp.zeros((n,), jnp.int32)
    full = n * n * 4

    def temp_bytes(block):
        compiled = ev._knn_metrics.lower(
            q, labels, labels, q, labels, num_cols=n - 1, kp=n - 1, recall_ks=(1, 4), distance=ev.DEFAULT_KNN_DISTANCE,
            exclude_self=True, kind="ids", fn=None, block_size=block,
        ).compile()
        analysis = compiled.memory_analysis()
        if analysis is None:
            pytest.skip("this backend gives no memory analysis")
        return analysis.temp_size_in_bytes

    small = temp_bytes(64)
    assert small < full / 4, (small, full)
    assert temp_bytes(512) > small  # memory follows the block size
    # The default block keeps one [block, N_ref] matrix near 2**25 elements: at 100k x 100k
    # that is a block of 335 queries.
    assert ev._BLOCK_ELEMENTS // 100_000 == 335


def test_faiss_path_with_a_stand_in_module(monkeypatch):
    """faiss is optional: the path builds a flat index and removes self as PML does."""

    class Flat:
        def __init__(self, dim, ip=False):
            self.ip, self.data = ip, np.zeros((0, dim), np.float32)

        def add(self, x):
            self.data = np.concatenate([self.data, x])

        def search(self, x, k):
            s = x @ self.data.T if self.ip else -((x[:, None] - self.data[None]) ** 2).sum(-1)
            idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
            return -np.take_along_axis(s, idx, 1), idx

    fake = types.SimpleNamespace(IndexFlatL2=lambda d: Flat(d), IndexFlatIP=lambda d: Flat(d, ip=True))
    monkeypatch.setitem(sys.modules, "faiss", fake)
    q, ql, r, rl = data(seed=13)
    for args in ((q, ql), (q, ql, r, rl)):
        for dist in (ev.DEFAULT_KNN_DISTANCE, jm.CosineSimilarity()):
            kw = dict(exclude=("NMI", "AMI"), include=(), distance=dist)
            a = ev.get_accuracy(*args, knn_backend="faiss", **kw)
            b = ev.get_accuracy(*args, **kw)
            assert a == pytest.approx(b, rel=1e-6)
    with pytest.raises(ValueError, match="distance"):
        ev.get_accuracy(q, ql, knn_backend="faiss", exclude=("NMI", "AMI"), distance=jm.SNRDistance())


def test_missing_scikit_learn_gives_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.cluster", None)
    q, ql, _, _ = data(seed=14)
    with pytest.raises(ImportError, match="scikit-learn"):
        ev.get_accuracy(q, ql, include=("NMI",))
    ev.get_accuracy(q, ql, exclude=("NMI", "AMI"))  # the kNN metrics never need it


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"include": "precision_at_1"}, TypeError, "include"),
        ({"include": ("precision_at_2",)}, ValueError, "include"),
        ({"exclude": ("nope",)}, ValueError, "exclude"),
        ({"avg_of_avgs": True, "return_per_class": True}, ValueError, "mutually exclusive"),
        ({"k": 0}, ValueError, "`k`"),
        ({"k": "all"}, ValueError, "`k`"),
        ({"k": 40}, ValueError, "`k` must select between 1 and 39"),
        ({"knn_backend": "annoy"}, ValueError, "knn_backend"),
        ({"recall_ks": (0,), "include": ("recall_at_k",)}, ValueError, "recall_ks"),
        ({"distance": "cosine"}, TypeError, "distance"),
    ],
)
def test_argument_errors_name_the_argument(kwargs, err, match):
    q, ql, _, _ = data(seed=15)
    with pytest.raises(err, match=match):
        ev.get_accuracy(q, ql, **{"exclude": ("NMI", "AMI"), **kwargs})


def test_input_errors():
    q, ql, r, rl = data(seed=16)
    with pytest.raises(ValueError, match="query_labels"):
        ev.get_accuracy(q, ql[:-1])
    with pytest.raises(ValueError, match="`query`"):
        ev.get_accuracy(q[0], ql)
    with pytest.raises(TypeError, match="query_labels"):
        ev.get_accuracy(q, ql.astype(np.float32))
    with pytest.raises(ValueError, match="reference_labels"):
        ev.get_accuracy(q, ql, r, None)
    with pytest.raises(ValueError, match="ref_includes_query"):
        ev.get_accuracy(q, ql, r, rl, ref_includes_query=True)
    with pytest.raises(ValueError, match="NMI and AMI"):
        ev.get_accuracy(q, (np.random.default_rng(0).random((40, 3)) < 0.5).astype(int))
    with pytest.raises(ValueError, match="label_comparison_fn"):
        ev.AccuracyCalculator(label_comparison_fn=lambda a, b: a == b)
