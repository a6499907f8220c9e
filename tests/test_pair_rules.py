"""Multi-hot pair rules, fractional pair weights in the pair-based losses, paired data and
PML-style index tuples with padding."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxmetric as jm
from jaxmetric.masks import PAIR_RULES, paired_mask, pair_mask

# --------------------------------------------------------------------------------------
# rules vs a NumPy definition


def ref_rule(a, b, rule, threshold=None, weighted=True, negatives="complement"):
    """Positive weight and negative flag of the pair (a, b) from the rule's definition."""
    a, b = a.astype(bool), b.astype(bool)
    inter, union = np.sum(a & b), np.sum(a | b)
    na, nb = a.sum(), b.sum()
    if rule == "any":
        pos = float(inter >= 1)
    elif rule == "exact":
        pos = float(np.array_equal(a, b))
    elif rule == "shared_count":
        pos = float(inter >= (1 if threshold is None else threshold))
    else:
        if rule == "jaccard":
            sim = inter / union if union else 0.0
        elif rule == "dice":
            sim = 2 * inter / (na + nb) if na + nb else 0.0
        else:
            sim = inter / np.sqrt(na * nb) if na * nb else 0.0
        ok = sim > 0 and (threshold is None or sim >= threshold)
        pos = (sim if weighted else 1.0) if ok else 0.0
    neg = (inter == 0) if negatives == "disjoint" else (pos == 0)
    if rule == "exact" and negatives == "disjoint":
        neg = neg and pos == 0
    return pos, float(neg)


def random_multihot(rng, n, c, p=0.35):
    y = (rng.random((n, c)) < p).astype(np.int32)
    y[0] = 0  # an empty label set
    y[1] = y[2]  # an exact duplicate
    return y


RULE_PARAMS = [
    ("any", None, True, "complement"),
    ("exact", None, True, "complement"),
    ("exact", None, True, "disjoint"),
    ("jaccard", None, True, "complement"),
    ("jaccard", 0.5, True, "complement"),
    ("jaccard", 0.3, False, "disjoint"),
    ("dice", None, True, "complement"),
    ("dice", 0.6, True, "disjoint"),
    ("cosine", None, True, "complement"),
    ("cosine", 0.5, False, "complement"),
    ("shared_count", None, True, "complement"),
    ("shared_count", 2, True, "disjoint"),
]


@pytest.mark.parametrize("rule,threshold,weighted,negatives", RULE_PARAMS)
def test_rules_match_definition(rule, threshold, weighted, negatives):
    rng = np.random.default_rng(0)
    y = random_multihot(rng, 9, 6)
    r = random_multihot(rng, 7, 6)
    kw = dict(rule=rule, threshold=threshold, weighted=weighted, negatives=negatives)
    # self comparison: diagonal excluded
    m = pair_mask(jnp.asarray(y), **kw)
    mp, mn = np.asarray(m.pos), np.asarray(m.neg)
    for i in range(9):
        for j in range(9):
            pos, neg = ref_rule(y[i], y[j], **kw)
            if i == j:
                pos, neg = 0.0, 0.0
            assert float(mp[i, j]) == pytest.approx(pos, rel=1e-6), (i, j)
            assert float(mn[i, j]) == neg, (i, j)
    # against a reference set, with padded rows
    where, ref_where = np.ones(9, bool), np.ones(7, bool)
    where[4], ref_where[6] = False, False
    m = pair_mask(jnp.asarray(y), jnp.asarray(r), where=jnp.asarray(where), ref_where=jnp.asarray(ref_where), **kw)
    mp, mn = np.asarray(m.pos), np.asarray(m.neg)
    for i in range(9):
        for j in range(7):
            pos, neg = ref_rule(y[i], r[j], **kw)
            if not (where[i] and ref_where[j]):
                pos, neg = 0.0, 0.0
            assert float(mp[i, j]) == pytest.approx(pos, rel=1e-6)
            assert float(mn[i, j]) == neg
    # weights in [0, 1], positives and negatives disjoint
    assert np.all((np.asarray(m.pos) >= 0) & (np.asarray(m.pos) <= 1))
    assert not np.any((np.asarray(m.pos) > 0) & np.asarray(m.neg))


@pytest.mark.parametrize("rule", PAIR_RULES)
def test_class_ids_mean_equality_for_every_rule(rule):
    y = jnp.array([0, 1, 0, 2, 1])
    m = pair_mask(y, rule=rule)
    ref = (np.asarray(y)[:, None] == np.asarray(y)[None, :]) & ~np.eye(5, dtype=bool)
    np.testing.assert_array_equal(np.asarray(m.pos) > 0, ref)


