"""Distances, masks, reductions, input errors and transformation properties of the core."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from tests.pml_utils import assert_close, pml_distances, pml_losses, pml_reducers, pml_value_and_grads, torch

LOSSES = [jm.contrastive_loss, jm.triplet_margin_loss, jm.multi_similarity_loss, jm.circle_loss, jm.ntxent_loss, jm.supcon_loss]
LOSS_IDS = [f.__name__ for f in LOSSES]


def _batch(seed=0, b=16, dim=8, classes=4, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(b, dim)).astype(dtype)), jnp.asarray(rng.integers(0, classes, b))


# ---------------------------------------------------------------- distances (PML parity)
DISTANCES = [
    (lambda: pml_distances.LpDistance(), jm.LpDistance()),
    (lambda: pml_distances.LpDistance(power=2), jm.LpDistance(power=2)),
    (lambda: pml_distances.LpDistance(p=1, normalize_embeddings=False), jm.LpDistance(p=1, normalize_embeddings=False)),
    (lambda: pml_distances.LpDistance(p=3, power=0.5), jm.LpDistance(p=3, power=0.5)),
    (lambda: pml_distances.LpDistance(normalize_embeddings=False, power=3), jm.LpDistance(normalize_embeddings=False, power=3)),
    (lambda: pml_distances.CosineSimilarity(), jm.CosineSimilarity()),
    (lambda: pml_distances.DotProductSimilarity(), jm.DotProductSimilarity()),
    (lambda: pml_distances.DotProductSimilarity(normalize_embeddings=False), jm.DotProductSimilarity(normalize_embeddings=False)),
    (lambda: pml_distances.SNRDistance(), jm.SNRDistance()),
    (lambda: pml_distances.SNRDistance(normalize_embeddings=False, power=2), jm.SNRDistance(normalize_embeddings=False, power=2)),
]


@pytest.mark.pml
@pytest.mark.parametrize("pair", DISTANCES, ids=[repr(d[1]) for d in DISTANCES])
def test_distance_matches_pml(pair):
    ctor, dist = pair
    rng = np.random.default_rng(1)
    q, r = rng.normal(size=(7, 5)), rng.normal(size=(9, 5))
    cot = rng.normal(size=(7, 9))
    tq, tr = torch.tensor(q, requires_grad=True), torch.tensor(r, requires_grad=True)
    pd = ctor()
    mat = pd(tq, tr)
    (mat * torch.tensor(cot)).sum().backward()
    jmat, vjp = jax.vjp(lambda a, b: dist(a, b), jnp.asarray(q), jnp.asarray(r))
    gq, gr = vjp(jnp.asarray(cot))
    assert_close(jmat, mat.detach().numpy())
    assert_close(gq, tq.grad.numpy())
    assert_close(gr, tr.grad.numpy())
    assert dist.is_inverted == pd.is_inverted
    # Row-wise form equals the diagonal of the matrix.
    assert_close(dist.pairwise(jnp.asarray(q), jnp.asarray(r[:7])), np.diag(np.asarray(dist(jnp.asarray(q), jnp.asarray(r[:7])))))


@pytest.mark.parametrize("dist", [d[1] for d in DISTANCES], ids=[repr(d[1]) for d in DISTANCES])
def test_distance_gradients_finite_at_zero_and_duplicates(dist):
    x = jnp.asarray(np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))
    g = jax.grad(lambda a: jnp.sum(dist(a, a)))(x)
    assert np.all(np.isfinite(g))


def test_distances_are_static_hashable():
    assert hash(jm.LpDistance()) == hash(jm.LpDistance())
    with pytest.raises(ValueError, match="normalize_embeddings"):
        jm.CosineSimilarity(normalize_embeddings=False)


# ---------------------------------------------------------------- masks
def test_pair_mask_class_ids_and_multi_hot():
    y = jnp.array([0, 0, 1, 2])
    m = jm.pair_mask(y)
    assert m.pos.dtype == jnp.bool_
    np.testing.assert_array_equal(m.pos, [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(m.neg, [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]])
    mh = jnp.array([[1, 0, 1], [0, 0, 1], [0, 1, 0], [0, 0, 0]])
    m = jm.pair_mask(mh)
    np.testing.assert_array_equal(m.pos, [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(m.neg, [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]])
    # With a reference set the diagonal is kept (PML: the reference is another set).
    m = jm.pair_mask(y, y)
    assert bool(m.pos[0, 0])
    m = jm.pair_mask(y, where=jnp.array([True, False, True, True]))
    assert not m.pos[0, 1] and not m.neg[1, 2]


def test_multi_hot_equals_class_ids_for_one_hot():
    emb, y = _batch(2)
    onehot = jax.nn.one_hot(y, 4, dtype=jnp.int32)
    for fn in LOSSES:
        assert_close(fn(emb, onehot), fn(emb, y), what=fn.__name__)


def test_from_indices_padding_under_jit():
    a = jnp.array([0, 1, -1, -1])
    p = jnp.array([1, 0, -1, -1])
    m = jax.jit(lambda t: jm.from_indices(t, 4))((a, p, a, jnp.array([2, 3, -1, -1])))
    assert float(m.pos.sum()) == 2 and float(m.neg.sum()) == 2
    t = jm.from_indices((jnp.array([0, 0, -1]), jnp.array([1, 1, -1]), jnp.array([2, 2, -1])), 3)
    assert isinstance(t, jm.TripletMask) and float(t.weights[0, 1, 2]) == 2
    pairs = t.to_pairs()
    assert float(pairs.pos[0, 1]) == 2 and float(pairs.neg[0, 2]) == 2


def test_from_indices_refuses_out_of_range_and_negative_indices():
    a, p, n = jnp.array([0, 1]), jnp.array([1, 2]), jnp.array([2, 3])
    for bad, pos in ((16, 1), (99, 0), (-2, 1)):
        with pytest.raises(ValueError, match=rf"from_indices: `p` must hold indices in \[0, 16\) or -1 \(padding\); got {bad} .*batch_size = 16"):
            jm.from_indices((a, p.at[pos].set(bad), a, n), 16)
        with pytest.raises(ValueError, match=rf"`n` .*got {bad} at position {pos} \(batch_size = 16\)"):
            jm.from_indices((a, p, n.at[pos].set(bad)), 16)
        with pytest.raises(ValueError, match=rf"`a2` .*got {bad} at position {pos} \(batch_size = 16\)"):
            jm.from_indices((a, p, a.at[pos].set(bad), n), 16)
    # positives and negatives index the references
    with pytest.raises(ValueError, match=r"`p` .*\[0, 5\).*got 5 .*num_refs = 5"):
        jm.from_indices((a, jnp.array([1, 5]), a, n), 16, 5)
    # concatenated pairs: len(x1) instead of 2B is refused, not a zero loss
    x1 = jnp.zeros((4, 3))
    pairs = (jnp.arange(4), jnp.arange(4) + 4, jnp.arange(4), (jnp.arange(4) + 5) % 8)
    with pytest.raises(ValueError, match=r"got 4 at position 0 \(batch_size = 4\)"):
        jm.from_indices(pairs, len(x1))
    assert float(jm.from_indices(pairs, 2 * len(x1)).pos.sum()) == 4


def test_from_indices_refuses_unequal_lengths():
    a = jnp.array([0, 1, 2])
    with pytest.raises(ValueError, match=r"`p` must have the length of `a1` \(3"):
        jm.from_indices((a, a[:2], a, a), 4)
    with pytest.raises(ValueError, match=r"`n` must have the length of `a2` \(3"):
        jm.from_indices((a, a, a, a[:1]), 4)
    with pytest.raises(ValueError, match=r"`n` must have the length of `a` \(3"):
        jm.from_indices((a, a, a[:2]), 4)


def test_from_indices_traced_out_of_range_is_nan_and_checkified():
    from jax.experimental import checkify

    emb = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)

    def step(e, a, p, n):
        return jm.triplet_margin_loss(e, jm.from_indices((a, p, n), 4))

    good = (jnp.array([0, 1]), jnp.array([1, 0]), jnp.array([2, 3]))
    bad = (jnp.array([0, 1]), jnp.array([1, 9]), jnp.array([2, 3]))
    assert np.isfinite(float(jax.jit(step)(emb, *good)))
    assert np.isnan(float(jax.jit(step)(emb, *bad)))
    checked = jax.jit(jm.checkify_finite(step))
    err, value = checked(emb, *good)
    assert err.get() is None and np.isfinite(float(value))
    err, _ = checked(emb, *bad)
    assert "from_indices: `p` must hold indices in [0, 4) or -1 (padding); got 9 at position 1 (batch_size = 4)" in err.get()
    with pytest.raises(checkify.JaxRuntimeError):
        err.throw()
    # padding (-1) stays valid under jit
    pad = (jnp.array([0, -1]), jnp.array([1, -1]), jnp.array([2, -1]))
    err, value = checked(emb, *pad)
    assert err.get() is None and np.isfinite(float(value))


def test_from_indices_takes_torch_numpy_and_list_indices():
    torch = pytest.importorskip("torch")
    tup = ([0, 1, 2], [1, 0, 3], [0, 2, 2], [2, 3, 1])
    want = jm.from_indices(tuple(jnp.asarray(t) for t in tup), 4)
    for kind in (lambda t: torch.tensor(t), np.asarray, list):
        got = jm.from_indices(tuple(kind(t) for t in tup), 4)
        np.testing.assert_array_equal(got.pos, want.pos)
        np.testing.assert_array_equal(got.neg, want.neg)
    got = jax.jit(lambda: jm.from_indices(tuple(torch.tensor(t) for t in tup), 4))()
    np.testing.assert_array_equal(got.pos, want.pos)


def test_an_index_tuple_in_the_labels_slot_points_to_from_indices():
    emb = jnp.zeros((16, 3))
    tup = (jnp.array([0, 1]), jnp.array([2, 3]), jnp.array([4, 5]))
    for fn in (jm.circle_loss, jm.contrastive_loss, jm.batch_hard_miner):
        with pytest.raises(TypeError, match=r"`labels` must be labels, not a PML indices_tuple.*jaxmetric.from_indices\(indices_tuple, 16\)"):
            fn(emb, tup)
        with pytest.raises(TypeError, match=r"from_indices"):
            fn(emb, list(tup) + [jnp.array([6, 7])])
    # PML's third positional argument
    with pytest.raises(TypeError, match=r"circle_loss\(embeddings, miner\(embeddings, labels\)\)"):
        jm.circle_loss(emb, jnp.zeros(16, jnp.int32), jm.from_indices(tup, 16))


def test_masks_are_pytrees():
    m = jm.pair_mask(jnp.array([0, 0, 1]))
    leaves, tree = jax.tree_util.tree_flatten(m)
    assert len(leaves) == 2
    out = jax.jit(lambda mm: jm.PairMask(mm.pos, mm.neg))(m)
    np.testing.assert_array_equal(out.pos, m.pos)


# ---------------------------------------------------------------- reductions (PML reducers)
@pytest.mark.pml
@pytest.mark.parametrize(
    "pml_reducer, reduction",
    [
        (lambda: pml_reducers.MeanReducer(), "mean"),
        (lambda: pml_reducers.SumReducer(), "sum"),
        (lambda: pml_reducers.AvgNonZeroReducer(), "avg_nonzero"),
        (lambda: pml_reducers.ThresholdReducer(low=0.1, high=0.6), jm.threshold(low=0.1, high=0.6)),
        (lambda: pml_reducers.ThresholdReducer(high=0.3), jm.threshold(high=0.3)),
    ],
    ids=["mean", "sum", "avg_nonzero", "threshold-both", "threshold-high"],
)
@pytest.mark.parametrize("loss", ["contrastive", "triplet", "ms", "supcon"])
def test_reductions_match_pml_reducers(pml_reducer, reduction, loss):
    pml_ctor, fn = {
        "contrastive": (pml_losses.ContrastiveLoss, jm.contrastive_loss),
        "triplet": (pml_losses.TripletMarginLoss, jm.triplet_margin_loss),
        "ms": (pml_losses.MultiSimilarityLoss, jm.multi_similarity_loss),
        "supcon": (pml_losses.SupConLoss, jm.supcon_loss),
    }[loss]
    emb, y = _batch(3, b=14)
    kw = {"margin": 0.4} if loss == "triplet" else {}
    v, g, _, _ = pml_value_and_grads(pml_ctor(reducer=pml_reducer(), **kw), np.asarray(emb), np.asarray(y))
    jv, jg = jax.value_and_grad(lambda e: fn(e, y, reduction=reduction, **kw))(emb)
    assert_close(jv, v)
    assert_close(jg, g)


def test_reduction_none_and_callable():
    emb, y = _batch(4)
    per_pair = jm.contrastive_loss(emb, y, reduction="none")
    assert per_pair.shape == (16, 16)
    total = jm.contrastive_loss(emb, y, reduction=lambda l, w: jnp.sum(l * w))
    assert_close(total, jm.contrastive_loss(emb, y, reduction="sum"))
    per_triplet = jm.triplet_margin_loss(emb, y, reduction="none")
    assert per_triplet.shape == (16, 16, 16)


# ---------------------------------------------------------------- transformations
@pytest.mark.parametrize("fn", LOSSES, ids=LOSS_IDS)
def test_jit_equals_eager_and_no_retrace(fn):
    emb, y = _batch(5)
    traces = []

    def f(e, yy):
        traces.append(1)
        return fn(e, yy)

    jf = jax.jit(f)
    assert_close(jf(emb, y), fn(emb, y), rtol=1e-12)
    emb2, y2 = _batch(6)
    assert_close(jf(emb2, y2), fn(emb2, y2), rtol=1e-12)
    assert len(traces) == 1


@pytest.mark.parametrize("fn", LOSSES, ids=LOSS_IDS)
def test_vmap_equals_loop(fn):
    rng = np.random.default_rng(8)
    embs = jnp.asarray(rng.normal(size=(3, 12, 6)))
    ys = jnp.asarray(rng.integers(0, 3, (3, 12)))
    batched = jax.vmap(fn)(embs, ys)
    looped = jnp.stack([fn(embs[i], ys[i]) for i in range(3)])
    assert_close(batched, looped, rtol=1e-10)
    masks = jax.vmap(jm.pair_mask)(ys)
    assert_close(jax.vmap(fn)(embs, masks), looped, rtol=1e-10)


@pytest.mark.parametrize("fn", LOSSES, ids=LOSS_IDS)
@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16, np.float16])
def test_low_precision_inputs_give_float32(fn, dtype):
    emb64, y = _batch(9)
    emb = emb64.astype(dtype)
    value, grad = jax.value_and_grad(lambda e: fn(e, y))(emb)
    assert value.dtype == jnp.float32
    assert grad.dtype == emb.dtype
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad, np.float32)))
    ref = float(fn(emb.astype(jnp.float64), y))
    assert abs(float(value) - ref) <= 2e-2 * max(1.0, abs(ref))


@pytest.mark.parametrize("fn", LOSSES, ids=LOSS_IDS)
def test_masked_rows_equal_sliced_batch(fn):
    emb, y = _batch(10, b=20)
    where = jnp.arange(20) < 13
    padded = fn(emb, y, where=where)
    sliced = fn(emb[:13], y[:13])
    assert_close(padded, sliced, rtol=1e-10)
    g_pad = jax.grad(lambda e: fn(e, y, where=where))(emb)
    g_sl = jax.grad(lambda e: fn(e, y[:13]))(emb[:13])
    assert_close(g_pad[:13], g_sl, rtol=1e-9, atol=1e-12)
    assert np.all(np.asarray(g_pad[13:]) == 0)


@pytest.mark.parametrize("fn", LOSSES, ids=LOSS_IDS)
def test_empty_selection_is_zero_with_zero_gradient(fn):
    emb, y = _batch(11, b=6)
    empty = jm.PairMask(jnp.zeros((6, 6), bool), jnp.zeros((6, 6), bool))
    v, g = jax.value_and_grad(lambda e: fn(e, empty))(emb)
    assert float(v) == 0.0 and np.all(np.asarray(g) == 0)
    v, g = jax.value_and_grad(lambda e: fn(e, y, where=jnp.zeros(6, bool)))(emb)
    assert float(v) == 0.0 and np.all(np.asarray(g) == 0)


@pytest.mark.parametrize("fn", LOSSES, ids=LOSS_IDS)
@pytest.mark.parametrize("scale", [0.0, 1e-4, 1e4])
def test_finite_for_degenerate_inputs(fn, scale):
    rng = np.random.default_rng(12)
    base = rng.normal(size=(4, 5))
    emb = jnp.asarray(np.concatenate([base, base, np.zeros((2, 5))]) * scale, jnp.float32)  # duplicates, zeros
    for y in (jnp.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1]), jnp.zeros(10, int), jnp.arange(10)):
        v, g = jax.value_and_grad(lambda e: fn(e, y))(emb)
        assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g))), (fn.__name__, scale, y)
    v, g = jax.value_and_grad(lambda e: fn(e, jnp.array([3])))(emb[:1])
    assert float(v) == 0.0 and np.all(np.isfinite(np.asarray(g)))


def test_circle_loss_large_gamma_finite():
    emb, y = _batch(13)
    v, g = jax.value_and_grad(lambda e: jm.circle_loss(e, y, gamma=300.0))(emb.astype(jnp.float32))
    assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g)))


def test_hyperparameters_can_be_traced():
    emb, y = _batch(14)
    f = jax.jit(lambda e, t: jm.supcon_loss(e, y, temperature=t))
    assert_close(f(emb, 0.2), jm.supcon_loss(emb, y, temperature=0.2))
    g = jax.grad(lambda m: jm.triplet_margin_loss(emb, y, margin=m))(0.3)
    assert np.isfinite(float(g)) and float(g) > 0


# ---------------------------------------------------------------- bad input
BAD_INPUTS = [
    ("embeddings 1-D", lambda fn: fn(jnp.ones(8), jnp.zeros(8, int)), ValueError, r"`embeddings` must be a 2-D float array.*\(8,\)"),
    ("embeddings 3-D", lambda fn: fn(jnp.ones((2, 4, 3)), jnp.zeros(2, int)), ValueError, r"`embeddings`.*\(2, 4, 3\)"),
    ("integer embeddings", lambda fn: fn(jnp.ones((4, 3), int), jnp.zeros(4, int)), TypeError, r"`embeddings` must have a floating dtype"),
    ("labels wrong length", lambda fn: fn(jnp.ones((4, 3)), jnp.zeros(5, int)), ValueError, r"`labels` must have 4 rows.*\(5,\)"),
    ("labels 3-D", lambda fn: fn(jnp.ones((4, 3)), jnp.zeros((4, 2, 2), int)), ValueError, r"`labels` must be class ids \[4\] or multi-hot"),
    ("float class ids", lambda fn: fn(jnp.ones((4, 3)), jnp.zeros(4)), TypeError, r"`labels` as class ids must have an integer dtype.*float"),
    ("multi-hot outside {0,1}", lambda fn: fn(jnp.ones((4, 3)), jnp.array([[0, 2], [1, 0], [0, 1], [1, 1]])), ValueError, r"`labels` as multi-hot must hold only 0 and 1.*2"),
    ("mask wrong shape", lambda fn: fn(jnp.ones((4, 3)), jm.PairMask(jnp.zeros((4, 5), bool), jnp.zeros((4, 5), bool))), ValueError, r"`PairMask.pos` must have shape \(4, 4\).*\(4, 5\)"),
    ("triplet mask wrong shape", lambda fn: fn(jnp.ones((4, 3)), jm.TripletMask(jnp.zeros((4, 4, 3)))), ValueError, r"`TripletMask.weights` must have shape \(4, 4, 4\)"),
    ("unknown reduction", lambda fn: fn(jnp.ones((4, 3)), jnp.zeros(4, int), reduction="avg"), ValueError, r"`reduction` must be one of .*'avg'"),
    ("where wrong shape", lambda fn: fn(jnp.ones((4, 3)), jnp.zeros(4, int), where=jnp.ones(3, bool)), ValueError, r"`where` must be a bool array of shape \(4,\)"),
    ("ref_emb without ref_labels", lambda fn: fn(jnp.ones((4, 3)), jnp.zeros(4, int), ref_emb=jnp.ones((5, 3))), ValueError, r"`ref_labels` is required"),
    ("ref_emb wrong dim", lambda fn: fn(jnp.ones((4, 3)), jnp.zeros(4, int), ref_emb=jnp.ones((5, 2)), ref_labels=jnp.zeros(5, int)), ValueError, r"`ref_emb` must have the embedding dim 3"),
    ("ref_labels wrong length", lambda fn: fn(jnp.ones((4, 3)), jnp.zeros(4, int), ref_emb=jnp.ones((5, 3)), ref_labels=jnp.zeros(4, int)), ValueError, r"`ref_labels` must have 5 rows"),
    ("distance not a distance", lambda fn: fn(jnp.ones((4, 3)), jnp.zeros(4, int), distance="cosine"), TypeError, r"`distance` must be a jaxmetric distance"),
    ("labels missing", lambda fn: fn(jnp.ones((4, 3)), None), ValueError, r"`labels_or_mask` is required"),
]


@pytest.mark.parametrize("fn", LOSSES, ids=LOSS_IDS)
@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_raises_clear_error(fn, case):
    _, call, exc, pattern = case
    with pytest.raises(exc, match=pattern) as info:
        call(fn)
    assert fn.__name__ in str(info.value)


@pytest.mark.parametrize("fn", LOSSES, ids=LOSS_IDS)
def test_bad_input_raises_at_trace_time_under_jit(fn):
    with pytest.raises(TypeError, match="integer dtype"):
        jax.jit(fn)(jnp.ones((4, 3)), jnp.zeros(4))


def test_loss_specific_errors():
    emb, y = _batch(0)
    with pytest.raises(ValueError, match="`distance` must be a similarity"):
        jm.circle_loss(emb, y, distance=jm.LpDistance())
    with pytest.raises(ValueError, match="`temperature` must be > 0; got 0"):
        jm.ntxent_loss(emb, y, temperature=0)
    with pytest.raises(ValueError, match="`triplets_per_anchor` must be 'all' or a positive int"):
        jm.triplet_margin_loss(emb, y, triplets_per_anchor="some")
    with pytest.raises(ValueError, match="`key`.*is required"):
        jm.triplet_margin_loss(emb, y, triplets_per_anchor=3)
    with pytest.raises(ValueError, match="`rule` must be one of"):
        jm.pair_mask(y, rule="nope")
