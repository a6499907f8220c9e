"""Deterministic miners: selection parity with PML 2.9, mined-loss parity (value and gradient),
inputs (multi-hot, PairMask, where, ref_emb), jit/vmap, errors. Float64 throughout."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from tests.pml_utils import assert_close, pml_distances, pml_losses, pml_miners, pml_value_and_grads, to_torch, torch

B, R, D, C = 24, 20, 8, 4

DIST = {
    "lp": (jm.LpDistance(), lambda: pml_distances.LpDistance()),
    "cos": (jm.CosineSimilarity(), lambda: pml_distances.CosineSimilarity()),
    "lp2": (jm.LpDistance(power=2), lambda: pml_distances.LpDistance(power=2)),
    "dot": (jm.DotProductSimilarity(normalize_embeddings=False), lambda: pml_distances.DotProductSimilarity(normalize_embeddings=False)),
}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(B, D))
    labels = rng.integers(0, C, B)
    ref = rng.normal(size=(R, D))
    ref_labels = rng.integers(0, C, R)
    return emb, labels, ref, ref_labels


def pml_mine(miner, emb, labels, ref=None, ref_labels=None):
    kw = {}
    if ref is not None:
        kw = dict(ref_emb=to_torch(ref), ref_labels=torch.as_tensor(ref_labels))
    return miner(to_torch(emb), torch.as_tensor(labels), **kw)


def tuple_to_mask(tup, nq, nr):
    return jm.from_indices(tuple(jnp.asarray(t.numpy()) for t in tup), nq, nr, dtype=jnp.float64)


def assert_same_selection(mined, tup, nq, nr, symmetric_ties=False):
    """The jaxmetric mask selects exactly PML's tuple (as multiplicities).

    ``symmetric_ties``: a global top-k (HDC) may cut between the twins (i, j) and (j, i), whose
    distances are equal; PML's torch.topk breaks that tie arbitrarily, jaxmetric by index. Then
    the selections are compared up to twins (``M + M.T``)."""
    ref = tuple_to_mask(tup, nq, nr)
    if symmetric_ties:
        for a, b in ((mined.pos, ref.pos), (mined.neg, ref.neg)):
            a, b = np.asarray(a), np.asarray(b)
            np.testing.assert_array_equal(a + a.T, b + b.T)
        return
    if isinstance(mined, jm.TripletMask):
        assert isinstance(ref, jm.TripletMask)
        np.testing.assert_array_equal(np.asarray(mined.to_dense()), np.asarray(ref.weights))
        # and the cube-free pair conversion agrees with PML's convert_to_pairs
        pairs, ref_pairs = mined.to_pairs(), ref.to_pairs()
        np.testing.assert_array_equal(np.asarray(pairs.pos), np.asarray(ref_pairs.pos))
        np.testing.assert_array_equal(np.asarray(pairs.neg), np.asarray(ref_pairs.neg))
        return
    if isinstance(ref, jm.TripletMask):  # batch-hard: PML triplets, jaxmetric per-anchor pairs
        cube = np.asarray(mined.pos)[:, :, None] * np.asarray(mined.neg)[:, None, :]
        np.testing.assert_array_equal(cube, np.asarray(ref.weights))
        ref = ref.to_pairs()
    np.testing.assert_array_equal(np.asarray(mined.pos), np.asarray(ref.pos))
    np.testing.assert_array_equal(np.asarray(mined.neg), np.asarray(ref.neg))


# (name, jaxmetric miner, PML class, kwargs shared by both, distance key)
SELECTION_CASES = [
    ("pair_margin", jm.pair_margin_miner, "PairMarginMiner", {}, "lp"),
    ("pair_margin_cos", jm.pair_margin_miner, "PairMarginMiner", dict(pos_margin=0.6, neg_margin=0.1), "cos"),
    ("ms", jm.multi_similarity_miner, "MultiSimilarityMiner", {}, "cos"),
    ("ms_lp", jm.multi_similarity_miner, "MultiSimilarityMiner", dict(epsilon=0.3), "lp"),
    ("ms_dot", jm.multi_similarity_miner, "MultiSimilarityMiner", dict(epsilon=1.0), "dot"),
    ("hdc", jm.hdc_miner, "HDCMiner", {}, "lp"),
    ("hdc_cos", jm.hdc_miner, "HDCMiner", dict(filter_percentage=0.3), "cos"),
    ("hdc_lp2", jm.hdc_miner, "HDCMiner", dict(filter_percentage=1.0), "lp2"),
    ("batch_hard", jm.batch_hard_miner, "BatchHardMiner", {}, "lp"),
    ("batch_hard_cos", jm.batch_hard_miner, "BatchHardMiner", {}, "cos"),
    ("batch_hard_dot", jm.batch_hard_miner, "BatchHardMiner", {}, "dot"),
    ("batch_hard_range", jm.batch_hard_miner, "BatchHardMiner", dict(allowed_pos_range=(0.0, 1.2), allowed_neg_range=(0.7, 2.0)), "lp"),
    ("beh_default", jm.batch_easy_hard_miner, "BatchEasyHardMiner", {}, "lp"),
    ("beh_ranges", jm.batch_easy_hard_miner, "BatchEasyHardMiner",
     dict(pos_strategy="hard", neg_strategy="easy", allowed_pos_range=(0.3, 1.3), allowed_neg_range=(0.9, 1.7)), "lp"),
    ("beh_cos_ranges", jm.batch_easy_hard_miner, "BatchEasyHardMiner",
     dict(pos_strategy="semihard", neg_strategy="hard", allowed_neg_range=(-0.2, 0.6)), "cos"),
    ("tm_all", jm.triplet_margin_miner, "TripletMarginMiner", {}, "lp"),
    ("tm_hard_cos", jm.triplet_margin_miner, "TripletMarginMiner", dict(type_of_triplets="hard", margin=0.1), "cos"),
    ("tm_semihard", jm.triplet_margin_miner, "TripletMarginMiner", dict(type_of_triplets="semihard"), "lp"),
    ("tm_semihard_cos", jm.triplet_margin_miner, "TripletMarginMiner", dict(type_of_triplets="semihard", margin=0.3), "cos"),
    ("tm_easy_lp2", jm.triplet_margin_miner, "TripletMarginMiner", dict(type_of_triplets="easy", margin=0.4), "lp2"),
    ("tm_hard_negmargin", jm.triplet_margin_miner, "TripletMarginMiner", dict(type_of_triplets="hard", margin=-0.1), "lp"),
    ("angular", jm.angular_miner, "AngularMiner", {}, "lp"),
    ("angular_35", jm.angular_miner, "AngularMiner", dict(angle=35), "lp"),
]


REF_CASES = {"pair_margin_cos", "ms", "hdc", "batch_hard", "beh_ranges", "beh_cos_ranges", "tm_all", "tm_semihard_cos", "angular"}
SELECTION_GRID = [c + (False,) for c in SELECTION_CASES] + [c + (True,) for c in SELECTION_CASES if c[0] in REF_CASES]


@pytest.mark.pml
@pytest.mark.parametrize("name,fn,cls,kw,dist,use_ref", SELECTION_GRID, ids=[c[0] + ("-ref" if c[-1] else "") for c in SELECTION_GRID])
def test_selection_matches_pml(data, name, fn, cls, kw, dist, use_ref):
    emb, labels, ref, ref_labels = data
    jd, pd = DIST[dist]
    pml_kw = dict(kw)
    tup = pml_mine(getattr(pml_miners, cls)(distance=pd(), **pml_kw), emb, labels, *( (ref, ref_labels) if use_ref else ()))
    jkw = dict(kw, distance=jd)
    if use_ref:
        jkw.update(ref_emb=jnp.asarray(ref), ref_labels=jnp.asarray(ref_labels))
    mined = fn(jnp.asarray(emb), jnp.asarray(labels), **jkw)
    assert sum(len(t) for t in tup) > 0, "degenerate case: PML selected nothing"
    assert_same_selection(mined, tup, B, R if use_ref else B, symmetric_ties=name.startswith("hdc") and not use_ref)


STRATEGIES = ["hard", "semihard", "easy", "all"]


@pytest.mark.pml
@pytest.mark.parametrize("dist", ["lp", "cos"])
def test_batch_easy_hard_all_strategies(data, dist):
    emb, labels, _, _ = data
    jd, pd = DIST[dist]
    checked = 0
    for ps in STRATEGIES:
        for ns in STRATEGIES:
            try:
                miner = pml_miners.BatchEasyHardMiner(pos_strategy=ps, neg_strategy=ns, distance=pd())
            except ValueError:
                with pytest.raises(ValueError, match="semihard"):
                    jm.batch_easy_hard_miner(emb, labels, pos_strategy=ps, neg_strategy=ns, distance=jd)
                continue
            tup = pml_mine(miner, emb, labels)
            mined = jm.batch_easy_hard_miner(jnp.asarray(emb), jnp.asarray(labels), pos_strategy=ps, neg_strategy=ns, distance=jd)
            assert_same_selection(mined, tup, B, B)
            checked += 1
    assert checked == 13


@pytest.mark.pml
def test_packaged_triplets_match_pml(data):
    emb, labels, _, _ = data
    e = emb[:18]
    tup = pml_mine(pml_miners.EmbeddingsAlreadyPackagedAsTriplets(), e, labels[:18])
    mined = jm.embeddings_already_packaged_as_triplets(jnp.asarray(e), jnp.asarray(labels[:18]))
    assert mined.form == "list"
    assert_same_selection(mined, tup, 18, 18)


# --------------------------------------------------------------------------------------------
# Mined losses: loss(emb, miner(emb, labels)) == PML loss(emb, labels, miner(emb, labels))
# --------------------------------------------------------------------------------------------

LOSSES = {
    "contrastive": (jm.contrastive_loss, lambda: pml_losses.ContrastiveLoss()),
    "triplet": (jm.triplet_margin_loss, lambda: pml_losses.TripletMarginLoss()),
    "multi_similarity": (jm.multi_similarity_loss, lambda: pml_losses.MultiSimilarityLoss()),
    "circle": (jm.circle_loss, lambda: pml_losses.CircleLoss()),
    "ntxent": (jm.ntxent_loss, lambda: pml_losses.NTXentLoss()),
    "supcon": (jm.supcon_loss, lambda: pml_losses.SupConLoss()),
}

MINERS = {
    "batch_hard": (jm.batch_hard_miner, lambda: pml_miners.BatchHardMiner(), {}),
    "batch_easy_hard_all": (jm.batch_easy_hard_miner, lambda: pml_miners.BatchEasyHardMiner(pos_strategy="all", neg_strategy="hard"),
                            dict(pos_strategy="all", neg_strategy="hard")),
    "triplet_margin": (jm.triplet_margin_miner, lambda: pml_miners.TripletMarginMiner(), {}),
    "triplet_semihard": (jm.triplet_margin_miner, lambda: pml_miners.TripletMarginMiner(type_of_triplets="semihard"),
                         dict(type_of_triplets="semihard")),
    "multi_similarity": (jm.multi_similarity_miner, lambda: pml_miners.MultiSimilarityMiner(), {}),
    "pair_margin": (jm.pair_margin_miner, lambda: pml_miners.PairMarginMiner(), {}),
    "hdc": (jm.hdc_miner, lambda: pml_miners.HDCMiner(), {}),
    "angular": (jm.angular_miner, lambda: pml_miners.AngularMiner(), {}),
}


def check_mined_loss(loss_name, miner_name, emb, labels, ref=None, ref_labels=None, loss_kw=None, pml_loss=None):
    jl, pl = LOSSES[loss_name]
    jmin, pmin, mkw = MINERS[miner_name]
    loss_kw = loss_kw or {}
    tup = pml_mine(pmin(), emb, labels, ref, ref_labels)
    pv, pg, pgr, _ = pml_value_and_grads((pml_loss or pl)(), emb, labels, indices_tuple=tup, ref_emb=ref, ref_labels=ref_labels)
    lab = jnp.asarray(labels)
    if ref is None:
        jv, jg, _ = _jvg(lambda e: jl(e, jmin(e, lab, **mkw), **loss_kw), emb)
    else:
        rl = jnp.asarray(ref_labels)
        jv, jg, jgr = _jvg(lambda e, r: jl(e, jmin(e, lab, ref_emb=r, ref_labels=rl, **mkw), ref_emb=r, **loss_kw), emb, ref)
        assert_close(jgr, pgr, what=f"{loss_name}+{miner_name} ref grad")
    assert pv != 0.0 or loss_name == "triplet", f"degenerate case for {loss_name}+{miner_name}"
    assert_close(jv, pv, what=f"{loss_name}+{miner_name} value")
    assert_close(jg, pg, what=f"{loss_name}+{miner_name} grad")


def _jvg(fn, emb, ref=None):
    from tests.pml_utils import jax_value_and_grads

    return jax_value_and_grads(fn, emb, ref)


@pytest.mark.pml
@pytest.mark.parametrize("miner_name", list(MINERS))
@pytest.mark.parametrize("loss_name", list(LOSSES))
def test_mined_loss_matches_pml(data, loss_name, miner_name):
    emb, labels, _, _ = data
    check_mined_loss(loss_name, miner_name, emb, labels)


@pytest.mark.pml
@pytest.mark.parametrize(
    "loss_name,miner_name",
    [("triplet", "triplet_semihard"), ("contrastive", "triplet_margin"), ("triplet", "batch_hard"),
     ("multi_similarity", "multi_similarity"), ("ntxent", "angular"), ("triplet", "angular")],
)
def test_mined_loss_with_ref_matches_pml(data, loss_name, miner_name):
    emb, labels, ref, ref_labels = data
    check_mined_loss(loss_name, miner_name, emb, labels, ref, ref_labels)


@pytest.mark.pml
@pytest.mark.parametrize(
    "miner_name,kw",
    [("triplet_margin", dict(margin=0.3, swap=True)), ("triplet_margin", dict(smooth_loss=True)),
     ("triplet_margin", dict(reduction="mean")), ("angular", dict(margin=0.2, reduction="sum")), ("angular", dict(swap=True))],
    ids=["tm-swap", "tm-smooth", "tm-mean", "angular-sum", "angular-swap"],
)
def test_triplet_loss_variants_on_compact_masks(data, miner_name, kw):
    emb, labels, _, _ = data
    red = {"mean": pml_reducers_mean, "sum": pml_reducers_sum}.get(kw.get("reduction"))
    pkw = {k: v for k, v in kw.items() if k != "reduction"}
    pml_loss = (lambda: pml_losses.TripletMarginLoss(reducer=red(), **pkw)) if red else (lambda: pml_losses.TripletMarginLoss(**pkw))
    check_mined_loss("triplet", miner_name, emb, labels, loss_kw=kw, pml_loss=pml_loss)


def pml_reducers_mean():
    from tests.pml_utils import pml_reducers

    return pml_reducers.MeanReducer()


def pml_reducers_sum():
    from tests.pml_utils import pml_reducers

    return pml_reducers.SumReducer()


@pytest.mark.pml
def test_mined_loss_cosine_miner_lp_loss(data):
    """Miner and loss with different distances (the sorted triplet path's order check)."""
    emb, labels, _, _ = data
    tup = pml_mine(pml_miners.TripletMarginMiner(type_of_triplets="semihard", margin=0.3, distance=pml_distances.CosineSimilarity()), emb, labels)
    pv, pg, _, _ = pml_value_and_grads(pml_losses.TripletMarginLoss(margin=0.1, distance=pml_distances.LpDistance(normalize_embeddings=False)), emb, labels, indices_tuple=tup)
    lab = jnp.asarray(labels)
    jv, jg, _ = _jvg(
        lambda e: jm.triplet_margin_loss(
            e, jm.triplet_margin_miner(e, lab, type_of_triplets="semihard", margin=0.3, distance=jm.CosineSimilarity()),
            margin=0.1, distance=jm.LpDistance(normalize_embeddings=False)),
        emb)
    assert_close(jv, pv)
    assert_close(jg, pg)


# --------------------------------------------------------------------------------------------
# Inputs: multi-hot, PairMask, where
# --------------------------------------------------------------------------------------------

ALL_DETERMINISTIC = [
    lambda e, l, **k: jm.batch_hard_miner(e, l, **k),
    lambda e, l, **k: jm.batch_easy_hard_miner(e, l, pos_strategy="semihard", neg_strategy="easy", **k),
    lambda e, l, **k: jm.triplet_margin_miner(e, l, type_of_triplets="semihard", **k),
    lambda e, l, **k: jm.multi_similarity_miner(e, l, **k),
    lambda e, l, **k: jm.pair_margin_miner(e, l, **k),
    lambda e, l, **k: jm.hdc_miner(e, l, **k),
    lambda e, l, **k: jm.angular_miner(e, l, **k),
]
DET_IDS = ["batch_hard", "batch_easy_hard", "triplet_margin", "multi_similarity", "pair_margin", "hdc", "angular"]


def _pairs(m):
    return m.to_pairs() if isinstance(m, jm.TripletMask) else m


@pytest.mark.parametrize("miner", ALL_DETERMINISTIC, ids=DET_IDS)
def test_labels_multihot_and_pairmask_agree(data, miner):
    emb, labels, _, _ = data
    e = jnp.asarray(emb)
    onehot = jax.nn.one_hot(labels, C, dtype=jnp.int32)
    a = _pairs(miner(e, jnp.asarray(labels)))
    b = _pairs(miner(e, onehot))
    c = _pairs(miner(e, jm.pair_mask(jnp.asarray(labels))))
    for m in (b, c):
        np.testing.assert_array_equal(np.asarray(a.pos), np.asarray(m.pos))
        np.testing.assert_array_equal(np.asarray(a.neg), np.asarray(m.neg))


@pytest.mark.parametrize("miner", ALL_DETERMINISTIC, ids=DET_IDS)
def test_where_equals_sub_batch(data, miner):
    emb, labels, _, _ = data
    keep = np.ones(B, bool)
    keep[[3, 10, 17, 22]] = False
    e, lab = jnp.asarray(emb), jnp.asarray(labels)
    full = _pairs(miner(e, lab, where=jnp.asarray(keep)))
    sub = _pairs(miner(e[keep], lab[keep]))
    idx = np.flatnonzero(keep)
    np.testing.assert_array_equal(np.asarray(full.pos)[np.ix_(idx, idx)], np.asarray(sub.pos))
    np.testing.assert_array_equal(np.asarray(full.neg)[np.ix_(idx, idx)], np.asarray(sub.neg))
    assert float(np.asarray(full.pos)[~keep].sum() + np.asarray(full.pos)[:, ~keep].sum()) == 0.0
    assert float(np.asarray(full.neg)[~keep].sum() + np.asarray(full.neg)[:, ~keep].sum()) == 0.0


def test_multilabel_mining_uses_shared_label_rule(data):
    rng = np.random.default_rng(1)
    emb = jnp.asarray(data[0])
    mh = jnp.asarray(rng.integers(0, 2, size=(B, 3)))
    m = jm.batch_hard_miner(emb, mh)
    pm = jm.pair_mask(mh)
    pos, neg = np.asarray(m.pos), np.asarray(m.neg)
    assert np.all(pos <= np.asarray(pm.pos)) and np.all(neg <= np.asarray(pm.neg))
    assert pos.sum() > 0
    mat = np.asarray(jm.LpDistance()(emb, emb))
    for a in range(B):
        if pos[a].any():
            cand = np.flatnonzero(np.asarray(pm.pos)[a])
            assert np.argmax(pos[a]) == cand[np.argmax(mat[a, cand])]


def test_weighted_pairs_flow_through(data):
    """Selected pairs keep their input weight (e.g. Jaccard-weighted positives)."""
    rng = np.random.default_rng(2)
    emb, lab = jnp.asarray(data[0]), jnp.asarray(data[1])
    base = jm.pair_mask(lab)
    w = jnp.asarray(rng.uniform(0.2, 1.0, size=(B, B)))
    weighted = jm.PairMask(pos=base.pos * w, neg=base.neg * 1.0)
    a = jm.pair_margin_miner(emb, base)
    b = jm.pair_margin_miner(emb, weighted)
    np.testing.assert_allclose(np.asarray(b.pos), np.asarray(a.pos) * np.asarray(w))


def test_hdc_cascade_with_triplet_mask_counts_duplicates(data):
    """HDC on a triplet mask filters its pairs as a list with repeats (PML set_idx_externally)."""
    emb, labels, _, _ = data
    e = jnp.asarray(emb)
    tm = jm.triplet_margin_miner(e, jnp.asarray(labels))
    tup = pml_mine(pml_miners.TripletMarginMiner(), emb, labels)
    hdc = pml_miners.HDCMiner(filter_percentage=0.4)
    hdc.set_idx_externally(tup, torch.as_tensor(labels))
    ref = pml_mine(hdc, emb, labels)
    mined = jm.hdc_miner(e, tm, filter_percentage=0.4)
    assert_same_selection(mined, ref, B, B, symmetric_ties=True)
    assert float(mined.pos.sum()) == len(ref[0]) and float(mined.neg.sum()) == len(ref[2])


# --------------------------------------------------------------------------------------------
# jit / vmap / gradients / errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("miner", ALL_DETERMINISTIC, ids=DET_IDS)
def test_jit_equals_eager(data, miner):
    emb, labels, _, _ = data
    e, lab = jnp.asarray(emb), jnp.asarray(labels)
    eager = _pairs(miner(e, lab))
    jitted = jax.jit(lambda e, l: _pairs(miner(e, l)))(e, lab)
    np.testing.assert_array_equal(np.asarray(eager.pos), np.asarray(jitted.pos))
    np.testing.assert_array_equal(np.asarray(eager.neg), np.asarray(jitted.neg))


VMAP_MINERS = [ALL_DETERMINISTIC[i] for i in (0, 2)]


@pytest.mark.parametrize("miner", VMAP_MINERS, ids=["batch_hard", "triplet_margin"])
def test_vmap_equals_loop(data, miner):
    rng = np.random.default_rng(3)
    emb = jnp.asarray(rng.normal(size=(2, B, D)))
    lab = jnp.asarray(rng.integers(0, C, size=(2, B)))

    def f(e, l):
        m = miner(e, l)
        return jm.triplet_margin_loss(e, m), jm.contrastive_loss(e, m)

    batched = jax.jit(jax.vmap(f))(emb, lab)
    for i in range(2):
        looped = f(emb[i], lab[i])
        for a, b in zip(batched, looped):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=1e-12)