def test_weighted_rule_dtypes_and_jit():
    y = jnp.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]])
    m = pair_mask(y, rule="jaccard")
    assert m.pos.dtype == jnp.float32 and m.neg.dtype == jnp.bool_
    assert pair_mask(y.astype(jnp.float64), rule="jaccard").pos.dtype == jnp.float64
    assert pair_mask(y, rule="jaccard", weighted=False).pos.dtype == jnp.bool_
    f = jax.jit(lambda y, t: pair_mask(y, rule="jaccard", threshold=t))
    np.testing.assert_allclose(np.asarray(f(y, 0.4).pos), [[0, 0.5, 0], [0.5, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(np.asarray(f(y, 0.6).pos), np.zeros((3, 3)))


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(rule="all"), ValueError, "`rule` must be one of"),
        (dict(rule="any", threshold=0.5), ValueError, "`threshold` is only used by"),
        (dict(rule="jaccard", threshold=1.5), ValueError, r"`threshold` for rule 'jaccard' must be in \[0, 1\]"),
        (dict(rule="shared_count", threshold=0.5), ValueError, "integer >= 1"),
        (dict(rule="dice", negatives="rest"), ValueError, "`negatives` must be one of"),
    ],
)
def test_rule_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        pair_mask(jnp.array([[1, 0], [0, 1]]), **kwargs)


@settings(max_examples=15, deadline=None)
@given(
    st.integers(2, 6).flatmap(lambda n: st.lists(st.lists(st.integers(0, 1), min_size=4, max_size=4), min_size=n, max_size=n)),
    st.sampled_from(["jaccard", "dice", "cosine"]),
)
def test_weighted_rules_properties(rows, rule):
    """Symmetric, in [0, 1], 1 exactly for identical non-empty sets, ordered cos >= dice >= jaccard."""
    y = np.array(rows, np.int32)
    m = np.asarray(pair_mask(jnp.asarray(y), rule=rule, exclude_self=False).pos)
    np.testing.assert_allclose(m, m.T, rtol=1e-6)
    assert np.all((m >= 0) & (m <= 1 + 1e-6))
    same = np.all(y[:, None, :] == y[None, :, :], -1) & (y.sum(1)[:, None] > 0)
    np.testing.assert_allclose(m[same], 1.0, rtol=1e-6)
    j = np.asarray(pair_mask(jnp.asarray(y), rule="jaccard", exclude_self=False).pos)
    d = np.asarray(pair_mask(jnp.asarray(y), rule="dice", exclude_self=False).pos)
    c = np.asarray(pair_mask(jnp.asarray(y), rule="cosine", exclude_self=False).pos)
    assert np.all(c >= d - 1e-6) and np.all(d >= j - 1e-6)


# --------------------------------------------------------------------------------------
# fractional weights in the pair-based losses (NumPy references of the documented use)


def _normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _cos(x):
    z = _normalize(x)
    return z @ z.T


def _lse_w(v, w):
    sel = w > 0
    if not sel.any():
        return None
    return np.logaddexp.reduce(v[sel] + np.log(w[sel]))


def ref_contrastive(x, pos, neg, pos_margin=0.0, neg_margin=1.0):
    z = _normalize(x)
    d = np.sqrt(np.maximum(((z[:, None] - z[None]) ** 2).sum(-1), 0))
    lp, ln = np.maximum(d - pos_margin, 0), np.maximum(neg_margin - d, 0)

    def avg_nonzero(l, w):
        den = np.sum(w * (l > 0))
        return np.sum(w * l) / den if den > 0 else 0.0

    return avg_nonzero(lp, pos) + avg_nonzero(ln, neg)


def ref_multi_similarity(x, pos, neg, alpha=2.0, beta=50.0, base=0.5):
    s = _cos(x)
    out = []
    for i in range(len(x)):
        lp = np.logaddexp.reduce(np.concatenate([[0.0], (-alpha * (s[i] - base) + np.log(np.where(pos[i] > 0, pos[i], 1)))[pos[i] > 0]]))
        ln = np.logaddexp.reduce(np.concatenate([[0.0], (beta * (s[i] - base) + np.log(np.where(neg[i] > 0, neg[i], 1)))[neg[i] > 0]]))
        out.append(lp / alpha + ln / beta)
    return np.mean(out)


