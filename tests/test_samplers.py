"""Samplers: PML semantics (lengths, per-batch structure), fixed batch sizes, seeding, errors."""
import collections

import numpy as np
import pytest

import jaxmetric as jm
from jaxmetric import samplers

pml_samplers = pytest.importorskip("pytorch_metric_learning.samplers")


def class_labels(n=200, classes=10, seed=0):
    return np.random.default_rng(seed).integers(0, classes, n)


# ----------------------------------------------------------------- MPerClassSampler
@pytest.mark.pml
@pytest.mark.parametrize(
    "m, batch_size, length",
    [(4, 32, 1000), (4, None, 1000), (3, 12, 100), (2, None, 7), (5, 40, 40), (4, None, 100000)],
)
def test_m_per_class_sampler_lengths_equal_pml(m, batch_size, length):
    labels = class_labels()
    ours = samplers.MPerClassSampler(labels, m, batch_size, length)
    theirs = pml_samplers.MPerClassSampler(labels, m, batch_size, length)
    assert len(ours) == len(theirs)
    assert ours.calculate_num_iters() == theirs.calculate_num_iters()
    assert len(list(ours)) == len(list(theirs))  # incl. PML's overshoot when one pass > length


def test_m_per_class_sampler_chunks_hold_m_per_class():
    labels = class_labels()
    sampler = samplers.MPerClassSampler(labels, 4, 32, 1000, seed=1)
    batches = list(sampler.batches())
    assert len(batches) == len(sampler) // 32 and all(b.shape == (32,) and b.dtype == np.int64 for b in batches)
    for b in batches:
        counts = collections.Counter(labels[b].tolist())
        assert len(counts) == 8 and set(counts.values()) == {4}
        for c in counts:  # without replacement when the class has >= m samples
            assert len(set(b[labels[b] == c].tolist())) == 4


def test_m_per_class_sampler_without_batch_size_covers_every_class_each_pass():
    labels = class_labels()
    stream = np.array(list(samplers.MPerClassSampler(labels, 2, None, 100, seed=0)))
    assert len(stream) == 100
    for p in range(5):
        counts = collections.Counter(labels[stream[p * 20 : (p + 1) * 20]].tolist())
        assert set(counts) == set(range(10)) and set(counts.values()) == {2}


def test_m_per_class_sampler_small_class_with_replacement():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 10)
    sampler = samplers.MPerClassSampler(labels, 4, 8, 80, seed=0)
    for b in sampler.batches():
        assert collections.Counter(labels[b].tolist()).most_common(1)[0][1] == 4


def test_samplers_are_seeded_and_continue_their_stream():
    labels = class_labels()
    a = samplers.MPerClassSampler(labels, 4, 32, 320, seed=3)
    b = samplers.MPerClassSampler(labels, 4, 32, 320, seed=3)
    first_a, first_b = list(a), list(b)
    assert first_a == first_b
    assert list(a) != first_a  # a new iteration draws new batches
    c = samplers.MPerClassSampler(labels, 4, 32, 320, seed=4)
    assert list(c) != first_a


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(m=3, batch_size=20), "multiple of m"),
        (dict(m=4, batch_size=64, length_before_new_iter=32), "length_before_new_iter"),
        (dict(m=2, batch_size=64), "must be >= batch_size"),
        (dict(m=0), "`m`"),
    ],
)
def test_m_per_class_sampler_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        samplers.MPerClassSampler(class_labels(), **kwargs)
    with pytest.raises(ValueError, match="labels"):
        samplers.MPerClassSampler(np.zeros((4, 2)), 2)


# ------------------------------------------------------------ m_per_class_batches
def test_m_per_class_batches_cover_every_class_each_epoch():
    labels = class_labels(n=300, classes=12)
    batches = list(samplers.m_per_class_batches(labels, 4, 24, seed=0, num_batches=8))
    assert all(b.shape == (24,) for b in batches)
    for b in batches:
        assert set(collections.Counter(labels[b].tolist()).values()) == {4}
    # 6 classes per batch, 12 classes: every pair of consecutive batches covers all classes.
    for i in range(0, 8, 2):
        assert set(labels[np.concatenate(batches[i : i + 2])].tolist()) == set(range(12))
    assert len(list(samplers.m_per_class_batches(labels, 4, 24))) == 300 // 24
    with pytest.raises(ValueError, match="classes per batch"):
        list(samplers.m_per_class_batches(labels, 2, 40))


# ------------------------------------------------------------ m_per_label_batches
def multi_hot(n=150, c=8, seed=0):
    y = (np.random.default_rng(seed).random((n, c)) < 0.2).astype(np.int32)
    y[:, 7] = 0  # a label nobody carries
    return y


def test_m_per_label_batches_structure_and_coverage():
    y = multi_hot()
    batches = list(samplers.m_per_label_batches(y, 4, 16, seed=0, num_batches=7))
    assert all(b.shape == (16,) and b.dtype == np.int64 for b in batches)
    seen = set()
    for b in batches:
        assert y[b].sum(1).min() >= 1  # samples without labels are never drawn
        assert len(set(b.tolist())) == 16  # no repeats while labels have unused samples
        # every chosen label has at least m carriers in the batch
        assert (y[b].sum(0) >= 4).sum() >= 4
        seen.update(np.flatnonzero(y[b].sum(0) >= 4).tolist())
    assert seen == set(range(7))  # 7 batches x 4 labels cover the 7 carried labels
    assert list(samplers.m_per_label_batches(y, 4, 16, seed=0, num_batches=3))[0].tolist() == batches[0].tolist()