def test_miner_output_has_no_gradient(data):
    emb, labels, _, _ = data
    lab = jnp.asarray(labels)

    def f(e):
        m = jm.triplet_margin_miner(e, lab)
        return jnp.sum(m.to_pairs().pos) + jnp.sum(m.x) + jnp.sum(jm.batch_hard_miner(e, lab).pos)

    g = jax.grad(f)(jnp.asarray(emb))
    assert np.all(np.asarray(g) == 0)


def test_mined_loss_under_jit_train_step(data):
    emb, labels, _, _ = data
    lab = jnp.asarray(labels)

    @jax.jit
    def step(e):
        return jax.value_and_grad(lambda e: jm.triplet_margin_loss(e, jm.batch_hard_miner(e, lab)))(e)

    v, g = step(jnp.asarray(emb))
    v2, g2 = jax.value_and_grad(lambda e: jm.triplet_margin_loss(e, jm.batch_hard_miner(e, lab)))(jnp.asarray(emb))
    assert_close(v, v2)
    assert_close(g, g2)


def test_traced_hyperparameters(data):
    emb, labels, _, _ = data
    e, lab = jnp.asarray(emb), jnp.asarray(labels)
    f = jax.jit(lambda m: jm.triplet_margin_miner(e, lab, margin=m, type_of_triplets="semihard").to_pairs().pos.sum())
    g = lambda m: jm.triplet_margin_miner(e, lab, margin=m, type_of_triplets="semihard").to_pairs().pos.sum()
    assert float(f(0.3)) == float(g(0.3))
    h = jax.jit(lambda eps: jm.multi_similarity_miner(e, lab, epsilon=eps).pos.sum())
    assert float(h(0.2)) == float(jm.multi_similarity_miner(e, lab, epsilon=0.2).pos.sum())


