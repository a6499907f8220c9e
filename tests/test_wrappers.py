"""Wrappers against PML 2.9: SelfSupervisedLoss, CrossBatchMemory, MultipleLosses."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from jaxmetric.distances import LpDistance
from pml_utils import assert_close, pml_losses, pml_miners, pml_value_and_grads, torch

D = 4
LOSSES = {
    "contrastive": (jm.contrastive_loss, pml_losses.ContrastiveLoss),
    "triplet": (jm.triplet_margin_loss, pml_losses.TripletMarginLoss),
    "ms": (jm.multi_similarity_loss, pml_losses.MultiSimilarityLoss),
    "circle": (jm.circle_loss, pml_losses.CircleLoss),
    "ntxent": (jm.ntxent_loss, pml_losses.NTXentLoss),
    "supcon": (jm.supcon_loss, pml_losses.SupConLoss),
}


def _x(seed, n, d=D):
    return np.random.default_rng(seed).normal(size=(n, d))


def pair_margin_miner(emb, labels, *, ref_emb=None, ref_labels=None, ref_where=None, where=None, pos_margin=0.2, neg_margin=0.8):
    """A simple mask-producing miner with PML PairMarginMiner's rule (LpDistance)."""
    ref = emb if ref_emb is None else ref_emb
    d = jax.lax.stop_gradient(LpDistance()(emb, ref))
    m = jm.pair_mask(labels, ref_labels, where=where, ref_where=ref_where)
    return jm.PairMask(pos=m.pos & (d > pos_margin), neg=m.neg & (d < neg_margin))


# ------------------------------------------------------------------ self-supervised


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("symmetric", [True, False])
def test_self_supervised_matches_pml(loss, symmetric):
    jf, pcls = LOSSES[loss]
    emb, ref = _x(0, 6), _x(1, 6)
    pml = pml_losses.SelfSupervisedLoss(pcls(), symmetric=symmetric)
    e, r = torch.tensor(emb, requires_grad=True), torch.tensor(ref, requires_grad=True)
    pv = pml(e, r)
    pg, pgr = torch.autograd.grad(pv, [e, r], allow_unused=True)
    jv, (jg, jgr) = jax.jit(jax.value_and_grad(lambda a, b: jm.self_supervised_loss(jf, a, b, symmetric=symmetric), argnums=(0, 1)))(
        jnp.asarray(emb), jnp.asarray(ref))
    assert_close(jv, float(pv.detach()))
    assert_close(jg, pg.numpy())
    assert_close(jgr, pgr.numpy())


@pytest.mark.parametrize("symmetric", [True, False])
def test_multi_view_forms(symmetric):
    views = [jnp.asarray(_x(s, 5)) for s in (2, 3, 4)]
    ids = jnp.arange(5)

    def manual(v0, v1, v2):
        if symmetric:
            return jm.supcon_loss(jnp.concatenate([v0, v1, v2]), jnp.tile(ids, 3), temperature=0.2)
        return jm.supcon_loss(v0, ids, ref_emb=jnp.concatenate([v1, v2]), ref_labels=jnp.tile(ids, 2), temperature=0.2)

    got = jax.jit(lambda *v: jm.multi_view_loss(jm.supcon_loss, list(v), symmetric=symmetric, temperature=0.2))(*views)
    assert_close(got, jax.jit(manual)(*views))
    # array [V, B, D] == list; two views == self_supervised_loss
    stacked = jax.jit(lambda v: jm.multi_view_loss(jm.supcon_loss, v, symmetric=symmetric, temperature=0.2))
    assert_close(stacked(jnp.stack(views)), got)
    two = jax.jit(lambda v: jm.multi_view_loss(jm.ntxent_loss, v, symmetric=symmetric))(jnp.stack(views[:2]))
    pair = jax.jit(lambda a, b: jm.self_supervised_loss(jm.ntxent_loss, a, b, symmetric=symmetric))(views[0], views[1])
    assert_close(two, pair)


@pytest.mark.parametrize("symmetric", [True, False])
def test_multi_view_where_and_jit(symmetric):
    views = jnp.asarray(np.stack([_x(s, 6) for s in (5, 6, 7)]))
    where = jnp.array([True] * 4 + [False] * 2)
    f = jax.jit(lambda v, w: jm.multi_view_loss(jm.ntxent_loss, v, symmetric=symmetric, where=w))
    assert_close(f(views, where), f(views[:, :4], jnp.ones(4, bool)))


