"""Parity with PML 2.9 (float64, value and gradient) of contrastive, triplet margin,
multi-similarity, circle, NT-Xent and SupCon: labels, reference sets, index-tuple masks, edge
batches, triplet sampling and the pinned differences."""
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from tests.pml_utils import (
    assert_close,
    jax_value_and_grads,
    pml_distances,
    pml_losses,
    pml_miners,
    pml_value_and_grads,
    torch,
)

pytestmark = pytest.mark.pml

D = pml_distances

# (id, PML constructor, jaxmetric function, jaxmetric kwargs)
CASES = [
    ("contrastive-default", lambda: pml_losses.ContrastiveLoss(), jm.contrastive_loss, {}),
    ("contrastive-margins-cos", lambda: pml_losses.ContrastiveLoss(pos_margin=0.9, neg_margin=0.3, distance=D.CosineSimilarity()),
     jm.contrastive_loss, dict(pos_margin=0.9, neg_margin=0.3, distance=jm.CosineSimilarity())),
    ("contrastive-sq-l2", lambda: pml_losses.ContrastiveLoss(pos_margin=0.2, neg_margin=1.5, distance=D.LpDistance(power=2)),
     jm.contrastive_loss, dict(pos_margin=0.2, neg_margin=1.5, distance=jm.LpDistance(power=2))),
    ("contrastive-unnormalized-l1", lambda: pml_losses.ContrastiveLoss(neg_margin=4.0, distance=D.LpDistance(p=1, normalize_embeddings=False)),
     jm.contrastive_loss, dict(neg_margin=4.0, distance=jm.LpDistance(p=1, normalize_embeddings=False))),
    ("triplet-default", lambda: pml_losses.TripletMarginLoss(), jm.triplet_margin_loss, {}),
    ("triplet-margin-swap", lambda: pml_losses.TripletMarginLoss(margin=0.3, swap=True), jm.triplet_margin_loss, dict(margin=0.3, swap=True)),
    ("triplet-smooth", lambda: pml_losses.TripletMarginLoss(margin=0.2, smooth_loss=True), jm.triplet_margin_loss, dict(margin=0.2, smooth_loss=True)),
    ("triplet-cosine", lambda: pml_losses.TripletMarginLoss(margin=0.1, distance=D.CosineSimilarity()),
     jm.triplet_margin_loss, dict(margin=0.1, distance=jm.CosineSimilarity())),
    ("triplet-snr-swap-cos", lambda: pml_losses.TripletMarginLoss(margin=0.4, swap=True, distance=D.DotProductSimilarity(normalize_embeddings=False)),
     jm.triplet_margin_loss, dict(margin=0.4, swap=True, distance=jm.DotProductSimilarity(normalize_embeddings=False))),
    ("ms-default", lambda: pml_losses.MultiSimilarityLoss(), jm.multi_similarity_loss, {}),
    ("ms-params-l2", lambda: pml_losses.MultiSimilarityLoss(alpha=1.5, beta=20, base=0.8, distance=D.LpDistance()),
     jm.multi_similarity_loss, dict(alpha=1.5, beta=20.0, base=0.8, distance=jm.LpDistance())),
    ("circle-default", lambda: pml_losses.CircleLoss(), jm.circle_loss, {}),
    ("circle-params", lambda: pml_losses.CircleLoss(m=0.25, gamma=256), jm.circle_loss, dict(m=0.25, gamma=256.0)),
    ("ntxent-default", lambda: pml_losses.NTXentLoss(), jm.ntxent_loss, {}),
    ("ntxent-temp-l2", lambda: pml_losses.NTXentLoss(temperature=0.5, distance=D.LpDistance()),
     jm.ntxent_loss, dict(temperature=0.5, distance=jm.LpDistance())),
    ("supcon-default", lambda: pml_losses.SupConLoss(), jm.supcon_loss, {}),
    ("supcon-temp-dot", lambda: pml_losses.SupConLoss(temperature=0.3, distance=D.DotProductSimilarity(normalize_embeddings=False)),
     jm.supcon_loss, dict(temperature=0.3, distance=jm.DotProductSimilarity(normalize_embeddings=False))),
    ("supcon-snr", lambda: pml_losses.SupConLoss(distance=D.SNRDistance()), jm.supcon_loss, dict(distance=jm.SNRDistance())),
    ("contrastive-snr", lambda: pml_losses.ContrastiveLoss(distance=D.SNRDistance()), jm.contrastive_loss, dict(distance=jm.SNRDistance())),
]
IDS = [c[0] for c in CASES]


def _data(seed, b=24, dim=8, classes=5, r=None):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(b, dim))
    labels = rng.integers(0, classes, b)
    if r is None:
        return emb, labels
    return emb, labels, rng.normal(size=(r, dim)), rng.integers(0, classes, r)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_labels(case, seed):
    _, ctor, fn, kw = case
    emb, labels = _data(seed)
    v, g, _, _ = pml_value_and_grads(ctor(), emb, labels)
    jv, jg, _ = jax_value_and_grads(lambda e: fn(e, jnp.asarray(labels), **kw), emb)
    assert v > 0
    assert_close(jv, v, what="value")
    assert_close(jg, g, atol=1e-9, what="gradient")


# PML's swap indexes query rows with reference ids: pinned in test_swap_with_ref_differs_...
REF_CASES = [c for c in CASES if "swap" not in c[0]]


