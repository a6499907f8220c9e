"""Regularizers and with_embedding_regularizer against PML 2.9 (float64, value and gradient)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from jaxmetric import reduce
from pml_utils import assert_close, pml_losses, pml_reducers, pml_regularizers, pml_value_and_grads, torch

NC, K = 3, 4  # sparse centers: classes x centers per class


def _x(seed=0, n=12, d=5):
    return np.random.default_rng(seed).normal(size=(n, d))


def _pml_reg(reg, x):
    t = torch.tensor(x, requires_grad=True)
    v = reg(t)
    (g,) = torch.autograd.grad(v, [t])
    return float(v.detach()), g.numpy()


CASES = {
    "lp": (jm.lp_regularizer, lambda: pml_regularizers.LpRegularizer()),
    "lp_p1_power3": (functools.partial(jm.lp_regularizer, p=1, power=3), lambda: pml_regularizers.LpRegularizer(p=1, power=3)),
    "lp_p3_power2": (functools.partial(jm.lp_regularizer, p=3, power=2), lambda: pml_regularizers.LpRegularizer(p=3, power=2)),
    "lp_sum": (functools.partial(jm.lp_regularizer, reduction="sum"), lambda: pml_regularizers.LpRegularizer(reducer=pml_reducers.SumReducer())),
    "zero_mean": (jm.zero_mean_regularizer, lambda: pml_regularizers.ZeroMeanRegularizer()),
    "center_invariant": (jm.center_invariant_regularizer, lambda: pml_regularizers.CenterInvariantRegularizer()),
    "regular_face": (jm.regular_face_regularizer, lambda: pml_regularizers.RegularFaceRegularizer()),
    "regular_face_avg_nonzero": (
        functools.partial(jm.regular_face_regularizer, reduction="avg_nonzero"),
        lambda: pml_regularizers.RegularFaceRegularizer(reducer=pml_reducers.AvgNonZeroReducer()),
    ),
    "sparse_centers": (
        functools.partial(jm.sparse_centers_regularizer, num_classes=NC, centers_per_class=K),
        lambda: pml_regularizers.SparseCentersRegularizer(NC, K),
    ),
    "sparse_centers_mean": (
        functools.partial(jm.sparse_centers_regularizer, num_classes=NC, centers_per_class=K, reduction="mean"),
        lambda: pml_regularizers.SparseCentersRegularizer(NC, K, reducer=pml_reducers.MeanReducer()),
    ),
    "class_weighted_rows": (
        functools.partial(jm.lp_regularizer, reduction=reduce.class_weighted(jnp.linspace(0.5, 2.0, 12))),
        lambda: pml_regularizers.LpRegularizer(reducer=pml_reducers.ClassWeightedReducer(torch.linspace(0.5, 2.0, 12, dtype=torch.float64))),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_parity_with_pml(name):
    jf, make = CASES[name]
    x = _x(1)
    pv, pg = _pml_reg(make(), x)
    jv, jg = jax.jit(jax.value_and_grad(jf))(jnp.asarray(x))
    assert_close(jv, pv, what="value")
    assert_close(jg, pg, what="grad")


LOSS_CASES = [
    ("contrastive", jm.contrastive_loss, pml_losses.ContrastiveLoss, jm.lp_regularizer, pml_regularizers.LpRegularizer(), 0.3),
    ("supcon", jm.supcon_loss, pml_losses.SupConLoss, jm.zero_mean_regularizer, pml_regularizers.ZeroMeanRegularizer(), 2.0),
    ("triplet", jm.triplet_margin_loss, pml_losses.TripletMarginLoss,
     functools.partial(jm.lp_regularizer, p=1, power=2), pml_regularizers.LpRegularizer(p=1, power=2), 0.5),
    ("ms", jm.multi_similarity_loss, pml_losses.MultiSimilarityLoss, jm.center_invariant_regularizer,
     pml_regularizers.CenterInvariantRegularizer(), 1.0),
]


@pytest.mark.parametrize("case", LOSS_CASES, ids=[c[0] for c in LOSS_CASES])
@pytest.mark.parametrize("with_ref", [False, True])
def test_loss_with_embedding_regularizer_matches_pml(case, with_ref):
    _, jloss, pcls, jreg, preg, weight = case
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    emb = _x(2, n=8)
    pml_loss = pcls(embedding_regularizer=preg, embedding_reg_weight=weight)
    f = jm.with_embedding_regularizer(jloss, jreg, weight)
    if with_ref:
        ref, ref_labels = _x(3, n=6), np.array([0, 1, 2, 0, 1, 2])
        pv, pg, pgr, _ = pml_value_and_grads(pml_loss, emb, labels, ref_emb=ref, ref_labels=ref_labels)
        jv, (jg, jgr) = jax.jit(jax.value_and_grad(
            lambda e, r: f(e, jnp.asarray(labels), ref_emb=r, ref_labels=jnp.asarray(ref_labels)), argnums=(0, 1)))(jnp.asarray(emb), jnp.asarray(ref))
        assert_close(jgr, pgr)  # the regularizer never sees ref_emb
    else:
        pv, pg, _, _ = pml_value_and_grads(pml_loss, emb, labels)
        jv, jg = jax.jit(jax.value_and_grad(lambda e: f(e, jnp.asarray(labels))))(jnp.asarray(emb))
    assert_close(jv, pv)
    assert_close(jg, pg)


def test_regularizer_applies_when_loss_selection_is_empty():
    emb = _x(4, n=6)
    labels = np.arange(6)  # no positive pair
    pml_loss = pml_losses.NTXentLoss(embedding_regularizer=pml_regularizers.LpRegularizer(), embedding_reg_weight=0.7)
    pv, pg, _, _ = pml_value_and_grads(pml_loss, emb, labels)
    f = jm.with_embedding_regularizer(jm.ntxent_loss, jm.lp_regularizer, 0.7)
    jv, jg = jax.jit(jax.value_and_grad(lambda e: f(e, jnp.asarray(labels))))(jnp.asarray(emb))
    assert_close(jv, pv)
    assert_close(jg, pg)
    assert_close(jv, 0.7 * float(jax.jit(jm.lp_regularizer)(jnp.asarray(emb))))


def test_weight_is_traceable_and_jit_matches_eager():
    emb, labels = jnp.asarray(_x(5, n=8)), jnp.array([0, 0, 1, 1, 2, 2, 0, 1])

    def total(w, e):
        return jm.with_embedding_regularizer(jm.circle_loss, jm.regular_face_regularizer, w)(e, labels)

    g_w = jax.jit(jax.grad(total))(0.25, emb)
    assert_close(g_w, jax.jit(jm.regular_face_regularizer)(emb))
    assert_close(jax.jit(total)(0.25, emb), total(0.25, emb))


@pytest.mark.parametrize("name", ["lp", "zero_mean", "center_invariant", "regular_face"])
def test_where_leaves_padded_rows_out(name):
    jf, _ = CASES[name]
    x = jnp.asarray(_x(6))
    full = jax.jit(jf)(x)
    pad = jnp.concatenate([x, jnp.asarray(_x(7, n=3)) * 9.0])
    where = jnp.arange(15) < 12
    assert_close(jax.jit(lambda p, w: jf(p, where=w))(pad, where), full)


def test_where_in_sparse_centers_and_loss_wrapper():
    x = jnp.asarray(_x(8))
    keep = jnp.ones((12,), bool)
    f = functools.partial(jm.sparse_centers_regularizer, num_classes=NC, centers_per_class=K)
    assert_close(jax.jit(lambda a, w: f(a, where=w))(x, keep), jax.jit(f)(x))
    # a padded center leaves its pairs out and the divisor shrinks with them
    drop = keep.at[0].set(False)
    terms_all = jax.jit(functools.partial(f, reduction="none"))(x)
    kept = jnp.ones((12, 12)).at[0].set(0.0)
    assert_close(jax.jit(lambda a, w: f(a, where=w))(x, drop), jnp.sum(terms_all * kept) / (2 * (NC * K * (K - 1) / 2 - (K - 1))))
    emb, labels = jnp.asarray(_x(9, n=8)), jnp.array([0, 0, 1, 1, 2, 2, 0, 1])
    loss = jm.with_embedding_regularizer(jm.contrastive_loss, jm.lp_regularizer, 0.3)
    pad = jnp.concatenate([emb, 50.0 * jnp.ones((2, 5))])
    lab_pad = jnp.concatenate([labels, jnp.array([0, 1])])
    where = jnp.arange(10) < 8
    assert_close(jax.jit(lambda p, l, w: loss(p, l, where=w))(pad, lab_pad, where), jax.jit(loss)(emb, labels))
    no_where = jm.with_embedding_regularizer(jm.contrastive_loss, lambda e: jnp.sum(e), 1.0)
    with pytest.raises(TypeError, match="where"):
        no_where(pad, lab_pad, where=where)


def test_edge_cases_finite():
    zeros = jnp.zeros((4, 3))
    for f in (jm.lp_regularizer, jm.zero_mean_regularizer, jm.center_invariant_regularizer, jm.regular_face_regularizer):
        v, g = jax.jit(jax.value_and_grad(f))(zeros)
        assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g)))
    # zero row sum: |s| has torch's zero gradient
    g = jax.jit(jax.grad(jm.zero_mean_regularizer))(jnp.array([[1.0, -1.0], [2.0, 0.5]]))
    assert np.all(np.asarray(g)[0] == 0)
    # merged centers (cosine 1): PML gives 0 with a NaN gradient; jaxmetric 0 with a finite one
    f = functools.partial(jm.sparse_centers_regularizer, num_classes=2, centers_per_class=2)
    merged = np.tile([[1.0, 0.0, 0.0]], (4, 1))
    pv, pg = _pml_reg(pml_regularizers.SparseCentersRegularizer(2, 2), merged)
    assert pv == 0.0 and np.isnan(pg).any()
    for dtype in (jnp.float32, jnp.float64):
        v, g = jax.jit(jax.value_and_grad(f))(jnp.asarray(merged, dtype))
        assert v.dtype == dtype and float(v) == 0.0
        assert np.all(np.isfinite(np.asarray(g)))
        c = jnp.tile(jnp.array([[1.0, 2.0, 3.0]], dtype), (4, 1))  # cosine 1 up to rounding
        v, g = jax.jit(jax.value_and_grad(f))(c)
        assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g)))
    # a single class weight has no other: 0 (PML: cosine with itself, 1)
    assert float(jax.jit(jm.regular_face_regularizer)(jnp.ones((1, 3)))) == 0.0


def test_float32_compute_and_errors():
    x32 = jnp.asarray(_x(10), jnp.float32)
    assert jm.lp_regularizer(x32).dtype == jnp.float32
    assert jm.lp_regularizer(x32.astype(jnp.bfloat16)).dtype == jnp.float32
    with pytest.raises(ValueError, match="`x` must be a 2-D"):
        jm.lp_regularizer(jnp.ones(3))
    with pytest.raises(TypeError, match="floating"):
        jm.zero_mean_regularizer(jnp.ones((3, 2), jnp.int32))
    with pytest.raises(ValueError, match="num_classes \\* centers_per_class"):
        jm.sparse_centers_regularizer(x32, num_classes=5, centers_per_class=2)
    with pytest.raises(ValueError, match="centers_per_class"):
        jm.sparse_centers_regularizer(x32, num_classes=12, centers_per_class=1)
    with pytest.raises(ValueError, match="where"):
        jm.lp_regularizer(x32, where=jnp.ones((3,), bool))
    with pytest.raises(ValueError, match="`p`"):
        jm.lp_regularizer(x32, p=0)
    with pytest.raises(TypeError, match="regularizer"):
        jm.with_embedding_regularizer(jm.contrastive_loss, "lp")