def test_self_supervised_errors():
    a = jnp.ones((4, 3))
    with pytest.raises(ValueError, match="`ref_emb` must have the shape of `embeddings`"):
        jm.self_supervised_loss(jm.ntxent_loss, a, jnp.ones((5, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        jm.multi_view_loss(jm.ntxent_loss, [a])
    with pytest.raises(ValueError, match="\\[V, B, D\\]"):
        jm.multi_view_loss(jm.ntxent_loss, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="ref_emb"):
        jm.multi_view_loss(jm.ntxent_loss, [a, a], ref_emb=a)


# ------------------------------------------------------------------ cross-batch memory

M, BATCH, STEPS = 12, 5, 5  # the ring buffer wraps at step 3


def _batches(seed, n=STEPS, b=BATCH):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(b, D)), rng.integers(0, 3, size=b)) for _ in range(n)]


def _pml_cbm_run(cbm, batches, masks=None):
    out = []
    for t, (e, l) in enumerate(batches):
        te = torch.tensor(e, requires_grad=True)
        kw = {} if masks is None else {"enqueue_mask": torch.tensor(masks[t])}
        v = cbm(te, torch.tensor(l), **kw)
        (g,) = torch.autograd.grad(v, [te], allow_unused=True) if v.requires_grad else (None,)
        out.append((float(v.detach()), np.zeros_like(e) if g is None else g.numpy()))
    return out


def _jax_cbm_run(loss_fn, batches, masks=None, miner=None, **kw):
    def step(e, l, s, m):
        return jm.cross_batch_memory_loss(loss_fn, e, l, s, miner=miner, enqueue_mask=m, **kw)

    counted = chex.assert_max_traces(step, n=1)
    f = jax.jit(jax.value_and_grad(counted, has_aux=True))
    state = jm.init_cross_batch_memory(M, D, dtype=jnp.float64)
    out = []
    for t, (e, l) in enumerate(batches):
        (v, state), g = f(jnp.asarray(e), jnp.asarray(l), state, None if masks is None else jnp.asarray(masks[t]))
        out.append((float(v), np.asarray(g), state))
    chex.clear_trace_counter()
    return out


@pytest.mark.parametrize("loss", list(LOSSES))
def test_cross_batch_memory_matches_pml_over_steps(loss):
    jf, pcls = LOSSES[loss]
    batches = _batches(10)
    ref = _pml_cbm_run(pml_losses.CrossBatchMemory(pcls(), D, memory_size=M), batches)
    got = _jax_cbm_run(jf, batches)  # asserts a single trace for the 5 steps
    for t, ((pv, pg), (jv, jg, _)) in enumerate(zip(ref, got)):
        assert_close(jv, pv, what=f"step {t} value")
        assert_close(jg, pg, what=f"step {t} grad")
    assert int(got[-1][2].queue_idx) == (STEPS * BATCH) % M
    assert bool(jnp.all(got[-1][2].filled))


@pytest.mark.parametrize("loss", ["contrastive", "ntxent", "triplet"])
def test_cross_batch_memory_equals_hand_computation(loss):
    jf, _ = LOSSES[loss]
    batches = _batches(11)
    got = _jax_cbm_run(jf, batches)
    mem_e, mem_l, filled, q = np.zeros((M, D)), np.zeros(M, int), np.zeros(M, bool), 0
    for t, (e, l) in enumerate(batches):
        slots = (q + np.arange(BATCH)) % M
        mem_e[slots], mem_l[slots], filled[slots] = e, l, True
        q = (q + BATCH) % M
        idx = np.flatnonzero(filled)  # the concatenated memory, PML's E_mem
        pos = (l[:, None] == mem_l[idx][None]).astype(float)
        neg = 1.0 - pos
        for i, s in enumerate(slots):
            pos[i, np.flatnonzero(idx == s)] = 0.0  # self-comparison
        mask = jm.PairMask(jnp.asarray(pos), jnp.asarray(neg))
        ref = jnp.asarray(mem_e[idx])
        v, g = jax.jit(jax.value_and_grad(lambda x, m, r: jf(x, m, ref_emb=r)))(jnp.asarray(e), mask, ref)
        assert_close(got[t][0], v, what=f"step {t}")
        assert_close(got[t][1], g, what=f"step {t}")


@pytest.mark.parametrize("loss", ["contrastive", "ms"])
def test_cross_batch_memory_with_miner_matches_pml(loss):
    jf, pcls = LOSSES[loss]
    batches = _batches(12)
    cbm = pml_losses.CrossBatchMemory(pcls(), D, memory_size=M, miner=pml_miners.PairMarginMiner(pos_margin=0.4, neg_margin=1.2))
    ref = _pml_cbm_run(cbm, batches)
    got = _jax_cbm_run(jf, batches, miner=functools.partial(pair_margin_miner, pos_margin=0.4, neg_margin=1.2))
    for (pv, pg), (jv, jg, _) in zip(ref, got):
        assert_close(jv, pv)
        assert_close(jg, pg)


