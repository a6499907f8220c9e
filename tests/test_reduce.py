"""The reductions (jaxmetric/reduce.py): PML reducer parity, "none" and callables."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from tests.pml_utils import assert_close, pml_losses, pml_reducers, pml_value_and_grads


def _batch(seed=0, b=16, dim=8, classes=4, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(b, dim)).astype(dtype)), jnp.asarray(rng.integers(0, classes, b))


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