def test_errors(data):
    emb, labels, _, _ = data
    e, lab = jnp.asarray(emb), jnp.asarray(labels)
    with pytest.raises(ValueError, match="pos_strategy"):
        jm.batch_easy_hard_miner(e, lab, pos_strategy="hardest")
    with pytest.raises(ValueError, match="both"):
        jm.batch_easy_hard_miner(e, lab, pos_strategy="semihard", neg_strategy="semihard")
    with pytest.raises(ValueError, match="combination"):
        jm.batch_easy_hard_miner(e, lab, pos_strategy="all", neg_strategy="semihard")
    with pytest.raises(ValueError, match="type_of_triplets"):
        jm.triplet_margin_miner(e, lab, type_of_triplets="medium")
    with pytest.raises(ValueError, match="LpDistance"):
        jm.angular_miner(e, lab, distance=jm.CosineSimilarity())
    with pytest.raises(ValueError, match="LpDistance"):
        jm.distance_weighted_miner(e, lab, key=jax.random.key(0), distance=jm.LpDistance(power=2))
    with pytest.raises(ValueError, match="`key`"):
        jm.distance_weighted_miner(e, lab)
    with pytest.raises(ValueError, match="`key`"):
        jm.uniform_histogram_miner(e, lab)
    with pytest.raises(ValueError, match="num_bins"):
        jm.uniform_histogram_miner(e, lab, num_bins=2.5, key=jax.random.key(0))
    with pytest.raises(ValueError, match="multiple of 3"):
        jm.embeddings_already_packaged_as_triplets(e[:10])
    with pytest.raises(ValueError, match="allowed_neg_range"):
        jm.batch_easy_hard_miner(e, lab, allowed_neg_range=0.5)
    with pytest.raises(ValueError, match="at least 24 rows"):
        jm.embeddings_already_packaged_as_triplets(e, ref_emb=e[:12])
    with pytest.raises(ValueError, match="filter_percentage"):
        jm.hdc_miner(e, lab, filter_percentage=1.5)
    with pytest.raises(TypeError, match="distance"):
        jm.batch_hard_miner(e, lab, distance="euclidean")
    with pytest.raises(ValueError, match="`labels` must have 24 rows"):
        jm.batch_hard_miner(e, lab[:5])
    with pytest.raises(TypeError, match="embeddings"):
        jm.pair_margin_miner(jnp.ones((4, 3), jnp.int32), jnp.arange(4))