def test_cross_batch_memory_enqueue_mask_matches_pml():
    batches = _batches(13, b=6)
    rng = np.random.default_rng(0)
    masks = [rng.random(6) < 0.5 for _ in range(STEPS)]
    masks[0][:3] = [True, False, True]
    ref = _pml_cbm_run(pml_losses.CrossBatchMemory(pml_losses.NTXentLoss(), D, memory_size=M), batches, masks)
    got = _jax_cbm_run(jm.ntxent_loss, batches, masks)
    for (pv, pg), (jv, jg, _) in zip(ref, got):
        assert_close(jv, pv)
        assert_close(jg, pg)
    assert int(got[-1][2].num_filled) == min(M, int(sum(m.sum() for m in masks)))


def test_cross_batch_memory_padding_and_triplet_miner():
    batches = _batches(14)
    plain = _jax_cbm_run(jm.supcon_loss, batches)
    padded = [(np.concatenate([e, 7 * np.ones((2, D))]), np.concatenate([l, [0, 1]])) for e, l in batches]
    where = jnp.array([True] * BATCH + [False] * 2)
    state = jm.init_cross_batch_memory(M, D, dtype=jnp.float64)
    step = jax.jit(lambda e, l, s: jm.cross_batch_memory_loss(jm.supcon_loss, e, l, s, where=where))
    for t, (e, l) in enumerate(padded):
        v, state = step(jnp.asarray(e), jnp.asarray(l), state)
        assert_close(v, plain[t][0])
    assert_close(state.embeddings, plain[-1][2].embeddings)

    def triplet_miner(emb, labels, *, ref_emb, ref_labels, ref_where):
        m = jm.pair_mask(labels, ref_labels, ref_where=ref_where)
        return jm.TripletMask(m.pos[:, :, None] & m.neg[:, None, :])

    got = _jax_cbm_run(jm.triplet_margin_loss, batches, miner=triplet_miner)
    ref = _jax_cbm_run(jm.triplet_margin_loss, batches)
    for (a, ga, _), (b, gb, _) in zip(got, ref):
        assert_close(a, b)
        assert_close(ga, gb)


def test_cross_batch_memory_empty_enqueue_differs_from_pml():
    """PML marks the memory 'filled' when a call enqueues nothing (queue_idx <= previous), so
    the zero-initialised slots become references. jaxmetric tracks each slot: nothing is there."""
    cbm = pml_losses.CrossBatchMemory(pml_losses.ContrastiveLoss(), D, memory_size=M)
    e, l = _x(15, 4), np.array([0, 1, 0, 1])
    cbm(torch.tensor(e), torch.tensor(l), enqueue_mask=torch.zeros(4, dtype=torch.bool))
    assert cbm.has_been_filled
    state = jm.init_cross_batch_memory(M, D)
    v, state = jm.cross_batch_memory_loss(jm.contrastive_loss, jnp.asarray(e), jnp.asarray(l), state, enqueue_mask=jnp.zeros(4, bool))
    assert float(v) == 0.0 and int(state.num_filled) == 0


def test_cross_batch_memory_errors():
    state = jm.init_cross_batch_memory(4, D)
    with pytest.raises(ValueError, match="batch must fit"):
        jm.cross_batch_memory_loss(jm.contrastive_loss, jnp.ones((5, D)), jnp.zeros(5, int), state)
    with pytest.raises(ValueError, match="dim 4"):
        jm.cross_batch_memory_loss(jm.contrastive_loss, jnp.ones((2, 3)), jnp.zeros(2, int), state)
    with pytest.raises(ValueError, match="`labels` must have shape"):
        jm.cross_batch_memory_loss(jm.contrastive_loss, jnp.ones((2, D)), jnp.zeros((2, 3), int), state)
    with pytest.raises(ValueError, match="ref_emb"):
        jm.cross_batch_memory_loss(jm.contrastive_loss, jnp.ones((2, D)), jnp.zeros(2, int), state, ref_emb=jnp.ones((2, D)))
    with pytest.raises(TypeError, match="PairMask"):
        jm.cross_batch_memory_loss(jm.contrastive_loss, jnp.ones((2, D)), jnp.zeros(2, int), state, miner=lambda *a, **k: 0)
    with pytest.raises(TypeError, match="CrossBatchMemoryState"):
        jm.cross_batch_memory_loss(jm.contrastive_loss, jnp.ones((2, D)), jnp.zeros(2, int), {})
    with pytest.raises(ValueError, match="memory_size"):
        jm.init_cross_batch_memory(0, D)


