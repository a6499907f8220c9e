"""PML 2.9 parity (float64, value and gradients, beta included) for margin and ranked list losses."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from loss_parity import B, data, mask_of, mine, parity
from pml_utils import assert_close, pml_distances, pml_losses, pml_miners, pml_reducers, pml_value_and_grads, torch

pytestmark = pytest.mark.pml

J = jnp.asarray


def margin_parity(beta, emb, lab, *, jkw=None, pkw=None, lom=None, labels_kw=False, tup=None, ref=None, rlab=None, pml_labels=True):
    """jm.margin_loss against PML's MarginLoss with a float64 beta Parameter (learn_beta=True,
    so PML gives the beta gradient too)."""
    jkw, pkw = dict(jkw or {}), dict(pkw or {})
    beta = np.atleast_1d(np.asarray(beta, np.float64))
    loss = pml_losses.MarginLoss(learn_beta=True, num_classes=len(beta) if len(beta) > 1 else None, **pkw)
    loss.beta = torch.nn.Parameter(torch.tensor(beta))
    pv, pg, pgr, (pgb,) = pml_value_and_grads(loss, emb, lab if pml_labels else None, indices_tuple=tup, ref_emb=ref,
                                              ref_labels=rlab, extra=(loss.beta,))
    lom = J(lab) if lom is None else lom
    if labels_kw:
        jkw["labels"] = J(lab)
    jbeta = J(beta if len(beta) > 1 else beta[0])
    if ref is None:
        f = lambda e, b: jm.margin_loss(e, lom, b, **jkw)  # noqa: E731
        jv, (jg, jgb) = jax.value_and_grad(f, argnums=(0, 1))(J(emb), jbeta)
    else:
        rk = {} if rlab is None or not isinstance(lom, jax.Array) else {"ref_labels": J(rlab)}
        f = lambda e, r, b: jm.margin_loss(e, lom, b, ref_emb=r, **rk, **jkw)  # noqa: E731
        jv, (jg, jgr, jgb) = jax.value_and_grad(f, argnums=(0, 1, 2))(J(emb), J(ref), jbeta)
        assert_close(jgr, pgr, what="grad ref")
    assert_close(jv, pv, what="value")
    assert_close(jg, pg, what="grad embeddings")
    assert_close(np.atleast_1d(jgb), pgb, what="grad beta")
    return pv


def test_margin_defaults_and_learned_scalar_beta():
    emb, lab, ref, rlab = data(30)
    margin_parity(1.2, emb, lab)
    margin_parity(0.9, emb, lab, jkw=dict(nu=0.1, margin=0.3), pkw=dict(nu=0.1, margin=0.3))
    margin_parity(0.5, emb, lab, jkw=dict(margin=0.1, distance=jm.CosineSimilarity()),
                  pkw=dict(margin=0.1, distance=pml_distances.CosineSimilarity()))
    margin_parity(1.1, emb, lab, ref=ref, rlab=rlab)


def test_margin_per_class_beta():
    emb, lab, ref, rlab = data(31)
    beta = [0.9, 1.0, 1.1, 1.25]
    margin_parity(beta, emb, lab, jkw=dict(nu=0.05), pkw=dict(nu=0.05))
    margin_parity(beta, emb, lab, jkw=dict(nu=0.05, reduction="mean"), pkw=dict(nu=0.05, reducer=pml_reducers.MeanReducer()))
    margin_parity(beta, emb, lab, ref=ref, rlab=rlab, jkw=dict(nu=0.05), pkw=dict(nu=0.05))


@pytest.mark.parametrize("red", ["divisor", "mean", "avg_nonzero", "threshold", "sum"])
@pytest.mark.parametrize("miner", ["ms", "triplet"])
def test_margin_masks_and_reductions(red, miner):
    emb, lab, _, _ = data(32)
    jred, pred = {
        "divisor": ("divisor", None),
        "mean": ("mean", pml_reducers.MeanReducer()),
        "avg_nonzero": ("avg_nonzero", pml_reducers.AvgNonZeroReducer()),
        "threshold": (jm.threshold(0.05, 0.5), pml_reducers.ThresholdReducer(low=0.05, high=0.5)),
        "sum": ("sum", pml_reducers.SumReducer()),
    }[red]
    m = pml_miners.MultiSimilarityMiner(epsilon=0.2) if miner == "ms" else pml_miners.TripletMarginMiner(margin=0.3)
    tup = mine(m, emb, lab)
    mask = mask_of(tup, B)
    pkw = {} if pred is None else {"reducer": pred}
    # Scalar beta: the tuple alone (PML gets no labels).
    margin_parity(1.0, emb, lab, lom=mask, tup=tup, jkw=dict(reduction=jred, nu=0.02), pkw=dict(nu=0.02, **pkw), pml_labels=False)
    if red in ("divisor", "threshold"):
        # Per-class beta: labels beside the mask.
        margin_parity([0.9, 1.0, 1.1, 1.2], emb, lab, lom=mask, labels_kw=True, tup=tup,
                      jkw=dict(reduction=jred, nu=0.02), pkw=dict(nu=0.02, **pkw))
        # Labels without a mask through the blocked path.
        margin_parity(1.0, emb, lab, jkw=dict(reduction=jred), pkw=pkw)


def test_margin_none_callable_and_sampling():
    emb, lab, _, _ = data(33)
    e, lb = J(emb), J(lab)
    per = jm.margin_loss(e, lb, reduction="none")
    assert per.shape == (B, B, B)
    mean = jm.margin_loss(e, lb, reduction="mean")
    assert_close(jm.margin_loss(e, lb, reduction=lambda l, w: jnp.sum(l * w) / jnp.sum(w)), mean)
    key = jax.random.PRNGKey(0)
    v, g = jax.value_and_grad(lambda e, b: jm.margin_loss(e, lb, b, triplets_per_anchor=4, key=key, nu=0.1), argnums=(0, 1))(e, J(1.2))
    assert np.isfinite(float(v)) and float(v) > 0 and np.all(np.isfinite(np.asarray(g[0])))
    per = jm.margin_loss(e, lb, 1.2, triplets_per_anchor=4, key=key, reduction="none")
    assert per.shape == (B, 4)
    has_pos = np.array([np.sum(lab == lab[i]) > 1 for i in range(B)])
    assert_close(jm.margin_loss(e, lb, 1.2, triplets_per_anchor=4, key=key, reduction="mean"), jnp.sum(per) / (4 * has_pos.sum()))


def test_margin_errors():
    emb, lab, _, _ = data(34)
    e, lb = J(emb), J(lab)
    with pytest.raises(ValueError, match="`beta`"):
        jm.margin_loss(e, lb, jnp.ones((2, 2)))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        jm.margin_loss(e, lb, jnp.ones(3))
    with pytest.raises(ValueError, match="`labels` is required"):
        jm.margin_loss(e, jm.pair_mask(lb), jnp.ones(4))
    with pytest.raises(ValueError, match="class ids"):
        jm.margin_loss(e, jax.nn.one_hot(lb, 4), jnp.ones(4))
    with pytest.raises(ValueError, match="triplets_per_anchor"):
        jm.margin_loss(e, lb, triplets_per_anchor=0)
    with pytest.raises(ValueError, match="`key`"):
        jm.margin_loss(e, lb, triplets_per_anchor=2)
    with pytest.raises(ValueError, match="reduction"):
        jm.margin_loss(e, lb, reduction="divisr")


# ----------------------------------------------------------------------------- ranked list

@pytest.mark.filterwarnings("ignore:Values of Tp or Tn are too high")
def test_ranked_list_parity():
    emb, lab, _, _ = data(35)
    parity(lambda e: jm.ranked_list_loss(e, J(lab), margin=0.4, Tn=10.0), pml_losses.RankedListLoss(margin=0.4, Tn=10), emb, lab)
    kw = dict(margin=0.3, Tn=2.0, Tp=3.0, imbalance=0.3, alpha=1.2)
    parity(lambda e: jm.ranked_list_loss(e, J(lab), **kw, distance=jm.LpDistance(power=2)),
           pml_losses.RankedListLoss(**kw, distance=pml_distances.LpDistance(power=2)), emb, lab)


def test_ranked_list_mask_and_errors():
    emb, lab, ref, _ = data(36)
    e, lb = J(emb), J(lab)
    assert_close(jm.ranked_list_loss(e, jm.pair_mask(lb), margin=0.4, Tn=10.0), jm.ranked_list_loss(e, lb, margin=0.4, Tn=10.0))
    with pytest.raises(ValueError, match="ref_emb"):
        jm.ranked_list_loss(e, lb, margin=0.4, Tn=1.0, ref_emb=J(ref))
    with pytest.raises(ValueError, match="imbalance"):
        jm.ranked_list_loss(e, lb, margin=0.4, Tn=1.0, imbalance=1.5)
    with pytest.raises(TypeError):
        jm.ranked_list_loss(e, lb, margin=0.4)  # Tn has no default, as in PML
    # Large temperatures: PML warns about overflow; jaxmetric shifts the exponent.
    v, g = jax.value_and_grad(lambda x: jm.ranked_list_loss(x, lb, margin=0.4, Tn=500.0, Tp=500.0))(J(emb * 50, jnp.float32))
    assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g)))
