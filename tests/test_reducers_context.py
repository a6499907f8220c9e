"""Context reductions (class_weighted, per_anchor, divisor) against PML's reducers."""
import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from jaxmetric import reduce
from pml_utils import assert_close, pml_losses, pml_reducers, pml_value_and_grads, torch

B, D = 8, 5
LABELS = np.array([0, 0, 1, 1, 2, 2, 0, 1])
CW = np.array([0.5, 1.7, 1.1])

LOSSES = {
    "contrastive": (jm.contrastive_loss, pml_losses.ContrastiveLoss),
    "triplet": (jm.triplet_margin_loss, pml_losses.TripletMarginLoss),
    "margin": (jm.margin_loss, pml_losses.MarginLoss),
    "fast_ap": (jm.fast_ap_loss, pml_losses.FastAPLoss),
    "nca": (jm.nca_loss, pml_losses.NCALoss),
    "npairs": (jm.npairs_loss, pml_losses.NPairsLoss),
    "instance": (jm.instance_loss, pml_losses.InstanceLoss),
    "ranked_list": (functools.partial(jm.ranked_list_loss, margin=0.4, Tn=1.0), functools.partial(pml_losses.RankedListLoss, margin=0.4, Tn=1.0)),
    "ms": (jm.multi_similarity_loss, pml_losses.MultiSimilarityLoss),
    "circle": (jm.circle_loss, pml_losses.CircleLoss),
    "ntxent": (jm.ntxent_loss, pml_losses.NTXentLoss),
    "supcon": (jm.supcon_loss, pml_losses.SupConLoss),
}


def jax_value_and_grads(fn, emb, ref_emb=None):
    """Jitted ``fn(emb[, ref_emb])`` with gradients (float64)."""
    if ref_emb is None:
        v, g = jax.jit(jax.value_and_grad(fn))(jnp.asarray(emb))
        return float(v), np.asarray(g), None
    v, (g, gr) = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(jnp.asarray(emb), jnp.asarray(ref_emb))
    return float(v), np.asarray(g), np.asarray(gr)


def _data(seed=0, b=B):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, D))


def _reducers(kind):
    if kind == "class_weighted":
        return reduce.class_weighted(jnp.asarray(CW)), pml_reducers.ClassWeightedReducer(torch.tensor(CW))
    if kind == "per_anchor":
        return reduce.per_anchor(), pml_reducers.PerAnchorReducer()
    if kind == "per_anchor_nonzero":
        return reduce.per_anchor("avg_nonzero"), pml_reducers.PerAnchorReducer(pml_reducers.AvgNonZeroReducer())
    if kind == "per_anchor_class_weighted":
        return (
            reduce.per_anchor(reduce.class_weighted(jnp.asarray(CW))),
            pml_reducers.PerAnchorReducer(pml_reducers.ClassWeightedReducer(torch.tensor(CW))),
        )
    raise AssertionError(kind)


def _allowed(loss, kind):
    if loss in ("triplet", "margin") and kind.startswith("per_anchor"):
        return False  # PML: "Triplet reduction not supported"
    if loss == "instance" and kind == "per_anchor_nonzero":
        return False  # an anchor that is its own class's column: loss 0 here, 2.4e-15 (rounding) in PML
    if loss in ("ms", "circle") and kind.endswith("class_weighted"):
        return False  # PML broadcasts [N, 1] losses: pinned in test_class_weighted_pml_broadcast_bug
    return True


CASES = [
    (loss, kind)
    for loss in LOSSES
    for kind in ("class_weighted", "per_anchor", "per_anchor_nonzero", "per_anchor_class_weighted")
    if _allowed(loss, kind)
]


@pytest.mark.parametrize("loss,kind", CASES)
def test_parity_with_pml(loss, kind):
    jf, pcls = LOSSES[loss]
    jr, pr = _reducers(kind)
    emb = _data(1)
    pv, pg, _, _ = pml_value_and_grads(pcls(reducer=pr), emb, LABELS)
    jv, jg, _ = jax_value_and_grads(lambda e: jf(e, jnp.asarray(LABELS), reduction=jr), emb)
    assert_close(jv, pv, what="value")
    assert_close(jg, pg, what="grad")


REF_CASES = [(loss, kind) for loss in ("contrastive", "triplet", "ntxent", "supcon", "ms")
             for kind in ("class_weighted", "per_anchor") if _allowed(loss, kind)]


