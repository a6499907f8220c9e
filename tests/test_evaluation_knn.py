"""The streaming exact kNN search: equal to a brute-force sort (ties by index) for every distance
and shape path, bounded memory whatever N_ref, no sort in the compiled search, sharded over
devices with the values of one device, and parity with faiss / PML's default faiss kNN."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

import jaxmetric as jm
from jaxmetric import evaluation as ev

L2SQ = ev.DEFAULT_KNN_DISTANCE


def brute_force(q, r, distance, k, exclude_self):
    """Indices by (distance, index): numpy's stable argsort of the distance matrix."""
    q, r = np.asarray(q, np.float64), np.asarray(r, np.float64)
    if distance.normalize_embeddings:
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        r = r / np.linalg.norm(r, axis=1, keepdims=True)
    if isinstance(distance, jm.DotProductSimilarity):
        d = -(q @ r.T)
    else:
        d = ((q[:, None] - r[None]) ** 2).sum(-1)
    if exclude_self:
        d[np.arange(len(q)), np.arange(len(q))] = np.inf
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


@pytest.fixture
def small_steps(monkeypatch):
    """Tiles of 16 references, 3 per merge: the multi-step, tail and multi-tile-tail paths on
    small data."""
    monkeypatch.setattr(ev, "_SEARCH_TILE", 16)
    monkeypatch.setattr(ev, "_SEARCH_TILES", 3)


@pytest.mark.parametrize(
    "nq, nr, k",
    [(30, 48, 5), (37, 48 + 16 + 5, 9), (20, 48 * 2 + 40, 12), (9, 7, 3)],
    ids=["whole-steps", "short-tail", "multi-tile-tail", "tiny"],
)
@pytest.mark.parametrize("exclude_self", [False, True])
def test_knn_equals_brute_force_on_every_shape_path(small_steps, nq, nr, k, exclude_self):
    rng = np.random.default_rng(nq + nr)
    r = rng.normal(size=(nr, 5)).astype(np.float32)
    q = r[:nq] if exclude_self else rng.normal(size=(nq, 5)).astype(np.float32)
    idx, dist = ev.knn(q, r, k=k, exclude_self=exclude_self, block_size=8)
    order, d = brute_force(q, r, L2SQ, k, exclude_self)
    np.testing.assert_array_equal(np.asarray(idx), order)
    np.testing.assert_allclose(np.asarray(dist), d, rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(np.asarray(dist), axis=1) >= 0)


