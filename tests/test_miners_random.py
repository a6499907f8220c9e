"""Random miners (distance_weighted_miner, uniform_histogram_miner): PRNGs differ from torch,
so the distribution of selections is compared with PML's (chi-square goodness of fit of both
against the selection probabilities PML's code implies), the deterministic parts exactly, and
the mined losses with PML on the same selection."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jaxmetric as jm
from tests.pml_utils import assert_close, jax_value_and_grads, pml_losses, pml_miners, pml_value_and_grads, to_torch, torch

B, D, C = 24, 8, 4
DRAWS = 400
P_MIN = 1e-3


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(21)
    emb = rng.normal(size=(B, D))
    labels = rng.integers(0, C, B)
    return emb, labels


def _dw_probabilities(emb, labels, cutoff=0.5, nonzero_loss_cutoff=1.4):
    """PML DistanceWeightedMiner's negative-sampling probabilities, from its formula (float64)."""
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    d = np.sqrt(np.maximum(((x[:, None] - x[None]) ** 2).sum(-1), 0))
    d = np.maximum(d, cutoff)
    dim = emb.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        logw = (2 - dim) * np.log(d) - ((dim - 3) / 2) * np.log(1 - 0.25 * d**2)
    ok = (labels[:, None] != labels[None]) & np.isfinite(logw) & (d < nonzero_loss_cutoff)
    logw = np.where(ok, logw, -np.inf)
    w = np.exp(logw - logw.max(1, keepdims=True))
    return w / w.sum(1, keepdims=True)


def _gof(counts, probs):
    """Pooled chi-square goodness of fit over rows (cells with expectation < 5 merged per row)."""
    stat, dof = 0.0, 0
    for c, p in zip(counts, probs):
        n = c.sum()
        if n == 0:
            continue
        keep = p > 0
        assert c[~keep].sum() == 0, "a zero-probability cell was drawn"
        c, e = c[keep], p[keep] * n
        order = np.argsort(e)
        c, e = c[order], e[order]
        small = np.cumsum(e) < 5
        if small.any():
            c = np.concatenate([[c[small].sum()], c[~small]])
            e = np.concatenate([[e[small].sum()], e[~small]])
        stat += float(((c - e) ** 2 / e).sum())
        dof += len(c) - 1
    return stats.chi2.sf(stat, dof) if dof > 0 else 1.0


@pytest.fixture(scope="module")
def dw_draws(data):
    emb, labels = data
    e, lab = jnp.asarray(emb), jnp.asarray(labels)
    keys = jax.random.split(jax.random.key(0), DRAWS)
    masks = jax.jit(jax.vmap(lambda k: jm.distance_weighted_miner(e, lab, key=k)))(keys)
    # jit of vmap over keys = eager calls key by key
    one = jm.distance_weighted_miner(e, lab, key=keys[1])
    for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(masks)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b[1]))
    assert not np.array_equal(np.asarray(masks.n_idx[0]), np.asarray(masks.n_idx[1]))
    pairs = jax.jit(jax.vmap(lambda m: m.to_pairs()))(masks)
    jax_pos, jax_neg = np.asarray(pairs.pos).sum(0), np.asarray(pairs.neg).sum(0)
    pml_pos, pml_neg = np.zeros((B, B)), np.zeros((B, B))
    miner = pml_miners.DistanceWeightedMiner()
    torch.manual_seed(0)
    te, tl = to_torch(emb), torch.as_tensor(labels)
    for _ in range(DRAWS):
        a, p, n = (t.numpy() for t in miner(te, tl))
        np.add.at(pml_pos, (a, p), 1)
        np.add.at(pml_neg, (a, n), 1)
    return jax_pos, jax_neg, pml_pos, pml_neg


@pytest.mark.pml
def test_distance_weighted_negative_distribution(data, dw_draws):
    emb, labels = data
    jax_pos, jax_neg, pml_pos, pml_neg = dw_draws
    probs = _dw_probabilities(emb, labels)
    assert _gof(pml_neg, probs) > P_MIN  # the formula is PML's
    assert _gof(jax_neg, probs) > P_MIN  # jaxmetric draws from it
    # Same number of triplets per anchor (deterministic: class size) and the same anchors.
    np.testing.assert_array_equal(jax_pos.sum(1), pml_pos.sum(1))
    np.testing.assert_array_equal(jax_neg.sum(1), pml_neg.sum(1))