@pytest.mark.parametrize("loss,kind", REF_CASES)
def test_parity_with_ref_emb(loss, kind):
    jf, pcls = LOSSES[loss]
    jr, pr = _reducers(kind)
    emb, ref = _data(2), _data(3, b=6)  # PML's per-anchor grid needs R <= B
    ref_labels = np.array([0, 1, 2, 0, 1, 2])
    pv, pg, pgr, _ = pml_value_and_grads(pcls(reducer=pr), emb, LABELS, ref_emb=ref, ref_labels=ref_labels)
    jv, jg, jgr = jax_value_and_grads(
        lambda e, r: jf(e, jnp.asarray(LABELS), ref_emb=r, ref_labels=jnp.asarray(ref_labels), reduction=jr), emb, ref
    )
    assert_close(jv, pv)
    assert_close(jg, pg)
    assert_close(jgr, pgr)


def test_per_anchor_counts_repeated_pairs_once():
    # A PML tuple that repeats a pair: PerAnchorReducer scatters into a grid, so it counts once.
    emb = _data(4)
    a1 = np.array([0, 0, 0, 2, 3]); p = np.array([1, 1, 6, 3, 2])
    a2 = np.array([0, 0, 2, 3, 3, 5]); n = np.array([2, 4, 0, 1, 1, 0])
    pv, pg, _, _ = pml_value_and_grads(
        pml_losses.NTXentLoss(reducer=pml_reducers.PerAnchorReducer()), emb, None, indices_tuple=(a1, p, a2, n)
    )
    mask = jm.from_indices(tuple(jnp.asarray(x) for x in (a1, p, a2, n)), B, dtype=jnp.float64)
    jv, jg, _ = jax_value_and_grads(lambda e: jm.ntxent_loss(e, mask, reduction=reduce.per_anchor()), emb)
    assert_close(jv, pv)
    # PML's gradient is not the derivative of its own value here: torch's index_put backward
    # sends the gradient to every copy of the repeated pair. jaxmetric's gradient is the
    # derivative of the (common) value: compare with central differences of PML's value.
    assert not np.allclose(jg, pg)
    loss = pml_losses.NTXentLoss(reducer=pml_reducers.PerAnchorReducer())
    tup = tuple(torch.as_tensor(x) for x in (a1, p, a2, n))
    fd = np.zeros_like(emb)
    h = 1e-6
    for idx in np.ndindex(emb.shape):
        ep, em = emb.copy(), emb.copy()
        ep[idx] += h
        em[idx] -= h
        fd[idx] = (float(loss(torch.tensor(ep), None, tup)) - float(loss(torch.tensor(em), None, tup))) / (2 * h)
    assert_close(jg, fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("loss", ["ms", "circle"])
def test_class_weighted_pml_broadcast_bug(loss):
    """PML's MultiSimilarity/Circle losses are [N, 1]: ClassWeightedReducer broadcasts them to
    N x N, giving mean(l) * mean(cw[y]). jaxmetric gives the intended mean(l_i * cw[y_i])."""
    jf, pcls = LOSSES[loss]
    emb = _data(5)
    pv, _, _, _ = pml_value_and_grads(pcls(reducer=pml_reducers.ClassWeightedReducer(torch.tensor(CW))), emb, LABELS)
    per_row = np.asarray(jf(jnp.asarray(emb), jnp.asarray(LABELS), reduction="none"))
    assert_close(pv, per_row.mean() * CW[LABELS].mean())
    jv = float(jf(jnp.asarray(emb), jnp.asarray(LABELS), reduction=reduce.class_weighted(jnp.asarray(CW))))
    assert_close(jv, np.mean(per_row * CW[LABELS]))


def _triplet_terms(emb, labels, margin=0.05):
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    d = np.linalg.norm(e[:, None] - e[None], axis=-1)
    same = labels[:, None] == labels[None]
    rows = []
    for a in range(len(e)):
        vals = [max(d[a, p] - d[a, n] + margin, 0.0) for p in range(len(e)) for n in range(len(e))
                if p != a and same[a, p] and not same[a, n]]
        rows.append(np.mean(vals) if vals else 0.0)
    return np.array(rows)


def test_per_anchor_triplet_beyond_pml():
    emb = _data(6)
    with pytest.raises(NotImplementedError):
        pml_value_and_grads(pml_losses.TripletMarginLoss(reducer=pml_reducers.PerAnchorReducer()), emb, LABELS)
    rows = _triplet_terms(emb, LABELS)
    jv = float(jm.triplet_margin_loss(jnp.asarray(emb), jnp.asarray(LABELS), reduction=reduce.per_anchor()))
    assert_close(jv, rows.mean())
    jv = float(jm.triplet_margin_loss(jnp.asarray(emb), jnp.asarray(LABELS), reduction=reduce.class_weighted(jnp.asarray(CW))))
    assert np.isfinite(jv)


def test_divisor_fixed_value_and_zero():
    emb = jnp.asarray(_data(7))
    lab = jnp.asarray(LABELS)
    total = float(jm.contrastive_loss(emb, lab, reduction="sum"))
    assert_close(float(jm.contrastive_loss(emb, lab, reduction=reduce.divisor(4.0))), total / 4.0)
    assert_close(float(jm.supcon_loss(emb, lab, reduction=reduce.divisor(jnp.asarray(3.0)))),
                 float(jm.supcon_loss(emb, lab, reduction="sum")) / 3.0)
    v, g = jax.value_and_grad(lambda e: jm.contrastive_loss(e, lab, reduction=reduce.divisor(0.0)))(emb)
    assert float(v) == 0.0 and np.all(np.asarray(g) == 0)


def test_divisor_needs_a_divisor():
    with pytest.raises(ValueError, match="divisor"):
        jm.contrastive_loss(jnp.asarray(_data(0)), jnp.asarray(LABELS), reduction=reduce.divisor())
    with pytest.raises(ValueError, match="value"):
        reduce.divisor(-1.0)


def test_errors_at_trace_time():
    emb = jnp.asarray(_data(0))
    mask = jm.pair_mask(jnp.asarray(LABELS))
    with pytest.raises(ValueError, match="class_weighted.*labels"):
        jax.jit(lambda e: jm.ntxent_loss(e, mask, reduction=reduce.class_weighted(jnp.asarray(CW))))(emb)
    multi_hot = jnp.asarray(np.eye(3, dtype=np.int32)[LABELS])
    with pytest.raises(TypeError, match="class ids"):
        jm.supcon_loss(emb, multi_hot, reduction=reduce.class_weighted(jnp.asarray(CW)))
    with pytest.raises(ValueError, match="weights"):
        reduce.class_weighted(jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="inner"):
        reduce.per_anchor("none")
    with pytest.raises(ValueError, match="reduction"):
        reduce.per_anchor("median")


@pytest.mark.parametrize("kind", ["class_weighted", "per_anchor"])
def test_jit_equals_eager_and_padding(kind):
    jr, _ = _reducers(kind)
    emb = jnp.asarray(_data(8))
    lab = jnp.asarray(LABELS)
    f = lambda e, l, w: jm.contrastive_loss(e, l, reduction=jr, where=w)  # noqa: E731
    full = jnp.ones((B,), bool)
    eager = f(emb, lab, full)
    assert_close(jax.jit(f)(emb, lab, full), eager)
    # Padded rows change nothing.
    pad = jnp.concatenate([emb, jnp.asarray(_data(9, b=3))])
    lab_pad = jnp.concatenate([lab, jnp.array([0, 1, 2])])
    w = jnp.concatenate([full, jnp.zeros((3,), bool)])
    assert_close(jax.jit(f)(pad, lab_pad, w), eager)




def test_empty_selection_gives_zero_and_zero_grad():
    emb = jnp.asarray(_data(10))
    distinct = jnp.arange(B)
    for red in (reduce.class_weighted(jnp.ones(B)), reduce.per_anchor()):
        v, g = jax.value_and_grad(lambda e: jm.ntxent_loss(e, distinct, reduction=red))(emb)
        assert float(v) == 0.0 and np.all(np.asarray(g) == 0)


def test_plain_callables_and_builtins_unchanged():
    emb = jnp.asarray(_data(11))
    lab = jnp.asarray(LABELS)
    custom = lambda l, w: jnp.sum(w * l)  # noqa: E731
    assert_close(jm.supcon_loss(emb, lab, reduction=custom), jm.supcon_loss(emb, lab, reduction="sum"))
    assert_close(reduce.apply(reduce.resolve("mean"), jnp.arange(3.0), jnp.ones(3), context=reduce.Context()), 1.0)


ENGINE_LOSSES = {
    "contrastive": jm.contrastive_loss,
    "snr_contrastive": jm.snr_contrastive_loss,
    "ntxent": jm.ntxent_loss,
    "supcon": jm.supcon_loss,
    "ms": jm.multi_similarity_loss,
    "circle": jm.circle_loss,
    "fast_ap": jm.fast_ap_loss,
    "smooth_ap": functools.partial(jm.smooth_ap_loss, temperature=0.1),
    "pnp": functools.partial(jm.pnp_loss, anneal=0.1),
    "ranked_list": functools.partial(jm.ranked_list_loss, margin=0.4, Tn=1.0),
}
ADDITIVE = {
    "class_weighted": lambda: reduce.class_weighted(jnp.asarray(CW)),
    "per_anchor": lambda: reduce.per_anchor(),
    "per_anchor_nonzero": lambda: reduce.per_anchor("avg_nonzero"),
    "per_anchor_class_weighted": lambda: reduce.per_anchor(reduce.class_weighted(jnp.asarray(CW))),
    "divisor": lambda: reduce.divisor(3.0),
}
BLOCKABLE = [n for n in ENGINE_LOSSES if n != "snr_contrastive"]  # it takes no block_size


@pytest.mark.parametrize("kind", ADDITIVE)
@pytest.mark.parametrize("loss", BLOCKABLE)
def test_context_reductions_add_up_over_blocks(loss, kind):
    """Class-weighted, per-anchor and divisor reductions are additive: blocks of anchors give
    the dense value and gradient, as "mean" does."""
    fn, red = ENGINE_LOSSES[loss], ADDITIVE[kind]()
    emb, lab = jnp.asarray(_data(12, b=11)), jnp.asarray(np.r_[LABELS, [2, 0, 1]])
    dense = jax.value_and_grad(lambda e: fn(e, lab, reduction=red))(emb)
    blocked = jax.jit(jax.value_and_grad(lambda e: fn(e, lab, reduction=red, block_size=4)))(emb)
    assert float(dense[0]) != 0.0
    assert_close(blocked[0], dense[0])
    assert_close(blocked[1], dense[1])


# The triplet losses reduce a cube of triplets per device; their partial sums add up too.
DEVICE_LOSSES = {**ENGINE_LOSSES, "triplet": jm.triplet_margin_loss, "margin": jm.margin_loss}


@pytest.mark.parametrize("kind", ADDITIVE)
@pytest.mark.parametrize("loss", DEVICE_LOSSES)
def test_context_reductions_add_up_over_devices(loss, kind):
    """With ``axis_name`` every device returns the loss of the concatenated batch, and the
    summed per-device gradients are the single-device gradient."""
    fn, red = DEVICE_LOSSES[loss], ADDITIVE[kind]()
    devices, per = 4, 3
    emb, lab = jnp.asarray(_data(13, b=devices * per)), jnp.asarray(np.r_[LABELS, [2, 0, 1, 1]])
    single, single_grad = jax.value_and_grad(lambda e: fn(e, lab, reduction=red))(emb)

    def local(e, y):
        return fn(e, y, reduction=red, axis_name="d")

    values = jax.vmap(local, axis_name="d")(emb.reshape(devices, per, -1), lab.reshape(devices, per))
    grads = jax.grad(lambda e: jnp.sum(jax.vmap(local, axis_name="d")(e, lab.reshape(devices, per))) / devices)(
        emb.reshape(devices, per, -1)
    )
    assert float(single) != 0.0
    for v in values:
        assert_close(v, single)
    assert_close(grads.reshape(emb.shape), single_grad)



def _pair_losses():
    """Every public loss called as ``f(embeddings, labels_or_mask, ..., reduction=, where=)``."""
    out = {}
    for name in jm.losses.__all__:
        params = list(inspect.signature(getattr(jm.losses, name)).parameters)
        if params[1:2] == ["labels_or_mask"] and "where" in params and "reduction" in params:
            out[name] = getattr(jm.losses, name)
    return out


PAIR_LOSSES = _pair_losses()
REQUIRED = {  # the arguments without a default
    "ranked_list_loss": dict(margin=0.4, Tn=1.0),
    "dynamic_soft_margin_loss": dict(state=jm.init_dynamic_soft_margin_state(10)),
}


# histogram_loss is one value for the batch (PML's "already_reduced"): no anchor to weigh.
NO_ANCHORS = {"histogram_loss"}


@pytest.mark.parametrize("kind", ADDITIVE)
@pytest.mark.parametrize("loss", sorted(PAIR_LOSSES))
def test_context_reductions_see_labels_and_ignore_padded_rows(loss, kind):
    """Every pair loss gives a context reduction its anchors' class ids, and rows masked out by
    ``where`` are not anchors: the value is the unpadded batch's."""
    fn, red = functools.partial(PAIR_LOSSES[loss], **REQUIRED.get(loss, {})), ADDITIVE[kind]()

    def value(e, y, **kw):
        out = fn(e, y, reduction=red, **kw)
        return out[0] if isinstance(out, tuple) else out  # (loss, new state)

    emb, lab = jnp.asarray(_data(14, b=12)), jnp.asarray(np.r_[LABELS, [2, 0, 1, 1]])
    if loss in NO_ANCHORS and "class_weighted" in kind:
        with pytest.raises(ValueError, match="class_weighted: the loss must be given class-id labels"):
            value(emb, lab)
        return
    assert_close(value(emb, lab, where=jnp.arange(12) < 9), value(emb[:9], lab[:9]))
