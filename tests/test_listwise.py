"""FastAP, Smooth-AP and PNP: parity with PML 2.9 (float64, value and gradient), pinned
differences, blocking, padding and input errors.

Batches are 12 x 8 throughout so that tests share compiled functions (see ``jvg``).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from loss_parity import check, jvg, pml, random_pairs, random_triplets, sorted_blocks
from pml_utils import assert_close, pml_distances, pml_losses

B, D = 12, 8


def _emb(rng, b=B):
    return rng.normal(size=(b, D))


# ----------------------------------------------------------------------------- FastAP

@pytest.mark.parametrize("non_default", [False, True])
def test_fast_ap_parity(rng, non_default):
    emb, labels = _emb(rng), rng.integers(0, 3, B)
    if non_default:
        kw = {"num_bins": 7, "distance": jm.LpDistance(power=1)}
        pfn = pml_losses.FastAPLoss(num_bins=7, distance=pml_distances.LpDistance(power=1))
    else:
        kw, pfn = {}, pml_losses.FastAPLoss()
    pv, pg, _, _ = pml(pfn, emb, labels)
    jv, jg = jvg(jm.fast_ap_loss, (emb,), (labels,), kw)
    check(jv, jg, pv, [pg])


@pytest.mark.parametrize("name", ["fast_ap", "smooth_ap"])
def test_miner_output_is_pml_convert_to_weights(rng, name):
    """PML's indices_tuple -> per-sample weights (count / max count) == ``miner_output``."""
    labels = sorted_blocks(4, 3)
    emb = _emb(rng)
    jfn, pfn = {"fast_ap": (jm.fast_ap_loss, pml_losses.FastAPLoss()), "smooth_ap": (jm.smooth_ap_loss, pml_losses.SmoothAPLoss())}[name]
    # Smooth-AP: PML's relevant sets are blocks of g = #classes (see the pinned quirk below).
    relevant = labels if name == "fast_ap" else _pml_block_mask(B, 4)
    f = lambda e, lab, m: jfn(e, lab, miner_output=m)  # noqa: E731
    for tup in (random_pairs(rng, labels), random_triplets(rng, labels)):
        mined = jm.from_indices(tuple(jnp.asarray(t) for t in tup), B, dtype=jnp.float64)
        pv, pg, _, _ = pml(pfn, emb, labels, indices_tuple=tup)
        jv, jg = jvg(f, (emb,), (relevant, mined))
        check(jv, jg, pv, [pg], f"{name} {len(tup)}-tuple")


@pytest.mark.parametrize("name", ["fast_ap", "smooth_ap"])
def test_miner_output_in_a_compact_triplet_form_weights_as_its_dense_cube(rng, name):
    """Margin-, angle- and list-form TripletMasks (what the triplet miners return) give the
    weights of their dense cube, padded rows dropped, without building the cube."""
    fn = {"fast_ap": jm.fast_ap_loss, "smooth_ap": jm.smooth_ap_loss}[name]
    emb, labels = jnp.asarray(_emb(rng)), jnp.asarray(sorted_blocks(4, 3))
    where = jnp.arange(B) % 5 != 2
    forms = {
        "margin": jm.triplet_margin_miner(emb, labels, margin=0.5),
        "angle": jm.angular_miner(emb, labels, angle=20),
        "list": jm.TripletMask.from_lists(jnp.asarray(rng.integers(0, B, (B, 3))), jnp.asarray(rng.integers(0, B, (B, 3))),
                                          jnp.asarray(rng.integers(0, 3, (B, 3))), num_refs=B),
    }
    for form, mined in forms.items():
        assert mined.form == form
        dense = jm.TripletMask.dense(mined.to_dense())
        for kw in ({}, {"where": where}):
            got = jax.value_and_grad(lambda e: fn(e, labels, miner_output=mined, **kw))(emb)
            want = jax.value_and_grad(lambda e: fn(e, labels, miner_output=dense, **kw))(emb)
            assert_close(got[0], want[0], rtol=1e-12)
            assert_close(got[1], want[1], rtol=1e-12, atol=1e-15)
    small = jm.triplet_margin_miner(emb[:10], labels[:10], margin=0.5)
    with pytest.raises(ValueError, match=rf"{name}_loss: `miner_output` \(a margin-form TripletMask\) must have shape \(12, 12, 12\); got shape \(10, 10, 10\)"):
        fn(emb, labels, miner_output=small)


def test_labels_multihot_and_pairmask_agree(rng):
    emb, labels = jnp.asarray(_emb(rng)), jnp.asarray(rng.integers(0, 3, B))
    onehot = jax.nn.one_hot(labels, 3, dtype=jnp.int32)
    mask = jm.pair_mask(labels)
    f = jax.jit(jm.fast_ap_loss)  # one resolve path for all losses of this module
    ref = f(emb, labels)
    assert_close(f(emb, onehot), ref)
    assert_close(f(emb, mask), ref)


