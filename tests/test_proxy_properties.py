"""Properties of the proxy and classifier-head losses: jit == eager, vmap == loop, mixed
precision, safe angles, padding, per-sample weights, initialisers and input errors."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric
from jaxmetric._src.class_matrix import safe_acos

B, D, C = 8, 4, 3
COUNTS = np.array([40, 3, 9])

# name -> (fn, weight shape, extra positional args)
LOSSES = {
    "proxy_nca": (jaxmetric.proxy_nca_loss, (C, D), ()),
    "proxy_anchor": (jaxmetric.proxy_anchor_loss, (C, D), ()),
    "soft_triple": (jaxmetric.soft_triple_loss, (C, 2, D), ()),
    "normalized_softmax": (jaxmetric.normalized_softmax_loss, (C, D), ()),
    "arcface": (jaxmetric.arcface_loss, (C, D), ()),
    "cosface": (jaxmetric.cosface_loss, (C, D), ()),
    "subcenter_arcface": (jaxmetric.subcenter_arcface_loss, (C, 2, D), ()),
    "dynamic_arcface": (jaxmetric.dynamic_arcface_loss, (C, 2, D), (COUNTS,)),
    "large_margin_softmax": (jaxmetric.large_margin_softmax_loss, (C, D), ()),
    "sphereface": (jaxmetric.sphereface_loss, (C, D), ()),
    "p2sgrad": (jaxmetric.p2sgrad_loss, (C, D), ()),
}
NAMES = list(LOSSES)
PER_SAMPLE = [n for n in NAMES if n != "proxy_anchor"]


def data(seed=0, b=B, dtype=np.float32):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(b, D)).astype(dtype)
    labels = rng.integers(0, C, size=b).astype(np.int32)
    return emb, labels, rng


def weights_for(name, rng, dtype=np.float32):
    return rng.normal(size=LOSSES[name][1]).astype(dtype)


def call(name, emb, labels, w, **kw):
    fn, _, extra = LOSSES[name]
    return fn(emb, labels, w, *extra, **kw)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_embeddings_with_float32_weights(name):
    emb, labels, rng = data()
    w = weights_for(name, rng)
    e16 = jnp.asarray(emb, jnp.bfloat16)
    v, (ge, gw) = jax.value_and_grad(lambda e, ww: call(name, e, labels, ww), argnums=(0, 1))(e16, jnp.asarray(w))
    assert v.dtype == jnp.float32 and np.isfinite(v)
    assert ge.dtype == jnp.bfloat16 and gw.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(ge, np.float32))) and np.all(np.isfinite(gw))
    ref = call(name, jnp.asarray(e16, jnp.float32), labels, w)
    np.testing.assert_allclose(v, ref, rtol=1e-6)


def test_safe_acos_endpoints():
    x = jnp.array([-1.0, -0.5, 0.0, 0.5, 1.0, 1.0 + 1e-6])
    np.testing.assert_allclose(safe_acos(x), np.arccos(np.clip(np.asarray(x), -1, 1)), rtol=1e-6)
    g = jax.vmap(jax.grad(safe_acos))(x)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g[1:4], -1 / np.sqrt(1 - np.asarray(x[1:4]) ** 2), rtol=1e-6)
    assert g[-1] == 0.0  # outside the clamp


@pytest.mark.parametrize("name,dtype", [
    ("arcface", np.float64), ("arcface", np.float32), ("subcenter_arcface", np.float32), ("dynamic_arcface", np.float32),
    ("large_margin_softmax", np.float32), ("sphereface", np.float64), ("cosface", np.float32), ("p2sgrad", np.float32),
])
def test_angles_at_plus_minus_one_have_finite_gradients(name, dtype):
    """Embeddings exactly on (and opposite to) their class vector: cos = +-1."""
    rng = np.random.default_rng(3)
    w = weights_for(name, rng, dtype)
    w2 = w.reshape(C, -1, D)
    labels = np.array([0, 1, 2, 0, 1, 2], np.int32)
    sign = np.array([1, 1, 1, -1, -1, -1], dtype)[:, None]
    emb = (w2[labels, 0] * sign * 2.0).astype(dtype)
    v, grads = jax.value_and_grad(lambda e, ww: call(name, e, labels, ww, **({"scale": 4.0} if "face" in name else {})),
                                  argnums=(0, 1))(emb, w)
    assert np.isfinite(v)
    for g in grads:
        assert np.all(np.isfinite(g))


@pytest.mark.parametrize("name", PER_SAMPLE)
def test_where_drops_padded_rows_and_none_shape(name):
    emb, labels, rng = data(b=10)
    w = weights_for(name, rng)
    where = jnp.asarray(np.array([True] * 7 + [False] * 3))
    padded = emb.copy()
    padded[7:] = 1e3  # garbage in padded rows
    full, g = jax.value_and_grad(lambda e: call(name, e, labels, w, where=where))(padded)
    sub = call(name, emb[:7], labels[:7], w)
    np.testing.assert_allclose(full, sub, rtol=1e-5)
    assert np.all(g[7:] == 0)
    per = call(name, padded, labels, w, reduction="none", where=where)
    assert per.shape == (10,) and np.all(per[7:] == 0)
    np.testing.assert_allclose(jnp.sum(per) / 7, full, rtol=1e-5)


@pytest.mark.parametrize("name", ["arcface", "soft_triple", "p2sgrad"])
def test_all_rows_padded_gives_zero(name):
    emb, labels, rng = data(b=10)
    w = weights_for(name, rng)
    v, g = jax.value_and_grad(lambda e: call(name, e, labels, w, where=jnp.zeros(10, bool)))(emb)
    assert v == 0 and np.all(g == 0)


def test_proxy_anchor_where_matches_subset():
    emb, labels, rng = data(b=10)
    w = weights_for("proxy_anchor", rng)
    where = jnp.asarray(np.array([True] * 6 + [False] * 4))
    np.testing.assert_allclose(
        jaxmetric.proxy_anchor_loss(emb, labels, w, where=where), jaxmetric.proxy_anchor_loss(emb[:6], labels[:6], w), rtol=1e-5
    )
    v, g = jax.value_and_grad(lambda e: jaxmetric.proxy_anchor_loss(e, labels, w, where=jnp.zeros(10, bool)))(emb)
    assert v == 0 and np.all(g == 0)


@pytest.mark.parametrize("name", ["arcface", "proxy_nca"])
def test_traced_negative_or_nonfinite_sample_weights_give_nan(name):
    emb, labels, rng = data()
    w = weights_for(name, rng)
    f = jax.jit(lambda sw: call(name, emb, labels, w, sample_weights=sw))
    assert np.isfinite(float(f(jnp.ones(B))))
    for bad in (-1.0, np.nan, np.inf):
        assert not np.isfinite(float(f(jnp.ones(B).at[3].set(bad)))), bad


@pytest.mark.parametrize("name", ["proxy_anchor", "arcface", "proxy_nca"])
def test_mask_equals_its_sample_weights(name):
    emb, labels, rng = data()
    w = weights_for(name, rng)
    a1, p, a2, n = (jnp.asarray(rng.integers(0, B, size=6)) for _ in range(4))
    mask = jaxmetric.from_indices((a1, p, a2, n), B)
    idx = np.concatenate([a1, a2]) if name == "proxy_nca" else np.concatenate([a1, p, a2, n])
    counts = np.bincount(idx, minlength=B).astype(np.float32)
    sw = counts / counts.max()
    np.testing.assert_allclose(call(name, emb, labels, w, mask=mask), call(name, emb, labels, w, sample_weights=sw), rtol=1e-6)
    # A compact TripletMask (a triplet miner's output) weights as its dense cube.
    mined = jaxmetric.triplet_margin_miner(emb, labels, margin=0.3)
    assert mined.form == "margin"
    np.testing.assert_allclose(call(name, emb, labels, w, mask=mined),
                               call(name, emb, labels, w, mask=jaxmetric.TripletMask.dense(mined.to_dense())), rtol=1e-6)
    # An empty selection means no weighting (PML: all ones).
    empty = jaxmetric.PairMask(jnp.zeros((B, B)), jnp.zeros((B, B)))
    np.testing.assert_allclose(call(name, emb, labels, w, mask=empty), call(name, emb, labels, w), rtol=1e-6)


def test_traced_hyperparameters():
    emb, labels, rng = data()
    w = weights_for("arcface", rng)
    f = jax.jit(lambda m, s: jaxmetric.arcface_loss(emb, labels, w, margin=m, scale=s))
    np.testing.assert_allclose(f(20.0, 8.0), jaxmetric.arcface_loss(emb, labels, w, margin=20.0, scale=8.0), rtol=1e-6)
    g = jax.grad(lambda s: jaxmetric.cosface_loss(emb, labels, w, scale=s))(10.0)
    assert np.isfinite(g)


def test_init_class_weights():
    key = jax.random.PRNGKey(0)
    big = 200
    w = jaxmetric.init_class_weights(key, big, 32, kind="arcface")
    assert w.shape == (big, 32) and w.dtype == jnp.float32
    assert abs(float(jnp.std(w)) - 1.0) < 0.03
    pa = jaxmetric.init_class_weights(key, big, 32, kind="proxy_anchor")
    np.testing.assert_allclose(pa, w * math.sqrt(2 / big), rtol=1e-6)  # N(0, 2 / C)
    st = jaxmetric.init_class_weights(key, 7, 8, kind="soft_triple")
    bound = 1 / math.sqrt(70)
    assert st.shape == (7, 10, 8) and 0.9 * bound < float(jnp.max(jnp.abs(st))) <= bound
    sc = jaxmetric.init_class_weights(key, 7, 8, kind="subcenter_arcface", dtype=jnp.bfloat16)
    assert sc.shape == (7, 3, 8) and sc.dtype == jnp.bfloat16
    assert jaxmetric.init_class_weights(key, 7, 8, kind="dynamic_arcface", sub_centers=3).shape == (7, 3, 8)
    p2 = jaxmetric.init_class_weights(key, 7, 8, kind="p2sgrad")
    np.testing.assert_allclose(jnp.linalg.norm(p2, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="kind"):
        jaxmetric.init_class_weights(key, 7, 8, kind="arc_face")
    with pytest.raises(ValueError, match="sub_centers"):
        jaxmetric.init_class_weights(key, 7, 8, kind="arcface", sub_centers=2)
    with pytest.raises(ValueError, match="num_classes"):
        jaxmetric.init_class_weights(key, 0, 8, kind="arcface")


def test_class_logits_errors_and_p2sgrad():
    emb, labels, rng = data()
    w = weights_for("p2sgrad", rng)
    lg = jaxmetric.class_logits(emb, w, kind="p2sgrad")
    assert lg.shape == (B, C) and float(jnp.max(jnp.abs(lg))) <= 1.0
    with pytest.raises(TypeError, match="unexpected"):
        jaxmetric.class_logits(emb, w, kind="arcface", margin=3.0)
    with pytest.raises(ValueError, match="kind"):
        jaxmetric.class_logits(emb, w, kind="nope")


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs(name):
    emb, labels, rng = data()
    w = weights_for(name, rng)
    with pytest.raises(ValueError, match="weights"):  # wrong embedding dim
        call(name, emb, labels, np.zeros(w.shape[:-1] + (D + 1,), np.float32))
    with pytest.raises(ValueError, match="weights"):
        call(name, emb, labels, np.zeros((C * D,), np.float32))
    with pytest.raises(TypeError, match="weights"):
        call(name, emb, labels, w.astype(np.int32))
    with pytest.raises(TypeError, match="labels"):
        call(name, emb, labels.astype(np.float32), w)
    with pytest.raises(ValueError, match=r"labels.*\[0, 3\)"):
        call(name, emb, np.where(labels == 0, 3, labels).astype(np.int32), w)
    with pytest.raises(ValueError, match="labels"):
        call(name, emb, np.where(labels == 0, -1, labels).astype(np.int32), w)
    with pytest.raises(ValueError, match="labels"):
        call(name, emb, labels[:-1], w)
    with pytest.raises(ValueError, match="embeddings"):
        call(name, emb[0], labels, w)
    with pytest.raises(ValueError, match="sample_weights"):
        call(name, emb, labels, w, sample_weights=np.ones(B - 1))
    with pytest.raises(ValueError, match="at most one"):
        call(name, emb, labels, w, sample_weights=np.ones(B), mask=jaxmetric.pair_mask(labels))
    with pytest.raises(ValueError, match="mask"):
        call(name, emb, labels, w, mask=jaxmetric.PairMask(jnp.ones((B, B + 1)), jnp.ones((B, B + 1))))
    with pytest.raises(TypeError, match="mask"):
        call(name, emb, labels, w, mask=np.ones((B, B)))
    with pytest.raises(TypeError, match="weight_regularizer"):
        call(name, emb, labels, w, weight_regularizer=3.0)
    with pytest.raises(ValueError, match="reduction='none'"):
        call(name, emb, labels, w, weight_regularizer=jnp.sum, reduction="none")
    with pytest.raises(ValueError, match="scalar"):
        call(name, emb, labels, w, weight_regularizer=lambda m: m)
    with pytest.raises(ValueError, match="reduction"):
        call(name, emb, labels, w, reduction="avg")
    with pytest.raises(ValueError, match="where"):
        call(name, emb, labels, w, where=np.ones(B - 1, bool))
    if len(LOSSES[name][1]) == 2:  # a 3-D matrix only where there are centers per class
        with pytest.raises(ValueError, match="weights"):
            call(name, emb, labels, w[:, None, :])


def test_specific_errors():
    emb, labels, rng = data()
    w = rng.normal(size=(C, D)).astype(np.float32)
    w3 = rng.normal(size=(C, 2, D)).astype(np.float32)
    for m in (2.5, 0):
        with pytest.raises(ValueError, match="margin"):
            jaxmetric.large_margin_softmax_loss(emb, labels, w, margin=m)
    with pytest.raises(ValueError, match="sub_centers"):
        jaxmetric.subcenter_arcface_loss(emb, labels, w3, sub_centers=3)
    with pytest.raises(ValueError, match="sub_centers"):  # 2-D rows not a multiple of the default 3
        jaxmetric.subcenter_arcface_loss(emb, labels, np.zeros((4, D), np.float32))
    with pytest.raises(ValueError, match="centers_per_class"):
        jaxmetric.soft_triple_loss(emb, labels, w3, centers_per_class=3)
    with pytest.raises(ValueError, match="similarity"):
        jaxmetric.soft_triple_loss(emb, labels, w3, distance=jaxmetric.LpDistance())
    with pytest.raises(ValueError, match="gamma"):
        jaxmetric.soft_triple_loss(emb, labels, w3, gamma=0.0)
    with pytest.raises(ValueError, match="class_counts"):
        jaxmetric.dynamic_arcface_loss(emb, labels, w3, np.array([3, 4]))
    with pytest.raises(ValueError, match="class_counts"):
        jaxmetric.dynamic_arcface_loss(emb, labels, w3, np.array([3, 0, 4]))
    with pytest.raises(ValueError, match="margin_bounds"):
        jaxmetric.dynamic_arcface_margins(np.array([3, 4]), margin_bounds=(0.5, 0.1))
    with pytest.raises(TypeError, match="distance"):
        jaxmetric.proxy_anchor_loss(emb, labels, w, distance="cosine")
    with pytest.raises(ValueError, match="temperature"):
        jaxmetric.normalized_softmax_loss(emb, labels, w, temperature=0.0)
    # Labels are only range-checked when concrete; under jit the shapes are what is checked.
    with pytest.raises(TypeError, match="labels"):
        jax.jit(lambda l: jaxmetric.arcface_loss(emb, l, w))(labels.astype(np.float32))


def test_traced_out_of_range_labels_give_nan():
    emb, labels, rng = data()
    w = weights_for("arcface", rng)
    bad = labels.copy()
    bad[0] = C
    f = jax.jit(lambda l: jaxmetric.arcface_loss(emb, l, w))
    assert np.isnan(f(bad)) and np.isfinite(f(labels))
    # A padded row may hold any id.
    where = jnp.asarray(np.arange(B) > 0)
    assert np.isfinite(jax.jit(lambda l: jaxmetric.arcface_loss(emb, l, w, where=where))(bad))


# ----------------------------------------------------------------------------- hypothesis

from hypothesis import given, settings, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

_finite = st.one_of(st.just(0.0), st.floats(-1e3, 1e3, width=32))


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=6, deadline=None)
@given(emb=hnp.arrays(np.float32, (B, D), elements=_finite), labels=hnp.arrays(np.int32, (B,), elements=st.integers(0, C - 1)),
       dup=st.booleans())
def test_finite_for_any_finite_input(name, emb, labels, dup):
    """Zero vectors, duplicates, huge magnitudes: finite value and gradients."""
    if dup:
        emb = np.repeat(emb[:1], B, axis=0)
    w = weights_for(name, np.random.default_rng(0))
    v, grads = jax.value_and_grad(lambda e, ww: call(name, e, labels, ww), argnums=(0, 1))(emb, w)
    assert np.isfinite(v)
    for g in grads:
        assert np.all(np.isfinite(g))
