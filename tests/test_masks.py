"""The masks (jaxmetric/masks.py): pair masks from class ids and multi-hot labels, index tuples
(from_indices) and their errors, pytrees."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from tests.pml_utils import assert_close

LOSSES = [jm.contrastive_loss, jm.triplet_margin_loss, jm.multi_similarity_loss, jm.circle_loss, jm.ntxent_loss, jm.supcon_loss]


def _batch(seed=0, b=16, dim=8, classes=4, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(b, dim)).astype(dtype)), jnp.asarray(rng.integers(0, classes, b))


def test_pair_mask_class_ids_and_multi_hot():
    y = jnp.array([0, 0, 1, 2])
    m = jm.pair_mask(y)
    assert m.pos.dtype == jnp.bool_
    np.testing.assert_array_equal(m.pos, [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(m.neg, [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]])
    mh = jnp.array([[1, 0, 1], [0, 0, 1], [0, 1, 0], [0, 0, 0]])
    m = jm.pair_mask(mh)
    np.testing.assert_array_equal(m.pos, [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(m.neg, [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]])
    # With a reference set the diagonal is kept (PML: the reference is another set).
    m = jm.pair_mask(y, y)
    assert bool(m.pos[0, 0])
    m = jm.pair_mask(y, where=jnp.array([True, False, True, True]))
    assert not m.pos[0, 1] and not m.neg[1, 2]


def test_multi_hot_equals_class_ids_for_one_hot():
    emb, y = _batch(2)
    onehot = jax.nn.one_hot(y, 4, dtype=jnp.int32)
    for fn in LOSSES:
        assert_close(fn(emb, onehot), fn(emb, y), what=fn.__name__)


def test_from_indices_padding_under_jit():
    a = jnp.array([0, 1, -1, -1])
    p = jnp.array([1, 0, -1, -1])
    m = jax.jit(lambda t: jm.from_indices(t, 4))((a, p, a, jnp.array([2, 3, -1, -1])))
    assert float(m.pos.sum()) == 2 and float(m.neg.sum()) == 2
    t = jm.from_indices((jnp.array([0, 0, -1]), jnp.array([1, 1, -1]), jnp.array([2, 2, -1])), 3)
    assert isinstance(t, jm.TripletMask) and float(t.weights[0, 1, 2]) == 2
    pairs = t.to_pairs()
    assert float(pairs.pos[0, 1]) == 2 and float(pairs.neg[0, 2]) == 2


def test_from_indices_refuses_out_of_range_and_negative_indices():
    a, p, n = jnp.array([0, 1]), jnp.array([1, 2]), jnp.array([2, 3])
    for bad, pos in ((16, 1), (99, 0), (-2, 1)):
        with pytest.raises(ValueError, match=rf"from_indices: `p` must hold indices in \[0, 16\) or -1 \(padding\); got {bad} .*batch_size = 16"):
            jm.from_indices((a, p.at[pos].set(bad), a, n), 16)
        with pytest.raises(ValueError, match=rf"`n` .*got {bad} at position {pos} \(batch_size = 16\)"):
            jm.from_indices((a, p, n.at[pos].set(bad)), 16)
        with pytest.raises(ValueError, match=rf"`a2` .*got {bad} at position {pos} \(batch_size = 16\)"):
            jm.from_indices((a, p, a.at[pos].set(bad), n), 16)
    # positives and negatives index the references
    with pytest.raises(ValueError, match=r"`p` .*\[0, 5\).*got 5 .*num_refs = 5"):
        jm.from_indices((a, jnp.array([1, 5]), a, n), 16, 5)
    # concatenated pairs: len(x1) instead of 2B is refused, not a zero loss
    x1 = jnp.zeros((4, 3))
    pairs = (jnp.arange(4), jnp.arange(4) + 4, jnp.arange(4), (jnp.arange(4) + 5) % 8)
    with pytest.raises(ValueError, match=r"got 4 at position 0 \(batch_size = 4\)"):
        jm.from_indices(pairs, len(x1))
    assert float(jm.from_indices(pairs, 2 * len(x1)).pos.sum()) == 4


def test_from_indices_refuses_unequal_lengths():
    a = jnp.array([0, 1, 2])
    with pytest.raises(ValueError, match=r"`p` must have the length of `a1` \(3"):
        jm.from_indices((a, a[:2], a, a), 4)
    with pytest.raises(ValueError, match=r"`n` must have the length of `a2` \(3"):
        jm.from_indices((a, a, a, a[:1]), 4)
    with pytest.raises(ValueError, match=r"`n` must have the length of `a` \(3"):
        jm.from_indices((a, a, a[:2]), 4)


def test_from_indices_traced_out_of_range_is_nan_and_checkified():
    from jax.experimental import checkify

    emb = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)

    def step(e, a, p, n):
        return jm.triplet_margin_loss(e, jm.from_indices((a, p, n), 4))

    good = (jnp.array([0, 1]), jnp.array([1, 0]), jnp.array([2, 3]))
    bad = (jnp.array([0, 1]), jnp.array([1, 9]), jnp.array([2, 3]))
    assert np.isfinite(float(jax.jit(step)(emb, *good)))
    assert np.isnan(float(jax.jit(step)(emb, *bad)))
    checked = jax.jit(jm.checkify_finite(step))
    err, value = checked(emb, *good)
    assert err.get() is None and np.isfinite(float(value))
    err, _ = checked(emb, *bad)
    assert "from_indices: `p` must hold indices in [0, 4) or -1 (padding); got 9 at position 1 (batch_size = 4)" in err.get()
    with pytest.raises(checkify.JaxRuntimeError):
        err.throw()
    # padding (-1) stays valid under jit
    pad = (jnp.array([0, -1]), jnp.array([1, -1]), jnp.array([2, -1]))
    err, value = checked(emb, *pad)
    assert err.get() is None and np.isfinite(float(value))


def test_from_indices_takes_torch_numpy_and_list_indices():
    torch = pytest.importorskip("torch")
    tup = ([0, 1, 2], [1, 0, 3], [0, 2, 2], [2, 3, 1])
    want = jm.from_indices(tuple(jnp.asarray(t) for t in tup), 4)
    for kind in (lambda t: torch.tensor(t), np.asarray, list):
        got = jm.from_indices(tuple(kind(t) for t in tup), 4)
        np.testing.assert_array_equal(got.pos, want.pos)
        np.testing.assert_array_equal(got.neg, want.neg)
    got = jax.jit(lambda: jm.from_indices(tuple(torch.tensor(t) for t in tup), 4))()
    np.testing.assert_array_equal(got.pos, want.pos)


def test_an_index_tuple_in_the_labels_slot_points_to_from_indices():
    emb = jnp.zeros((16, 3))
    tup = (jnp.array([0, 1]), jnp.array([2, 3]), jnp.array([4, 5]))
    for fn in (jm.circle_loss, jm.contrastive_loss, jm.batch_hard_miner):
        with pytest.raises(TypeError, match=r"`labels` must be labels, not a PML indices_tuple.*jaxmetric.from_indices\(indices_tuple, 16\)"):
            fn(emb, tup)
        with pytest.raises(TypeError, match=r"from_indices"):
            fn(emb, list(tup) + [jnp.array([6, 7])])
    # PML's third positional argument
    with pytest.raises(TypeError, match=r"circle_loss\(embeddings, miner\(embeddings, labels\)\)"):
        jm.circle_loss(emb, jnp.zeros(16, jnp.int32), jm.from_indices(tup, 16))


def test_masks_are_pytrees():
    m = jm.pair_mask(jnp.array([0, 0, 1]))
    leaves, tree = jax.tree_util.tree_flatten(m)
    assert len(leaves) == 2
    out = jax.jit(lambda mm: jm.PairMask(mm.pos, mm.neg))(m)
    np.testing.assert_array_equal(out.pos, m.pos)