# ----------------------------------------------------------------------------- Smooth-AP

def test_smooth_ap_parity_authors_setting(rng):
    """Contiguous classes with #classes == samples per class (the authors' batches): PML's
    blocks are the classes, so the label-based definition is PML's."""
    labels = sorted_blocks(3, 3)
    for dyn in ({"temperature": 0.01}, {"temperature": 0.1}):  # default, non-default
        emb = _emb(rng, 9)
        pv, pg, _, _ = pml(pml_losses.SmoothAPLoss(**dyn), emb, labels)
        jv, jg = jvg(jm.smooth_ap_loss, (emb,), (labels,), dyn=dyn)
        check(jv, jg, pv, [pg], str(dyn))


def _pml_block_mask(n, g):
    block = np.arange(n) // g
    pos = (block[:, None] == block[None, :]) & ~np.eye(n, dtype=bool)
    return jm.PairMask(pos=jnp.asarray(pos), neg=jnp.asarray(~pos & ~np.eye(n, dtype=bool)))


@pytest.mark.parametrize(
    "labels",
    [sorted_blocks(3, 4), sorted_blocks(2, 6), np.array([2, 0, 1, 1, 2, 0, 0, 1, 2, 0, 1, 2]), np.zeros(B, int), np.arange(B)],
    ids=["3x4", "2x6", "shuffled", "one_class", "all_distinct"],
)
def test_smooth_ap_pml_block_quirk_pinned(rng, labels):
    """PML 2.9.0 ranks each query against the contiguous block of size g = #classes around it
    (whatever the labels say, given equal counts). jaxmetric reproduces that exactly from a
    PairMask of those blocks, and differs from it with the labels whenever blocks != classes."""
    g = len(np.unique(labels))
    emb = _emb(rng)
    dyn = {"temperature": 0.5}  # with 0.01 the query's own top rank hides the edge-case differences
    pv, pg, _, _ = pml(pml_losses.SmoothAPLoss(**dyn), emb, labels)
    jv, jg = jvg(jm.smooth_ap_loss, (emb,), (_pml_block_mask(B, g),), dyn=dyn)
    check(jv, jg, pv, [pg])
    ours, _ = jvg(jm.smooth_ap_loss, (emb,), (jm.pair_mask(jnp.asarray(labels)),), dyn=dyn)
    assert abs(ours - pv) > 1e-3
    if g == 1:  # one class: every item is relevant, AP = 1 (PML: blocks of one, loss > 0)
        assert ours == pytest.approx(0.0, abs=1e-12) and pv > 0.05
    if g == B:  # all distinct: PML ranks the whole batch as relevant (loss 0)
        assert pv == pytest.approx(0.0, abs=1e-12) and ours > 0.05


def test_smooth_ap_unequal_counts_are_fine(rng):
    """PML raises ValueError for unequal class counts; the label-based definition does not
    need equal counts."""
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3])
    emb = _emb(rng)
    with pytest.raises(ValueError):
        pml(pml_losses.SmoothAPLoss(), emb, labels)
    v, (g,) = jvg(jm.smooth_ap_loss, (emb,), (labels,))
    assert np.isfinite(v) and np.all(np.isfinite(g)) and 0 < v < 1


# ----------------------------------------------------------------------------- PNP

@pytest.mark.parametrize("variant", ["O", "Ds", "Dq", "Iu", "Ib"])
def test_pnp_parity(rng, variant):
    labels = rng.integers(0, 4, B)
    default = {"b": 2.0, "alpha": 1.0, "anneal": 0.01}
    nondefault = {"Ib": {"b": 3.0, "alpha": 1.0, "anneal": 0.05}, "Dq": {"b": 2.0, "alpha": 2.0, "anneal": 0.1}}.get(variant, {"b": 2.0, "alpha": 1.0, "anneal": 0.5})
    for dyn in (default, nondefault):
        emb = _emb(rng)
        pv, pg, _, _ = pml(pml_losses.PNPLoss(variant=variant, **dyn), emb, labels)
        jv, jg = jvg(jm.pnp_loss, (emb,), (labels,), {"variant": variant}, dyn)
        check(jv, jg, pv, [pg], f"{variant} {dyn}")


# ----------------------------------------------------------------------------- shared

@pytest.mark.parametrize("name", ["fast_ap", "pnp"])
def test_edge_batches_parity(rng, name):
    jfn, pfn = {"fast_ap": (jm.fast_ap_loss, pml_losses.FastAPLoss()), "pnp": (jm.pnp_loss, pml_losses.PNPLoss())}[name]
    static = {"variant": "O"} if name == "pnp" else {}
    dyn = {"b": 2.0, "alpha": 1.0, "anneal": 0.01} if name == "pnp" else {}  # shares test_pnp_parity's compile
    for labels in (np.zeros(B, int), np.arange(B)):
        emb = _emb(rng)
        pv, pg, _, _ = pml(pfn, emb, labels)
        jv, jg = jvg(jfn, (emb,), (labels,), static, dyn)
        check(jv, jg, pv, [pg], f"{name} {labels}")