@pytest.mark.parametrize("case", REF_CASES, ids=[c[0] for c in REF_CASES])
def test_ref_emb(case):
    name, ctor, fn, kw = case
    emb, labels, ref, ref_labels = _data(3, b=12, r=20)
    v, g, gr, _ = pml_value_and_grads(ctor(), emb, labels, ref_emb=ref, ref_labels=ref_labels)
    jv, jg, jgr = jax_value_and_grads(
        lambda e, r: fn(e, jnp.asarray(labels), ref_emb=r, ref_labels=jnp.asarray(ref_labels), **kw), emb, ref
    )
    assert_close(jv, v, what="value")
    assert_close(jg, g, what="gradient wrt embeddings")
    assert_close(jgr, gr, what="gradient wrt ref_emb")


def _mined_tuples(emb, labels):
    t = torch.tensor(emb)
    lab = torch.tensor(labels)
    pairs = pml_miners.MultiSimilarityMiner(epsilon=0.3)(t, lab)
    triplets = pml_miners.TripletMarginMiner(margin=0.3, type_of_triplets="semihard")(t, lab)
    return [tuple(x.numpy() for x in pairs), tuple(x.numpy() for x in triplets)]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_masks_from_index_tuples(case):
    """A PairMask / TripletMask from the same tuple PML gets gives PML's value and gradient."""
    _, ctor, fn, kw = case
    emb, labels = _data(7, b=20)
    for tup in _mined_tuples(emb, labels):
        assert len(tup[0]) > 1
        v, g, _, _ = pml_value_and_grads(ctor(), emb, labels, indices_tuple=tup)
        mask = jm.from_indices(tup, len(emb))
        jv, jg, _ = jax_value_and_grads(lambda e: fn(e, mask, **kw), emb)
        assert_close(jv, v, what=f"value, tuple of arity {len(tup)}")
        assert_close(jg, g, what=f"gradient, tuple of arity {len(tup)}")


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("labels", [np.zeros(10, int), np.arange(10)], ids=["one-class", "all-distinct"])
def test_edge_batches(case, labels):
    _, ctor, fn, kw = case
    emb = np.random.default_rng(11).normal(size=(10, 6))
    v, g, _, _ = pml_value_and_grads(ctor(), emb, labels)
    jv, jg, _ = jax_value_and_grads(lambda e: fn(e, jnp.asarray(labels), **kw), emb)
    assert np.isfinite(jv) and np.all(np.isfinite(jg))
    assert_close(jv, v, what="value")
    assert_close(jg, g, what="gradient")


def test_triplets_per_anchor_sampling_matches_expectation():
    """Random triplets per anchor (uniform positive, uniform negative; PML's sampling, other
    PRNG): the sampled mean estimates the mean over anchors of each anchor's triplet mean."""
    import jax

    emb, labels = _data(5, b=16, classes=3)
    terms = np.asarray(jm.triplet_margin_loss(jnp.asarray(emb), jnp.asarray(labels), margin=0.5, reduction="none"))
    w = (labels[:, None, None] == labels[None, :, None]) & (labels[:, None, None] != labels[None, None, :])
    w &= ~np.eye(16, dtype=bool)[:, :, None]
    per_anchor = (terms * w).sum((1, 2)) / w.sum((1, 2))
    dense = per_anchor.mean()
    vals = [
        float(jm.triplet_margin_loss(jnp.asarray(emb), jnp.asarray(labels), margin=0.5, reduction="mean",
                                     triplets_per_anchor=50, key=jax.random.PRNGKey(i)))
        for i in range(20)
    ]
    assert abs(np.mean(vals) - dense) < 0.03 * dense


def test_swap_with_ref_differs_from_pml_by_design():
    """With ref_emb, jaxmetric's swap uses d(ref_p, ref_n); PML reads query row p of mat."""
    emb, labels, ref, ref_labels = _data(4, b=12, r=12)
    e, r = jnp.asarray(emb), jnp.asarray(ref)
    got = float(jm.triplet_margin_loss(e, jnp.asarray(labels), swap=True, margin=0.5, ref_emb=r, ref_labels=jnp.asarray(ref_labels)))
    # By hand: all triplets (a in queries, p/n in refs), d_an <- min(d_an, d(ref_p, ref_n)).
    dist = jm.LpDistance()
    d = np.asarray(dist(e, r))
    dpn = np.asarray(dist(r, r))
    terms = []
    for a in range(12):
        for p in range(12):
            for n in range(12):
                if ref_labels[p] == labels[a] and ref_labels[n] != labels[a]:
                    terms.append(max(d[a, p] - min(d[a, n], dpn[p, n]) + 0.5, 0.0))
    terms = np.array(terms)
    assert_close(got, terms[terms > 0].mean())
    v, _, _, _ = pml_value_and_grads(pml_losses.TripletMarginLoss(swap=True, margin=0.5), emb, labels, ref_emb=ref, ref_labels=ref_labels)
    assert abs(v - got) > 1e-6  # PML's mat[p, n] is the query-vs-ref distance: a different number


def test_single_pair_tuple_differs_from_pml_by_design():
    """PML returns 0 when a tuple has at most one positive and one negative pair."""
    emb = np.random.default_rng(2).normal(size=(4, 5))
    tup = (np.array([0]), np.array([1]), np.array([0]), np.array([2]))
    v, _, _, _ = pml_value_and_grads(pml_losses.ContrastiveLoss(), emb, None, indices_tuple=tup)
    assert v == 0.0
    got = float(jm.contrastive_loss(jnp.asarray(emb), jm.from_indices(tup, 4)))
    d = np.asarray(jm.LpDistance()(jnp.asarray(emb)))
    expected = d[0, 1] + (max(1 - d[0, 2], 0) if 1 - d[0, 2] > 0 else 0)
    assert_close(got, expected)
    assert got > 0