@pytest.mark.pml
def test_distance_weighted_positives_uniform(data, dw_draws):
    _, labels = data
    jax_pos, _, pml_pos, _ = dw_draws
    same = (labels[:, None] == labels[None]) & ~np.eye(B, dtype=bool)
    probs = same / np.maximum(same.sum(1, keepdims=True), 1)
    assert _gof(pml_pos, probs) > P_MIN
    assert _gof(jax_pos, probs) > P_MIN


def _hist_bins(vals, num_bins):
    edges = np.linspace(vals.min(), vals.max(), num_bins + 1)
    return np.clip(np.searchsorted(edges, vals, side="right") - 1, 0, num_bins - 1)


@pytest.mark.pml
def test_uniform_histogram_distribution(data):
    emb, labels = data
    nb, ppb, npb = 6, 3, 5
    e, lab = jnp.asarray(emb), jnp.asarray(labels)
    keys = jax.random.split(jax.random.key(1), DRAWS)
    masks = jax.jit(jax.vmap(lambda k: jm.uniform_histogram_miner(e, lab, num_bins=nb, pos_per_bin=ppb, neg_per_bin=npb, key=k)))(keys)
    jpos, jneg = np.asarray(masks.pos), np.asarray(masks.neg)
    one = jm.uniform_histogram_miner(e, lab, num_bins=nb, pos_per_bin=ppb, neg_per_bin=npb, key=keys[1])  # eager = vmapped
    np.testing.assert_array_equal(np.asarray(one.pos), jpos[1])
    np.testing.assert_array_equal(np.asarray(one.neg), jneg[1])
    assert not np.array_equal(jneg[0], jneg[1])
    miner = pml_miners.UniformHistogramMiner(num_bins=nb, pos_per_bin=ppb, neg_per_bin=npb)
    torch.manual_seed(1)
    te, tl = to_torch(emb), torch.as_tensor(labels)
    ppos, pneg = np.zeros((B, B)), np.zeros((B, B))
    lens = set()
    for _ in range(DRAWS):
        a1, p, a2, n = (t.numpy() for t in miner(te, tl))
        lens.add((len(a1), len(a2)))
        np.add.at(ppos, (a1, p), 1)
        np.add.at(pneg, (a2, n), 1)
    # Deterministic part: per_bin draws from each non-empty bin, as PML.
    assert lens == {(int(jpos[0].sum()), int(jneg[0].sum()))}
    assert np.all(jpos.sum((1, 2)) == jpos[0].sum()) and np.all(jneg.sum((1, 2)) == jneg[0].sum())
    mat = np.asarray(jm.LpDistance()(e, e))
    pm = jm.pair_mask(lab)
    for sel, jc, pc in ((np.asarray(pm.pos) > 0, jpos.sum(0), ppos), (np.asarray(pm.neg) > 0, jneg.sum(0), pneg)):
        bins = _hist_bins(mat[sel], nb)
        # uniform within each bin: one GOF row per bin
        rows_j = [jc[sel][bins == k] for k in range(nb) if (bins == k).any()]
        rows_p = [pc[sel][bins == k] for k in range(nb) if (bins == k).any()]
        probs = [np.full(len(r), 1.0 / len(r)) for r in rows_j]
        assert _gof(rows_p, probs) > P_MIN
        assert _gof(rows_j, probs) > P_MIN
        # no pair outside the candidate set is drawn
        assert jc[~sel].sum() == 0


def _list_to_tuple(m: jm.TripletMask):
    w = np.asarray(m.weights).astype(int)
    a = np.repeat(np.arange(w.shape[0])[:, None], w.shape[1], 1)
    rep = w.ravel()
    return tuple(np.repeat(x.ravel(), rep) for x in (a, np.asarray(m.p_idx), np.asarray(m.n_idx)))


def _pairs_to_tuple(m: jm.PairMask):
    out = []
    for w in (np.asarray(m.pos).astype(int), np.asarray(m.neg).astype(int)):
        a, o = np.nonzero(w)
        rep = w[a, o]
        out += [np.repeat(a, rep), np.repeat(o, rep)]
    return tuple(out)