@pytest.mark.parametrize("fn", [jm.smooth_ap_loss, jm.pnp_loss])
def test_blocks_equal_dense(rng, fn):
    emb, labels = _emb(rng), rng.integers(0, 3, B)
    v, g = jvg(fn, (emb,), (labels,))
    bv, bg = jvg(fn, (emb,), (labels,), {"block_size": 5})  # 3 blocks, the last one padded
    assert_close(bv, v)
    assert_close(bg[0], g[0])


@pytest.mark.parametrize("fn", [jm.fast_ap_loss, jm.smooth_ap_loss, jm.pnp_loss])
def test_where_padding_equals_unpadded(rng, fn):
    emb, labels = _emb(rng, 9), rng.integers(0, 3, 9)
    pad_emb = np.concatenate([emb, rng.normal(size=(3, D))])
    pad_lab = np.concatenate([labels, labels[:3]])
    where = jnp.asarray(np.arange(B) < 9)
    v, (g,) = jvg(fn, (emb,), (labels,))
    pv, (pgr,) = jvg(lambda e, y, w: fn(e, y, where=w), (pad_emb,), (pad_lab, where))
    assert_close(pv, v)
    assert_close(pgr[:9], g)
    assert np.all(pgr[9:] == 0)


@pytest.mark.parametrize("fn", [jm.fast_ap_loss, jm.smooth_ap_loss, jm.pnp_loss])
def test_reference_set_rejected(fn):
    emb, labels = jnp.ones((6, 4)), jnp.arange(6) % 2
    with pytest.raises(ValueError, match="ref_emb.*not supported"):
        fn(emb, labels, ref_emb=emb, ref_labels=labels)
    with pytest.raises(ValueError, match="ref_labels.*not supported"):
        fn(emb, labels, ref_labels=labels)


def test_bad_inputs():
    emb, labels = jnp.ones((6, 4)), jnp.arange(6) % 2
    cases = [
        (ValueError, "pnp_loss: `variant`", lambda: jm.pnp_loss(emb, labels, variant="X")),
        (TypeError, "pnp_loss: `distance` must be a CosineSimilarity", lambda: jm.pnp_loss(emb, labels, distance=jm.LpDistance())),
        (ValueError, "pnp_loss: `b` must be > 0", lambda: jm.pnp_loss(emb, labels, variant="Ib", b=0.0)),
        (TypeError, "smooth_ap_loss: `distance` must be a CosineSimilarity", lambda: jm.smooth_ap_loss(emb, labels, distance=jm.DotProductSimilarity())),
        (ValueError, "fast_ap_loss: `distance` must be LpDistance with normalize", lambda: jm.fast_ap_loss(emb, labels, distance=jm.LpDistance(normalize_embeddings=False))),
        (TypeError, "fast_ap_loss: `distance` must be a LpDistance", lambda: jm.fast_ap_loss(emb, labels, distance=jm.CosineSimilarity())),
        (TypeError, "fast_ap_loss: `num_bins` must be a Python int", lambda: jm.fast_ap_loss(emb, labels, num_bins=2.5)),
        (ValueError, "smooth_ap_loss: `temperature` must be > 0", lambda: jm.smooth_ap_loss(emb, labels, temperature=0.0)),
        (ValueError, "smooth_ap_loss: `block_size` must be None or a positive int; got 0", lambda: jm.smooth_ap_loss(emb, labels, block_size=0)),
        (ValueError, "fast_ap_loss: `labels` must have 6 rows", lambda: jm.fast_ap_loss(emb, labels[:5])),
        (TypeError, "fast_ap_loss: `labels` as class ids must have an integer dtype", lambda: jm.fast_ap_loss(emb, labels.astype(jnp.float32))),
        (ValueError, "pnp_loss: `embeddings` must be a 2-D float array", lambda: jm.pnp_loss(emb[0], labels)),
        (ValueError, r"smooth_ap_loss: `miner_output` \(PairMask.pos\) must have shape \(6, 6\)", lambda: jm.smooth_ap_loss(emb, labels, miner_output=jm.PairMask(jnp.ones((5, 6)), jnp.ones((5, 6))))),
        (TypeError, "fast_ap_loss: `miner_output` must be a jaxmetric PairMask or TripletMask", lambda: jm.fast_ap_loss(emb, labels, miner_output=jnp.ones((6, 6)))),
        (ValueError, "fast_ap_loss: `reduction` must be one of", lambda: jm.fast_ap_loss(emb, labels, reduction="avg")),
    ]
    for exc, msg, call in cases:
        with pytest.raises(exc, match=msg):
            call()