def ref_circle(x, pos, neg, m=0.4, gamma=80.0):
    s = _cos(x)
    out = []
    for i in range(len(x)):
        lp = _lse_w(-gamma * np.maximum(1 + m - s[i], 0) * (s[i] - 1 + m), pos[i])
        ln = _lse_w(gamma * np.maximum(s[i] + m, 0) * (s[i] - m), neg[i])
        out.append(np.logaddexp(0, lp + ln) if lp is not None and ln is not None else 0.0)
    out = np.array(out)
    return out[out > 0].mean() if (out > 0).any() else 0.0


def ref_ntxent(x, pos, neg, temperature=0.07):
    s = _cos(x) / temperature
    num, den = 0.0, 0.0
    for a in range(len(x)):
        ln = _lse_w(s[a], neg[a])
        for p in range(len(x)):
            if pos[a, p] > 0 and ln is not None:
                num += pos[a, p] * np.logaddexp(0, ln - s[a, p])
            den += pos[a, p]
    return num / den if den > 0 else 0.0


def ref_supcon(x, pos, neg, temperature=0.1):
    s = _cos(x) / temperature
    if not (pos > 0).any() or not (neg > 0).any():
        return 0.0
    out = []
    for i in range(len(x)):
        members = (pos[i] > 0) | (neg[i] > 0)
        if not (pos[i] > 0).any():
            out.append(0.0)
            continue
        lse = np.logaddexp.reduce(s[i][members])
        out.append(-np.sum(pos[i] * (s[i] - lse)) / np.sum(pos[i]))
    out = np.array(out)
    return out[out > 0].mean() if (out > 0).any() else 0.0


def _fd(f, x, h=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


WEIGHTED_LOSSES = [
    ("contrastive", jm.contrastive_loss, ref_contrastive, True),
    ("multi_similarity", jm.multi_similarity_loss, ref_multi_similarity, True),
    ("circle", jm.circle_loss, ref_circle, False),  # its weights are stop_gradient: value only
    ("ntxent", jm.ntxent_loss, ref_ntxent, True),
    ("supcon", jm.supcon_loss, ref_supcon, True),
]


@pytest.mark.parametrize("name,loss,ref,check_grad", WEIGHTED_LOSSES, ids=[w[0] for w in WEIGHTED_LOSSES])
@pytest.mark.parametrize("rule", ["jaccard", "cosine"])
def test_losses_honour_fractional_weights(name, loss, ref, check_grad, rule):
    rng = np.random.default_rng(1)
    y = random_multihot(rng, 8, 5, p=0.45)
    x = rng.normal(size=(8, 4))
    m = pair_mask(jnp.asarray(y.astype(np.float64)), rule=rule)
    pos, neg = np.asarray(m.pos, np.float64), np.asarray(m.neg, np.float64)
    assert np.any((pos > 0) & (pos < 1)), "the test needs fractional weights"
    v, g = jax.value_and_grad(lambda e: loss(e, m))(jnp.asarray(x))
    np.testing.assert_allclose(float(v), ref(x, pos, neg), rtol=1e-8, err_msg=name)
    if check_grad:
        np.testing.assert_allclose(np.asarray(g), _fd(lambda e: ref(e, pos, neg), x), rtol=1e-5, atol=1e-7, err_msg=name)
    # the weights matter: the unweighted (thresholded) mask gives another value
    m01 = pair_mask(jnp.asarray(y), rule=rule, weighted=False)
    assert not np.isclose(float(loss(jnp.asarray(x), m01)), float(v))


@pytest.mark.parametrize("name,loss", [(w[0], w[1]) for w in WEIGHTED_LOSSES] + [("triplet_margin", jm.triplet_margin_loss)])
def test_losses_accept_rule_masks_under_jit(name, loss):
    rng = np.random.default_rng(2)
    y = jnp.asarray(random_multihot(rng, 8, 5, p=0.45))
    x = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
    f = jax.jit(jax.value_and_grad(lambda e, y: loss(e, pair_mask(y, rule="jaccard", threshold=0.3))))
    v, g = f(x, y)
    assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g)))
    # "any" rule mask == multi-hot labels passed directly
    np.testing.assert_allclose(float(loss(x, pair_mask(y))), float(loss(x, y)), rtol=1e-6)


# --------------------------------------------------------------------------------------
# paired data