LOSSES = {
    "contrastive": (jm.contrastive_loss, lambda: pml_losses.ContrastiveLoss()),
    "triplet": (jm.triplet_margin_loss, lambda: pml_losses.TripletMarginLoss(margin=0.3)),
    "multi_similarity": (jm.multi_similarity_loss, lambda: pml_losses.MultiSimilarityLoss()),
    "circle": (jm.circle_loss, lambda: pml_losses.CircleLoss()),
    "ntxent": (jm.ntxent_loss, lambda: pml_losses.NTXentLoss()),
    "supcon": (jm.supcon_loss, lambda: pml_losses.SupConLoss()),
}


@pytest.mark.pml
@pytest.mark.parametrize("miner", ["distance_weighted", "uniform_histogram"])
@pytest.mark.parametrize("loss_name", list(LOSSES))
def test_random_mined_loss_matches_pml_on_same_selection(data, loss_name, miner):
    emb, labels = data
    e, lab = jnp.asarray(emb), jnp.asarray(labels)
    key = jax.random.key(7)
    if miner == "distance_weighted":
        make = lambda x: jm.distance_weighted_miner(x, lab, key=key)
        tup = _list_to_tuple(make(e))
    else:
        make = lambda x: jm.uniform_histogram_miner(x, lab, num_bins=6, pos_per_bin=3, neg_per_bin=5, key=key)
        tup = _pairs_to_tuple(make(e))
    jl, pl = LOSSES[loss_name]
    kw = dict(margin=0.3) if loss_name == "triplet" else {}
    pv, pg, _, _ = pml_value_and_grads(pl(), emb, labels, indices_tuple=tup)
    jv, jg, _ = jax_value_and_grads(lambda x: jl(x, make(x), **kw), emb)
    assert pv != 0.0
    assert_close(jv, pv)
    assert_close(jg, pg)


def test_random_miners_respect_where(data):
    emb, labels = data
    e, lab = jnp.asarray(emb), jnp.asarray(labels)
    w = np.arange(B) % 4 != 1
    for m in (
        jm.distance_weighted_miner(e, lab, key=jax.random.key(3), where=jnp.asarray(w)).to_pairs(),
        jm.uniform_histogram_miner(e, lab, num_bins=6, pos_per_bin=3, neg_per_bin=5, key=jax.random.key(3), where=jnp.asarray(w)),
    ):
        for x in (np.asarray(m.pos), np.asarray(m.neg)):
            assert x.sum() > 0
            assert x[~w].sum() == 0 and x[:, ~w].sum() == 0


@pytest.mark.pml
def test_distance_weighted_float32_keeps_far_anchors():
    """Pinned difference: PML shifts the log-weights by one batch-wide maximum, so in float32 an
    anchor whose negatives are all far gets weights exp(-180) = 0 and is dropped; jaxmetric shifts
    per anchor and keeps it, as PML does in float64."""
    dim = 256
    e = np.eye(dim)[:8]
    a1, a2 = e[0], np.cos(0.1) * e[0] + np.sin(0.1) * e[1]
    b1 = 0.089 * e[0] + np.sqrt(1 - 0.089**2) * e[2]
    b2 = (b1 + 0.05 * e[3]) / np.linalg.norm(b1 + 0.05 * e[3])
    c1 = 0.875 * b1 + np.sqrt(1 - 0.875**2) * e[4]  # ||b1 - c1|| = 0.5: the batch-wide maximum weight
    c2 = (c1 + 0.05 * e[5]) / np.linalg.norm(c1 + 0.05 * e[5])
    emb = np.stack([a1, a2, b1, b2, c1, c2])
    labels = np.array([0, 0, 1, 1, 2, 2])
    anchors = {}
    for dt in (torch.float32, torch.float64):
        torch.manual_seed(0)
        a, _, _ = pml_miners.DistanceWeightedMiner()(torch.tensor(emb, dtype=dt), torch.as_tensor(labels))
        anchors[dt] = set(a.numpy().tolist())
    assert 0 not in anchors[torch.float32] and 0 in anchors[torch.float64]
    m = jm.distance_weighted_miner(jnp.asarray(emb, jnp.float32), jnp.asarray(labels), key=jax.random.key(0))
    kept = set(np.flatnonzero(np.asarray(m.weights).sum(1) > 0).tolist())
    assert kept == anchors[torch.float64] == {0, 1, 2, 3, 4, 5}