def test_cross_batch_memory_multi_hot_labels():
    state = jm.init_cross_batch_memory(8, D, label_shape=(3,), label_dtype=jnp.float32)
    lab = jnp.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]], jnp.float32)
    v, state = jax.jit(lambda e, l, s: jm.cross_batch_memory_loss(jm.supcon_loss, e, l, s))(jnp.asarray(_x(16, 3)), lab, state)
    assert np.isfinite(float(v)) and int(state.num_filled) == 3


# ------------------------------------------------------------------ multiple losses


def test_multiple_losses_matches_pml_list_with_miners():
    emb, labels = _x(20, 8), np.array([0, 0, 1, 1, 2, 2, 0, 1])
    pml = pml_losses.MultipleLosses(
        [pml_losses.ContrastiveLoss(), pml_losses.TripletMarginLoss(margin=0.3), pml_losses.SupConLoss()],
        miners=[pml_miners.PairMarginMiner(pos_margin=0.3, neg_margin=1.0), None, None],
        weights=[0.3, 1.2, 0.5],
    )
    pv, pg, _, _ = pml_value_and_grads(lambda e, l: pml(e, l), emb, labels)
    f = jm.multiple_losses(
        [jm.contrastive_loss, functools.partial(jm.triplet_margin_loss, margin=0.3), jm.supcon_loss],
        weights=[0.3, 1.2, 0.5],
        miners=[functools.partial(pair_margin_miner, pos_margin=0.3, neg_margin=1.0), None, None],
    )
    jv, jg = jax.jit(jax.value_and_grad(f))(jnp.asarray(emb), jnp.asarray(labels))
    assert_close(jv, pv)
    assert_close(jg, pg)


def test_multiple_losses_matches_pml_dict():
    emb, labels = _x(21, 8), np.array([0, 0, 1, 1, 2, 2, 0, 1])
    pml = pml_losses.MultipleLosses({"ms": pml_losses.MultiSimilarityLoss(), "circle": pml_losses.CircleLoss()},
                                    weights={"ms": 2.0, "circle": 0.01})
    pv, pg, _, _ = pml_value_and_grads(lambda e, l: pml(e, l), emb, labels)
    f = jm.multiple_losses({"ms": jm.multi_similarity_loss, "circle": jm.circle_loss}, weights={"ms": 2.0, "circle": 0.01})
    jv, jg = jax.jit(jax.value_and_grad(f))(jnp.asarray(emb), jnp.asarray(labels))
    assert_close(jv, pv)
    assert_close(jg, pg)
    # default weights 1; kwargs reach every loss (ref_emb), miners get ref_labels
    g = jm.multiple_losses([jm.ntxent_loss, jm.contrastive_loss], miners=[pair_margin_miner, None])
    ref, rl = jnp.asarray(_x(22, 6)), jnp.array([0, 1, 2, 0, 1, 2])
    e, lab = jnp.asarray(emb), jnp.asarray(labels)
    want = jax.jit(lambda e, lab, ref, rl: jm.ntxent_loss(e, pair_margin_miner(e, lab, ref_emb=ref, ref_labels=rl), ref_emb=ref)
                   + jm.contrastive_loss(e, lab, ref_emb=ref, ref_labels=rl))(e, lab, ref, rl)
    assert_close(jax.jit(lambda e, lab, ref, rl: g(e, lab, ref_emb=ref, ref_labels=rl))(e, lab, ref, rl), want)


def test_multiple_losses_errors():
    with pytest.raises(ValueError, match="weights"):
        jm.multiple_losses([jm.ntxent_loss, jm.supcon_loss], weights=[1.0])
    with pytest.raises(ValueError, match="weights"):
        jm.multiple_losses({"a": jm.ntxent_loss}, weights={"b": 1.0})
    with pytest.raises(ValueError, match="miners"):
        jm.multiple_losses({"a": jm.ntxent_loss}, miners={"b": pair_margin_miner})
    with pytest.raises(TypeError, match="callable"):
        jm.multiple_losses([jm.ntxent_loss, 3])
    f = jm.multiple_losses([jm.ntxent_loss], miners=[pair_margin_miner])
    with pytest.raises(ValueError, match="pass labels"):
        f(jnp.ones((4, 3)), jm.pair_mask(jnp.arange(4)))