def test_m_per_label_batches_errors():
    y = multi_hot()
    with pytest.raises(ValueError, match="multi-hot"):
        list(samplers.m_per_label_batches(np.arange(5), 2, 4))
    with pytest.raises(ValueError, match="only 0 and 1"):
        list(samplers.m_per_label_batches(y * 2, 2, 4))
    with pytest.raises(ValueError, match="labels per batch"):
        list(samplers.m_per_label_batches(y, 1, 8))
    with pytest.raises(ValueError, match="multiple of `m`"):
        list(samplers.m_per_label_batches(y, 3, 8))


# ------------------------------------------------------------ HierarchicalSampler
def hierarchical_labels(supers=3, classes_per_super=6, per_class=5):
    rows = [(s * 100 + c, s) for s in range(supers) for c in range(classes_per_super) for _ in range(per_class)]
    return np.array(rows)


@pytest.mark.pml
def test_hierarchical_sampler_matches_pml_structure():
    labels = hierarchical_labels()
    ours = samplers.HierarchicalSampler(labels, 16, 4, batches_per_super_tuple=3, seed=0)
    theirs = pml_samplers.HierarchicalSampler(labels, 16, 4, batches_per_super_tuple=3)
    assert len(ours) == len(theirs) == 3 * 3  # C(3, 2) super pairs x 3
    assert sorted(len(b) for b in ours) == sorted(len(b) for b in theirs)
    for b in ours:
        assert b.shape == (16,)
        supers = collections.Counter(labels[b, 1].tolist())
        assert len(supers) == 2 and set(supers.values()) == {8}
        assert set(collections.Counter(labels[b, 0].tolist()).values()) == {4}


@pytest.mark.pml
def test_hierarchical_short_batches_policies():
    # Each super-class has 2 classes x 3 samples = 6 < sub-batch of 8: PML yields short batches.
    labels = hierarchical_labels(supers=2, classes_per_super=2, per_class=3)
    pml_sizes = [len(b) for b in pml_samplers.HierarchicalSampler(labels, 16, 2, batches_per_super_tuple=2)]
    keep = samplers.HierarchicalSampler(labels, 16, 2, batches_per_super_tuple=2, short_batches="keep")
    assert sorted(len(b) for b in keep) == sorted(pml_sizes) and max(pml_sizes) < 16
    fill = list(samplers.HierarchicalSampler(labels, 16, 2, batches_per_super_tuple=2))
    assert len(fill) == 2 and all(b.shape == (16,) for b in fill)
    for b in fill:
        assert set(collections.Counter(labels[b, 1].tolist()).values()) == {8}
    assert len(list(samplers.HierarchicalSampler(labels, 16, 2, batches_per_super_tuple=2, short_batches="drop"))) == 0
    with pytest.raises(ValueError, match="short_batches"):
        samplers.HierarchicalSampler(labels, 16, 2, short_batches="pad")
    with pytest.raises(ValueError, match="multiple of"):
        samplers.HierarchicalSampler(labels, 15, 2)
    with pytest.raises(ValueError, match="samples_per_class"):
        samplers.HierarchicalSampler(labels, 16, 3)


def test_hierarchical_all_samples_per_class():
    labels = hierarchical_labels(per_class=4)
    for b in samplers.HierarchicalSampler(labels, 16, "all", seed=1):
        assert b.shape == (16,) and set(collections.Counter(labels[b, 0].tolist()).values()) == {4}


# ------------------------------------------------------------ FixedSetOfTriplets
@pytest.mark.pml
def test_fixed_set_of_triplets_semantics():
    labels = class_labels(n=60, classes=5)
    labels[0] = 9  # a class with one sample: anchor == positive is possible, as in PML
    sampler = samplers.FixedSetOfTriplets(labels, 50, seed=0)
    assert len(sampler) == len(pml_samplers.FixedSetOfTriplets(labels, 50)) == 150
    t = sampler.triplets
    assert t.shape == (50, 3)
    assert np.all(labels[t[:, 0]] == labels[t[:, 1]]) and np.all(labels[t[:, 0]] != labels[t[:, 2]])
    multi = np.array([np.sum(labels == labels[a]) > 1 for a in t[:, 0]])
    assert np.all(t[multi, 0] != t[multi, 1])
    before = {tuple(r) for r in t.tolist()}
    flat = list(sampler)
    assert len(flat) == 150 and {tuple(flat[i : i + 3]) for i in range(0, 150, 3)} == before  # shuffled rows, same set


def test_fixed_set_of_triplets_batches_feed_a_triplet_mask():
    import jax.numpy as jnp

    labels = class_labels(n=60, classes=5)
    sampler = samplers.FixedSetOfTriplets(labels, 40, seed=1)
    batches = list(sampler.batches(8))
    assert len(batches) == 5 and all(b.shape == (24,) for b in batches)
    mask = jm.from_indices(sampler.indices_tuple(8), 24)
    assert isinstance(mask, jm.TripletMask) and float(jnp.sum(mask.weights)) == 8
    b = batches[0]
    emb = jnp.asarray(np.random.default_rng(0).normal(size=(24, 4)))
    explicit = jm.triplet_margin_loss(emb, mask)
    a, p, n = (np.asarray(x) for x in sampler.indices_tuple(8))
    assert np.all(labels[b[a]] == labels[b[p]]) and np.all(labels[b[a]] != labels[b[n]])
    assert np.isfinite(float(explicit))
    with pytest.raises(ValueError, match="at least 2 classes"):
        samplers.FixedSetOfTriplets(np.zeros(5, int), 3)