def test_empty_selection_gives_zero_loss(data):
    e = jnp.asarray(data[0])
    lab = jnp.arange(B)  # no positives at all
    for m in (jm.batch_hard_miner(e, lab), jm.triplet_margin_miner(e, lab)):
        for loss in (jm.triplet_margin_loss, jm.contrastive_loss):
            v, g = jax.value_and_grad(lambda x: loss(x, m))(e)
            assert float(v) == 0.0
            assert np.all(np.asarray(g) == 0)


def test_hdc_ties_pick_lowest_index():
    """Pinned difference: among equal distances at the cut, HDC keeps the lower flat index
    (PML's torch.topk order is unspecified)."""
    emb = jnp.asarray(np.repeat(np.eye(2), 3, axis=0))  # two groups of identical rows
    lab = jnp.asarray([0, 0, 0, 1, 1, 1])
    m = jm.hdc_miner(emb, lab, distance=jm.DotProductSimilarity(normalize_embeddings=False))
    pos = np.asarray(m.pos)
    assert pos.sum() == 6  # ceil(0.5 * 12), all twelve positive similarities equal
    expected = np.zeros((6, 6))
    expected[:3, :3] = 1 - np.eye(3)
    np.testing.assert_array_equal(pos, expected)


def test_no_retrace_for_new_values(data):
    emb, labels, _, _ = data
    traces = []

    @jax.jit
    def step(e, l):
        traces.append(1)
        m = jm.triplet_margin_miner(e, l, type_of_triplets="semihard")
        return jm.triplet_margin_loss(e, m) + jm.contrastive_loss(e, jm.batch_hard_miner(e, l))

    e, lab = jnp.asarray(emb), jnp.asarray(labels)
    step(e, lab)
    step(e * 2.0 + 1.0, (lab + 1) % C)
    assert len(traces) == 1
