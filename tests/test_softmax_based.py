"""PML 2.9 parity (float64, value and gradients) for npairs, NCA and instance losses."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from loss_parity import B, R, data, mask_of, mine, parity
from pml_utils import assert_close, pml_distances, pml_losses, pml_miners, torch

pytestmark = pytest.mark.pml

J = jnp.asarray


def _miners():
    return {"ms": pml_miners.MultiSimilarityMiner(epsilon=0.2), "triplet": pml_miners.TripletMarginMiner(margin=0.3)}


# ----------------------------------------------------------------------------- npairs

def test_npairs_parity_labels():
    emb, lab, _, _ = data(20)
    parity(lambda e: jm.npairs_loss(e, J(lab)), pml_losses.NPairsLoss(), emb, lab)
    parity(lambda e: jm.npairs_loss(e, J(lab), distance=jm.LpDistance(power=2)),
           pml_losses.NPairsLoss(distance=pml_distances.LpDistance(power=2)), emb, lab)


@pytest.mark.parametrize("miner", ["ms", "triplet"])
def test_npairs_parity_mask_with_labels(miner):
    emb, lab, _, _ = data(21)
    tup = mine(_miners()[miner], emb, lab)
    if miner == "ms":
        # A mask has no order: jaxmetric takes each class's first pair in row-major order.
        # The MultiSimilarityMiner lists each anchor's positives hardest first, so PML is
        # given the same pairs sorted row-major (TripletMarginMiner already lists them so).
        order = np.lexsort((tup[1], tup[0]))
        tup = (tup[0][order], tup[1][order], tup[2], tup[3])
    parity(lambda e: jm.npairs_loss(e, mask_of(tup, B), labels=J(lab)), pml_losses.NPairsLoss(), emb, lab, indices_tuple=tup)


def test_npairs_errors():
    emb, lab, ref, rlab = data(22)
    with pytest.raises(ValueError, match="ref_emb"):
        jm.npairs_loss(J(emb), J(lab), ref_emb=J(ref), ref_labels=J(rlab))
    with pytest.raises(ValueError, match="class ids"):
        jm.npairs_loss(J(emb), jax.nn.one_hot(J(lab), 4))
    with pytest.raises(ValueError, match="`labels` is required"):
        jm.npairs_loss(J(emb), jm.pair_mask(J(lab)))


# ----------------------------------------------------------------------------- nca

def test_nca_parity_labels():
    emb, lab, ref, rlab = data(23)
    parity(lambda e: jm.nca_loss(e, J(lab)), pml_losses.NCALoss(), emb, lab)
    parity(lambda e: jm.nca_loss(e, J(lab), softmax_scale=3.0, distance=jm.CosineSimilarity()),
           pml_losses.NCALoss(softmax_scale=3.0, distance=pml_distances.CosineSimilarity()), emb, lab)
    parity(lambda e, r: jm.nca_loss(e, J(lab), ref_emb=r, ref_labels=J(rlab)), pml_losses.NCALoss(), emb, lab, ref=ref, ref_labels=rlab)


@pytest.mark.parametrize("miner", ["ms", "triplet"])
def test_nca_parity_mask_weights(miner):
    emb, lab, ref, rlab = data(24)
    tup = mine(_miners()[miner], emb, lab)
    parity(lambda e: jm.nca_loss(e, mask_of(tup, B), labels=J(lab)), pml_losses.NCALoss(), emb, lab, indices_tuple=tup)
    # With ref_emb only the anchors count (PML's convert_to_weights(using_ref=True)).
    rtup = mine(_miners()[miner], emb, lab, ref, rlab)
    parity(lambda e, r: jm.nca_loss(e, mask_of(rtup, B, R), labels=J(lab), ref_emb=r, ref_labels=J(rlab)),
           pml_losses.NCALoss(), emb, lab, indices_tuple=rtup, ref=ref, ref_labels=rlab)


def test_nca_empty_mask_is_zero_unlike_pml():
    """PML weights every query by 1 when the tuple is empty; jaxmetric gives 0 (pinned)."""
    emb, lab, _, _ = data(25)
    empty = jm.PairMask(jnp.zeros((B, B)), jnp.zeros((B, B)))
    v, g = jax.value_and_grad(lambda e: jm.nca_loss(e, empty, labels=J(lab)))(J(emb))
    assert float(v) == 0.0 and not np.any(np.asarray(g))
    none = tuple(torch.zeros(0, dtype=torch.long) for _ in range(4))
    assert float(pml_losses.NCALoss()(torch.tensor(emb), torch.tensor(lab), none)) > 0


# ----------------------------------------------------------------------------- instance

def test_instance_parity():
    emb, lab, _, _ = data(26)
    lab = np.array([7, 3, 3, 9, 7, 1, 1, 9, 3, 5, 7, 5])  # unsorted, gaps
    parity(lambda e: jm.instance_loss(e, J(lab)), pml_losses.InstanceLoss(), emb, lab)
    parity(lambda e: jm.instance_loss(e, J(lab), gamma=8.0, reduction="sum"),
           pml_losses.InstanceLoss(gamma=8.0, reducer=jm_sum_reducer()), emb, lab)


def jm_sum_reducer():
    from pytorch_metric_learning.reducers import SumReducer

    return SumReducer()


def test_instance_where_interleaved_padding():
    emb, lab, _, _ = data(27)
    lab = np.array([7, 3, 3, 9, 7, 1, 1, 9, 3, 5, 7, 5])
    rng = np.random.default_rng(0)
    pad_at = np.array([0, 4, 9, 14])
    n = B + len(pad_at)
    real = np.ones(n, bool)
    real[pad_at] = False
    emb_p = rng.normal(size=(n, emb.shape[1]))
    lab_p = rng.integers(0, 3, n)
    emb_p[real], lab_p[real] = emb, lab

    def f(e, lb, w):
        return jm.instance_loss(e, lb, where=w)

    v0, g0 = jax.value_and_grad(lambda e: jm.instance_loss(e, J(lab)))(J(emb))
    v1, g1 = jax.value_and_grad(lambda e: f(e, J(lab_p), J(real)))(J(emb_p))
    assert_close(v1, v0)
    assert_close(np.asarray(g1)[real], g0)
    assert not np.any(np.asarray(g1)[~real])


def test_instance_errors():
    emb, lab, ref, _ = data(28)
    with pytest.raises(ValueError, match="ref_emb"):
        jm.instance_loss(J(emb), J(lab), ref_emb=J(ref))
    with pytest.raises(TypeError, match="PairMask"):
        jm.instance_loss(J(emb), jm.pair_mask(J(lab)))
    with pytest.raises(ValueError, match="class ids"):
        jm.instance_loss(J(emb), jax.nn.one_hot(J(lab), 4))
    with pytest.raises(TypeError, match="CosineSimilarity"):
        jm.instance_loss(J(emb), J(lab), distance=jm.LpDistance())
