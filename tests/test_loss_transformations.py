"""Contrastive, triplet margin, multi-similarity, circle, NT-Xent and SupCon: jit, vmap, low
precision, padded rows, empty selections, degenerate inputs, traced hyperparameters and
clear errors for bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from tests.pml_utils import assert_close

LOSSES = [jm.contrastive_loss, jm.triplet_margin_loss, jm.multi_similarity_loss, jm.circle_loss, jm.ntxent_loss, jm.supcon_loss]
LOSS_IDS = [f.__name__ for f in LOSSES]


def _batch(seed=0, b=16, dim=8, classes=4, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(b, dim)).astype(dtype)), jnp.asarray(rng.integers(0, classes, b))


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
