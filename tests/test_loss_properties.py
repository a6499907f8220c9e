"""Properties checked together for twelve PML losses (angular, lifted, generalized lifted, N-pairs,
SNR contrastive, intra-pair variance, tuplet margin, NCA, margin, ranked list, threshold-consistent
margin, instance): jit (of a padded batch) equals eager, vmap equals a loop, edge batches (one
class, all distinct; with PML parity), zero vectors and duplicates, padded batches (`where`),
multi-hot labels, dtypes and input errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from loss_parity import B, DIM, data, normalized
from pml_utils import assert_close, jax_value_and_grads, pml_losses, pml_value_and_grads

J = jnp.asarray

RLL = dict(margin=0.4, Tn=2.0)
# name -> (jax loss(e, labels_or_mask, **kw), PML loss or None, accepts multi-hot)
LOSSES = {
    "angular": (jm.angular_loss, pml_losses.AngularLoss, True),
    "lifted": (jm.lifted_structure_loss, pml_losses.LiftedStructureLoss, True),
    "glifted": (jm.generalized_lifted_structure_loss, pml_losses.GeneralizedLiftedStructureLoss, True),
    "npairs": (jm.npairs_loss, pml_losses.NPairsLoss, False),
    "snr": (jm.snr_contrastive_loss, pml_losses.SignalToNoiseRatioContrastiveLoss, True),
    "ipv": (jm.intra_pair_variance_loss, pml_losses.IntraPairVarianceLoss, True),
    "tuplet": (jm.tuplet_margin_loss, pml_losses.TupletMarginLoss, True),
    "nca": (jm.nca_loss, pml_losses.NCALoss, True),
    "margin": (jm.margin_loss, pml_losses.MarginLoss, True),
    "rll": (lambda e, l, **kw: jm.ranked_list_loss(e, l, **RLL, **kw), lambda: pml_losses.RankedListLoss(**RLL), True),
    "tcm": (jm.threshold_consistent_margin_loss, pml_losses.ThresholdConsistentMarginLoss, True),
    "instance": (jm.instance_loss, pml_losses.InstanceLoss, False),
}
NAMES = sorted(LOSSES)


def _finite(v, g):
    return np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g)))


def test_jit_padded_equals_eager_unpadded_and_dtypes():
    """``jit`` of the padded batch (``where``) equals the eager loss on the real rows, value
    and gradient; padded rows get a zero gradient. Float32 in, float32 out."""
    emb, lab, _, _ = data(45)
    rng = np.random.default_rng(1)
    pad = 4
    emb_p = np.concatenate([emb, 10 * rng.normal(size=(pad, DIM))])
    lab_p = np.concatenate([lab, rng.integers(0, 4, pad)])
    real = np.arange(B + pad) < B
    e32 = J(emb, jnp.float32)
    for name in NAMES:
        fn = LOSSES[name][0]
        v0, g0 = jax.value_and_grad(lambda e: fn(e, J(lab)))(J(emb))
        assert v0.dtype == jnp.float64, name
        v1, g1 = jax.jit(jax.value_and_grad(lambda e, lb, w: fn(e, lb, where=w)))(J(emb_p), J(lab_p), J(real))
        assert v1.dtype == jnp.float64, name
        assert_close(v1, v0, rtol=1e-9, what=name)
        assert_close(np.asarray(g1)[:B], g0, rtol=1e-9, atol=1e-12, what=name)
        assert not np.any(np.asarray(g1)[B:]), name
        out = jax.eval_shape(jax.value_and_grad(lambda x: fn(x, J(lab))), e32)
        assert out[0].dtype == jnp.float32 and out[1].dtype == jnp.float32, name


def test_vmap_equals_loop():
    rng = np.random.default_rng(41)
    k = 3
    embs = J(rng.normal(size=(k, B, DIM)))
    labs = J(rng.integers(0, 4, (k, B)))
    for name in NAMES:
        fn = LOSSES[name][0]
        batched = jax.jit(jax.vmap(lambda e, l: fn(e, l)))(embs, labs)
        loop = [fn(embs[i], labs[i]) for i in range(k)]
        assert_close(batched, np.stack(loop), rtol=1e-10, what=name)
    # masks are pytrees: vmap over PairMask too
    masks = jax.vmap(jm.pair_mask)(labs)
    batched = jax.vmap(lambda e, m, l: jm.nca_loss(e, m, labels=l))(embs, masks, labs)
    assert_close(batched, np.stack([jm.nca_loss(embs[i], labs[i]) for i in range(k)]), rtol=1e-10)


@pytest.mark.pml
@pytest.mark.parametrize("case", ["one_class", "all_distinct"])
def test_edge_batches_match_pml(case):
    emb, _, _, _ = data(42)
    emb = normalized(emb)  # angular: PML leaves negatives un-normalised
    lab = np.zeros(B, np.int64) if case == "one_class" else np.arange(B)
    for name in NAMES:
        fn, pml_cls, _ = LOSSES[name]
        pv, pg, _, _ = pml_value_and_grads(pml_cls(), emb, lab)
        jv, jg, _ = jax_value_and_grads(lambda e: fn(e, J(lab)), emb)
        assert _finite(jv, jg)
        if name == "nca" and case == "all_distinct":
            # PML: the mean over no kept query is NaN; jaxmetric: 0 (pinned).
            assert np.isnan(pv) and jv == 0.0 and not np.any(jg)
            continue
        assert_close(jv, pv, what=f"{name} value")
        assert_close(jg, pg, what=f"{name} grad")


def test_zero_vectors_and_duplicates_are_finite():
    emb, lab, _, _ = data(43)
    emb[3] = emb[2]
    lab[3] = lab[2]
    emb[5] = emb[4]
    lab[5] = (lab[4] + 1) % 4
    with_zero = emb.copy()
    with_zero[0] = 0.0
    for dt in (jnp.float64, jnp.float32):
        # float32 (where cosines can round past 1) for the angle/softmax losses; float64 for all.
        for name in NAMES if dt == jnp.float64 else ["angular", "tuplet", "npairs", "instance", "nca", "snr"]:
            fn = LOSSES[name][0]
            x = with_zero  # SNRDistance floors Var(q) at 1e-12, so a zero vector is finite too
            v, g = jax.value_and_grad(lambda e: fn(e, J(lab)))(J(x, dt))
            assert _finite(v, g), (name, dt)


def test_empty_selection_gives_zero_and_zero_gradient():
    emb, lab, _, _ = data(44)
    empty = jm.PairMask(jnp.zeros((B, B)), jnp.zeros((B, B)))
    for name in ["lifted", "glifted", "snr", "ipv", "tuplet", "tcm", "margin", "rll"]:
        fn = LOSSES[name][0]
        v, g = jax.value_and_grad(lambda e: fn(e, empty))(J(emb))
        assert float(v) == 0.0 and not np.any(np.asarray(g)), name
    for name in ["angular", "npairs", "nca"]:
        fn = LOSSES[name][0]
        v, g = jax.value_and_grad(lambda e: fn(e, empty, labels=J(lab)))(J(emb))
        assert float(v) == 0.0 and not np.any(np.asarray(g)), name
    # every row padded
    for name in NAMES:
        fn = LOSSES[name][0]
        v, g = jax.value_and_grad(lambda e: fn(e, J(lab), where=jnp.zeros(B, bool)))(J(emb))
        assert float(v) == 0.0 and not np.any(np.asarray(g)), name


def test_multi_hot_one_hot_equals_class_ids():
    emb, lab, _, _ = data(46)
    onehot = jax.nn.one_hot(J(lab), 4)
    for name in NAMES:
        fn, _, multi = LOSSES[name]
        if multi:
            assert_close(fn(J(emb), onehot), fn(J(emb), J(lab)), rtol=1e-12, what=name)
        else:
            with pytest.raises(ValueError, match="class ids"):
                fn(J(emb), onehot)


def test_bad_inputs():
    emb, lab, ref, rlab = data(47)
    e, lb = J(emb), J(lab)
    for name in NAMES:
        fn = LOSSES[name][0]
        with pytest.raises(ValueError, match="embeddings"):
            fn(e[0], lb)
        with pytest.raises(ValueError, match="labels"):
            fn(e, lb[:-1])
        with pytest.raises(TypeError, match="labels"):
            fn(e, lb.astype(jnp.float32))
        with pytest.raises(ValueError, match="reduction"):
            fn(e, lb, reduction="median")
        with pytest.raises(TypeError, match="distance"):
            fn(e, lb, distance="cosine")
    with pytest.raises(TypeError, match="CosineSimilarity"):
        jm.tuplet_margin_loss(e, lb, distance=jm.LpDistance())
    with pytest.raises(TypeError, match="SNRDistance"):
        jm.snr_contrastive_loss(e, lb, distance=jm.LpDistance())
    with pytest.raises(TypeError, match="CosineSimilarity"):
        jm.threshold_consistent_margin_loss(e, lb, distance=jm.DotProductSimilarity())
    with pytest.raises(ValueError, match="LpDistance"):
        jm.angular_loss(e, lb, distance=jm.LpDistance(power=2))
    with pytest.raises(TypeError, match="LpDistance"):
        jm.angular_loss(e, lb, distance=jm.CosineSimilarity())
    with pytest.raises(ValueError, match="`labels` is required"):
        jm.nca_loss(e, jm.pair_mask(lb))
    with pytest.raises(ValueError, match="ref_labels"):
        jm.nca_loss(e, jm.pair_mask(lb, J(rlab)), labels=lb, ref_emb=J(ref))
    with pytest.raises(ValueError, match="labels="):
        jm.nca_loss(e, lb, labels=lb)
    with pytest.raises(ValueError, match="ref_labels"):
        jm.lifted_structure_loss(e, lb, ref_emb=J(ref))
    with pytest.raises(ValueError, match="PairMask.pos"):
        jm.lifted_structure_loss(e, jm.PairMask(jnp.ones((B, B + 1)), jnp.ones((B, B + 1))))


def test_float_hyperparameters_can_be_traced():
    """Float hyperparameters are traced (differentiated here): no Python branch on them."""
    emb, lab, _, _ = data(48)
    e, lb = J(emb), J(lab)
    cases = {
        "angular": lambda h: jm.angular_loss(e, lb, alpha=h * 40.0),
        "lifted": lambda h: jm.lifted_structure_loss(e, lb, neg_margin=h, pos_margin=0.1 * h),
        "glifted": lambda h: jm.generalized_lifted_structure_loss(e, lb, neg_margin=h),
        "snr": lambda h: jm.snr_contrastive_loss(e, lb, neg_margin=h),
        "ipv": lambda h: jm.intra_pair_variance_loss(e, lb, pos_eps=0.01 * h),
        "tuplet": lambda h: jm.tuplet_margin_loss(e, lb, margin=5.73 * h, scale=64.0 * h),
        "tcm": lambda h: jm.threshold_consistent_margin_loss(e, lb, lambda_plus=h),
        "nca": lambda h: jm.nca_loss(e, lb, softmax_scale=h),
        "margin": lambda h: jm.margin_loss(e, lb, 1.2 * h, margin=0.2 * h, nu=0.1 * h),
        "rll": lambda h: jm.ranked_list_loss(e, lb, margin=0.4 * h, Tn=2.0 * h, Tp=h, imbalance=0.5 * h),
        "instance": lambda h: jm.instance_loss(e, lb, gamma=64.0 * h),
    }
    for name, f in cases.items():
        v, g = jax.value_and_grad(f)(J(1.0))
        assert _finite(v, g) and float(g) != 0.0, name
        assert_close(v, f(1.0), rtol=1e-12, what=name)