def test_paired_mask_structure():
    y = np.array([1, 0, 1, 1])
    b = len(y)
    m = paired_mask(jnp.asarray(y))
    pos, neg = np.asarray(m.pos), np.asarray(m.neg)
    assert pos.shape == (2 * b, 2 * b)
    for i in range(b):
        assert pos[i, b + i] == pos[b + i, i] == bool(y[i])
        assert neg[i, b + i] == neg[b + i, i] == (not y[i])
        for j in range(b):
            if i != j:
                assert neg[i, b + j] and neg[b + j, i] and not pos[i, b + j]
                assert not neg[i, j] and not neg[b + i, b + j]  # same side ignored by default
    assert pos.sum() == 2 * y.sum()
    m = paired_mask(jnp.asarray(y), other_pairs="ignore")
    assert np.asarray(m.neg).sum() == 2 * (b - y.sum())
    m = paired_mask(jnp.asarray(y), same_side="negative")
    assert np.asarray(m.neg)[0, 1] and not np.asarray(m.neg)[0, 0]
    c = paired_mask(jnp.asarray(y), layout="cross")
    np.testing.assert_array_equal(np.asarray(c.pos), np.diag(y.astype(bool)))
    np.testing.assert_array_equal(np.asarray(c.neg), ~np.diag(y.astype(bool)))
    w = paired_mask(jnp.asarray(y), where=jnp.array([True, True, False, True]))
    assert not np.asarray(w.pos)[2].any() and not np.asarray(w.neg)[:, 2].any() and not np.asarray(w.pos)[:, b + 2].any()
    with pytest.raises(ValueError, match="`pair_labels` must hold only 0 and 1"):
        paired_mask(jnp.array([0, 2]))
    with pytest.raises(ValueError, match="`other_pairs` must be one of"):
        paired_mask(jnp.array([0, 1]), other_pairs="positive")
    with pytest.raises(ValueError, match="`pair_labels` must be a 1-D"):
        paired_mask(jnp.ones((2, 2)))


def test_paired_contrastive_is_siamese_contrastive():
    """Only the explicit pairs (other_pairs='ignore'): Hadsell et al.'s loss over the pairs."""
    rng = np.random.default_rng(3)
    x1, x2 = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    y = np.array([1, 0, 1, 0, 0, 1])
    z1, z2 = _normalize(x1), _normalize(x2)
    d = np.linalg.norm(z1 - z2, axis=1)
    lp, ln = d[y == 1], np.maximum(1.0 - d[y == 0], 0)
    expected = lp[lp > 0].mean() + (ln[ln > 0].mean() if (ln > 0).any() else 0.0)
    v = jm.contrastive_loss(jnp.asarray(np.concatenate([x1, x2])), paired_mask(jnp.asarray(y), other_pairs="ignore"))
    np.testing.assert_allclose(float(v), expected, rtol=1e-9)
    # the cross layout with ref_emb gives the same pairs (one direction)
    v2 = jm.contrastive_loss(jnp.asarray(x1), paired_mask(jnp.asarray(y), other_pairs="ignore", layout="cross"), ref_emb=jnp.asarray(x2))
    np.testing.assert_allclose(float(v2), expected, rtol=1e-9)


def test_paired_ntxent_is_simclr_and_clip():
    rng = np.random.default_rng(4)
    x1, x2 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    ones = jnp.ones(5, jnp.int32)
    emb = jnp.asarray(np.concatenate([x1, x2]))
    # SimCLR: all 2B-2 other rows are negatives == class ids [0..B-1, 0..B-1]
    ids = jnp.concatenate([jnp.arange(5), jnp.arange(5)])
    np.testing.assert_allclose(
        float(jm.ntxent_loss(emb, paired_mask(ones, same_side="negative"))), float(jm.ntxent_loss(emb, ids)), rtol=1e-10
    )
    # CLIP-style, one direction: -log softmax_j(s_ij / t)[i]
    s = _normalize(x1) @ _normalize(x2).T / 0.07
    expected = np.mean([np.logaddexp.reduce(s[i]) - s[i, i] for i in range(5)])
    v = jm.ntxent_loss(jnp.asarray(x1), paired_mask(ones, layout="cross"), ref_emb=jnp.asarray(x2))
    np.testing.assert_allclose(float(v), expected, rtol=1e-9)
    # a negative explicit pair is no positive: it only enters the denominators
    y = jnp.array([1, 1, 0, 1, 1])
    v = jm.ntxent_loss(jnp.asarray(x1), paired_mask(y, layout="cross"), ref_emb=jnp.asarray(x2))
    expected = np.mean([np.logaddexp.reduce(s[i]) - s[i, i] for i in (0, 1, 3, 4)])
    np.testing.assert_allclose(float(v), expected, rtol=1e-9)
    g = jax.jit(jax.grad(lambda e: jm.ntxent_loss(e, paired_mask(y))))(emb)
    assert np.all(np.isfinite(np.asarray(g)))