@pytest.mark.parametrize(
    "distance",
    [jm.LpDistance(normalize_embeddings=False, power=2), jm.LpDistance(), jm.CosineSimilarity(),
     jm.DotProductSimilarity(normalize_embeddings=False), jm.SNRDistance()],
    ids=["l2sq", "l2-normalised", "cosine", "dot", "snr-generic"],
)
def test_knn_ranks_as_the_distance_does(small_steps, distance):
    rng = np.random.default_rng(1)
    r = rng.normal(size=(70, 6)).astype(np.float32)
    q = rng.normal(size=(25, 6)).astype(np.float32)
    idx, dist = ev.knn(q, r, k=7, distance=distance)
    full = np.asarray(distance(jnp.asarray(q), jnp.asarray(r)))
    order = np.argsort(-full if distance.is_inverted else full, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(np.asarray(idx), order)
    np.testing.assert_allclose(np.asarray(dist), np.take_along_axis(full, order, 1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k", [1, 6, 40])
def test_ties_go_to_the_lower_index(small_steps, k):
    """Integer embeddings with duplicates: many exactly equal distances, also at the k-th place
    and for the query itself (self excluded by index, its duplicates kept)."""
    rng = np.random.default_rng(2)
    r = rng.integers(0, 3, size=(90, 3)).astype(np.float32)
    for exclude_self in (False, True):
        idx, _ = ev.knn(r[:40], r, k=k, exclude_self=exclude_self, block_size=16)
        order, _ = brute_force(r[:40], r, L2SQ, k, exclude_self)
        np.testing.assert_array_equal(np.asarray(idx), order)


def test_tie_check_sends_a_misordered_fast_selection_to_the_index_order_path():
    """Group 1's maximum (5, index 4) ties with a non-maximum of group 0 (5, index 1): the fast
    layout (maxima first) would return index 4 second; the index rule wants index 1."""
    values = jnp.array([[[6.0, 5.0, 0.0, 0.0], [5.0, 2.0, 0.0, 0.0]]])
    ids = jnp.array([[0, 1]], jnp.int32)
    top, idx = ev._select_from_groups(jnp.max(values, axis=2), values, ids, kk=2, valid=jnp.array([True]))
    np.testing.assert_array_equal(np.asarray(idx), [[0, 1]])
    np.testing.assert_array_equal(np.asarray(top), [[6.0, 5.0]])
    # The same tie on a padding row (valid=False) does not matter: the fast answer is kept.
    _, idx = ev._select_from_groups(jnp.max(values, axis=2), values, ids, kk=2, valid=jnp.array([False]))
    np.testing.assert_array_equal(np.asarray(idx), [[0, 4]])


def test_float64_inputs_search_in_float64():
    rng = np.random.default_rng(3)
    r = rng.normal(size=(40, 4))
    _, dist = ev.knn(r, r, k=3, exclude_self=True)
    assert dist.dtype == jnp.float64
    _, d = brute_force(r, r, L2SQ, 3, True)
    np.testing.assert_allclose(np.asarray(dist), d, rtol=1e-9)


def _compiled_text(n_ref, k=128):
    q = jnp.zeros((512, 128), jnp.float32)
    r = jnp.zeros((n_ref, 128), jnp.float32)
    shape = ev._search_shape(512, n_ref, k + 1)
    return ev._knn.lower(q, r, k=k, distance=L2SQ, exclude_self=True, shape=shape, axis_name=None).compile()


def test_the_compiled_search_has_no_sort():
    """XLA:CPU turns top_k into a full sort of each row when a consumer is merged into its slice
    (10x slower); the search must keep TopK calls only."""
    text = _compiled_text(70_000).as_text()
    assert " sort(" not in text
    assert text.count("TopK") >= 3


def test_memory_does_not_grow_with_the_reference_set():
    """Temporary memory of the compiled search is the same for 64k and 256k references (the
    reference itself is an argument, the [block, N_ref] matrix never exists)."""

    def temp_bytes(n_ref):
        analysis = _compiled_text(n_ref).memory_analysis()
        if analysis is None:
            pytest.skip("this backend gives no memory analysis")
        return analysis.temp_size_in_bytes

    small, large = temp_bytes(1 << 16), temp_bytes(1 << 18)
    assert large <= small * 1.05 + (1 << 20), (small, large)
    assert large < 512 * (1 << 18) * 4 / 8  # far below one [block, N_ref] float32 matrix


def test_get_accuracy_streaming_and_sorting_searches_agree(monkeypatch):
    rng = np.random.default_rng(4)
    q, r = rng.normal(size=(60, 5)), rng.normal(size=(90, 5))
    ql, rl = rng.integers(0, 6, 60), rng.integers(0, 6, 90)
    opts = dict(exclude=("NMI", "AMI"), k=8, recall_ks=(1, 3))
    for args, kw in (((q, ql), {}), ((q, ql, r, rl), {}), ((q, ql, np.concatenate([q, r]), np.concatenate([ql, rl])), {"ref_includes_query": True})):
        monkeypatch.setattr(ev, "_STREAMING_SHARE", 1)  # always stream
        streaming = ev.get_accuracy(*args, **kw, **opts)
        monkeypatch.setattr(ev, "_STREAMING_SHARE", 10**9)  # always sort whole rows
        dense = ev.get_accuracy(*args, **kw, **opts)
        assert streaming == pytest.approx(dense, rel=1e-12)


def test_progress_is_reported_after_each_call_and_calls_do_not_change_values(monkeypatch):
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(200, 4)).astype(np.float32), rng.integers(0, 8, 200)
    opts = dict(include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count", block_size=16)
    one_call = ev.get_accuracy(x, y, **opts)
    monkeypatch.setattr(ev, "_PAIRS_PER_CALL", 16 * 200 * 3)  # 3 blocks of 16 queries per call
    seen = []
    several = ev.get_accuracy(x, y, progress=lambda done, total: seen.append((done, total)), **opts)
    assert several == one_call
    assert [t for _, t in seen] == [200] * len(seen) and len(seen) == 5
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1][0] == 200


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda q: ev.get_accuracy(q, np.arange(20) % 3, mesh="cpu"), "`mesh` must be None or a jax.sharding.Mesh"),
        (lambda q: ev.get_accuracy(q, np.arange(20) % 3, progress=3), "`progress` must be None or a callable"),
        (lambda q: ev.knn(q, q, k=20, exclude_self=True), r"`k` must be an int in \[1, 19\]"),
        (lambda q: ev.knn(q, q[:5], k=2, exclude_self=True), "`exclude_self` needs the queries"),
        (lambda q: ev.knn(q, q, k=2, block_size=0), "`block_size` must be None or an int >= 1"),
        (lambda q: ev.knn(q, q[:, :2], k=2), "`reference` must have dim 4"),
    ],
)
def test_new_argument_errors_name_the_argument(call, match):
    q = np.random.default_rng(6).normal(size=(20, 4)).astype(np.float32)
    with pytest.raises((ValueError, TypeError), match=match):
        call(q)