# --------------------------------------------------------------------------------------
# PML index tuples with a static maximum length and -1 padding


def _pad(a, length):
    a = np.asarray(a)
    return np.concatenate([a, -np.ones(length - len(a), a.dtype)])


def test_from_indices_padding_under_jit_no_retrace():
    traces = []

    @jax.jit
    def build(a1, p, a2, n):
        traces.append(1)
        return jm.from_indices((a1, p, a2, n), 6)

    pairs = [([0, 1, 1], [2, 3, 3], [0, 4], [5, 1]), ([2, 5], [4, 0], [3, 3, 3, 0], [1, 1, 2, 4])]
    for a1, p, a2, n in pairs:
        padded = build(*(jnp.asarray(_pad(v, 8)) for v in (a1, p, a2, n)))
        ref = jm.from_indices(tuple(jnp.asarray(v) for v in (a1, p, a2, n)), 6)
        np.testing.assert_array_equal(np.asarray(padded.pos), np.asarray(ref.pos))
        np.testing.assert_array_equal(np.asarray(padded.neg), np.asarray(ref.neg))
    assert len(traces) == 1
    assert float(padded.neg[3, 1]) == 2.0  # a repeated pair counts twice

    @jax.jit
    def build3(a, p, n):
        return jm.from_indices((a, p, n), 5)

    t = build3(*(jnp.asarray(_pad(v, 6)) for v in ([0, 0, 2], [1, 1, 3], [4, 4, 0])))
    assert t.weights.shape == (5, 5, 5) and float(t.weights[0, 1, 4]) == 2.0 and float(t.weights.sum()) == 3.0


def test_padded_indices_match_pml():
    pml = pytest.importorskip("tests.pml_utils")
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(7, 4))
    a1, p, a2, n = [0, 1, 2, 2], [1, 0, 3, 3], [0, 4, 5, 6, 6], [3, 2, 1, 0, 0]
    tup = (a1, p, a2, n)
    mask = jax.jit(lambda *t: jm.from_indices(t, 7))(*(jnp.asarray(_pad(v, 9)) for v in tup))
    for name, jl, pl in [
        ("contrastive", jm.contrastive_loss, pml.pml_losses.ContrastiveLoss()),
        ("ntxent", jm.ntxent_loss, pml.pml_losses.NTXentLoss()),
    ]:
        v, g, _ = pml.jax_value_and_grads(lambda e: jl(e, mask), emb)
        pv, pg, _, _ = pml.pml_value_and_grads(pl, emb, None, indices_tuple=tup)
        pml.assert_close(v, pv, what=name)
        pml.assert_close(g, pg, what=name)
    # triplets (a, p, n) padded
    a, pp, nn = [0, 1, 2, 3], [1, 0, 3, 2], [4, 5, 6, 4]
    tmask = jax.jit(lambda *t: jm.from_indices(t, 7))(*(jnp.asarray(_pad(v, 6)) for v in (a, pp, nn)))
    v, g, _ = pml.jax_value_and_grads(lambda e: jm.triplet_margin_loss(e, tmask, margin=0.5), emb)
    pv, pg, _, _ = pml.pml_value_and_grads(pml.pml_losses.TripletMarginLoss(margin=0.5), emb, None, indices_tuple=(a, pp, nn))
    pml.assert_close(v, pv, what="triplet")
    pml.assert_close(g, pg, what="triplet")


def test_triplet_margin_uses_weight_products():
    """triplet_margin_loss: each (a, p, n) triplet counts w_ap * w_an times in the avg_nonzero mean."""
    rng = np.random.default_rng(6)
    y = random_multihot(rng, 7, 5, p=0.45)
    x = rng.normal(size=(7, 3))
    m = pair_mask(jnp.asarray(y.astype(np.float64)), rule="dice")
    pos, neg = np.asarray(m.pos, np.float64), np.asarray(m.neg, np.float64)
    z = _normalize(x)
    d = np.sqrt(np.maximum(((z[:, None] - z[None]) ** 2).sum(-1), 0))
    l = np.maximum(d[:, :, None] - d[:, None, :] + 0.2, 0)
    w = pos[:, :, None] * neg[:, None, :]
    expected = np.sum(w * l) / np.sum(w * (l > 0))
    np.testing.assert_allclose(float(jm.triplet_margin_loss(jnp.asarray(x), m, margin=0.2)), expected, rtol=1e-9)