def test_mesh_with_faiss_backend_is_refused():
    mesh = Mesh(np.array(jax.devices()[:1]), ("d",))
    q = np.random.default_rng(7).normal(size=(20, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="knn_backend='faiss' with a mesh"):
        ev.get_accuracy(q, np.arange(20) % 3, mesh=mesh, knn_backend="faiss", exclude=("NMI", "AMI"))


# ------------------------------------------------------------------ sharded over devices
NDEV = 8


@pytest.fixture(scope="module")
def mesh():
    if len(jax.devices()) < NDEV:
        pytest.skip(f"needs {NDEV} devices (tests/conftest.py simulates 8 CPU devices)")
    return Mesh(np.array(jax.devices()[:NDEV]), ("d",))


@pytest.mark.parametrize("k", [None, "max_bin_count", 5])
def test_sharded_get_accuracy_equals_one_device(mesh, small_steps, k):
    """Reference sizes not divisible by 8 (padding rows), self and separate reference sets,
    cosine ranking, multi-hot labels; k=None searches 99 of 101 references per query."""
    rng = np.random.default_rng(8)
    q, r = rng.normal(size=(45, 6)).astype(np.float32), rng.normal(size=(101, 6)).astype(np.float32)
    ql, rl = rng.integers(0, 7, 45), rng.integers(0, 7, 101)
    mh_q, mh_r = (rng.random((45, 4)) < 0.3).astype(np.int32), (rng.random((101, 4)) < 0.3).astype(np.int32)
    cases = [
        ((r, rl), {}),
        ((q, ql, r, rl), {}),
        ((q, ql, r, rl), {"distance": jm.CosineSimilarity()}),
        ((q, mh_q, r, mh_r), {}),
    ]
    for args, kw in cases:
        opts = dict(exclude=("NMI", "AMI"), k=k, recall_ks=(1, 4), **kw)
        assert ev.get_accuracy(*args, mesh=mesh, **opts) == pytest.approx(ev.get_accuracy(*args, **opts), rel=1e-12)


def test_sharded_over_a_two_axis_mesh(small_steps):
    if len(jax.devices()) < 4:
        pytest.skip("needs 4 devices")
    mesh2 = Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("a", "b"))
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(83, 5)).astype(np.float32), rng.integers(0, 5, 83)
    opts = dict(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"), k="max_bin_count")
    assert ev.get_accuracy(x, y, mesh=mesh2, **opts) == pytest.approx(ev.get_accuracy(x, y, **opts), rel=1e-12)


def test_knn_under_shard_map_merges_the_device_lists(mesh, small_steps):
    rng = np.random.default_rng(10)
    r = jnp.asarray(rng.integers(0, 4, size=(NDEV * 13, 3)).astype(np.float32))  # ties across shards
    f = jax.jit(jax.shard_map(lambda q, rs: ev.knn(q, rs, k=6, exclude_self=True, axis_name="d"),
                              mesh=mesh, in_specs=(P(), P("d")), out_specs=P()))
    idx, _ = f(r[:30], r)
    order, _ = brute_force(r[:30], r, L2SQ, 6, True)
    np.testing.assert_array_equal(np.asarray(idx), order)


# ---------------------------------------------------------------------------- faiss
@pytest.mark.pml
def test_faiss_backend_and_pml_default_faiss_knn_match():
    """With faiss installed (the pml extra): PML's own default AccuracyCalculator (FaissKNN),
    jaxmetric's jax search and its faiss backend give the same values."""
    faiss = pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install faiss-cpu, or the pml extra)")
    torch = pytest.importorskip("torch")
    pml_acc = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    assert faiss.IndexFlatL2  # the real module, not a stand-in
    rng = np.random.default_rng(11)
    centers = rng.normal(size=(30, 16))
    y = rng.integers(0, 30, 900)
    x = (centers[y] + 0.8 * rng.normal(size=(900, 16))).astype(np.float32)
    include = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
    for k in ("max_bin_count", 10):
        expected = pml_acc.AccuracyCalculator(include=include, k=k, device=torch.device("cpu")).get_accuracy(
            torch.from_numpy(x), torch.from_numpy(y)
        )
        for backend in ("jax", "faiss"):
            ours = ev.get_accuracy(x, y, include=include, k=k, knn_backend=backend)
            assert ours == pytest.approx(expected, rel=1e-5), (k, backend)
