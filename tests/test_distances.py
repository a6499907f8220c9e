"""The distances (jaxmetric/distances.py): PML parity of value and gradient, finite gradients at
zero vectors and duplicates, static hashable objects."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from tests.pml_utils import assert_close, pml_distances, torch

DISTANCES = [
    (lambda: pml_distances.LpDistance(), jm.LpDistance()),
    (lambda: pml_distances.LpDistance(power=2), jm.LpDistance(power=2)),
    (lambda: pml_distances.LpDistance(p=1, normalize_embeddings=False), jm.LpDistance(p=1, normalize_embeddings=False)),
    (lambda: pml_distances.LpDistance(p=3, power=0.5), jm.LpDistance(p=3, power=0.5)),
    (lambda: pml_distances.LpDistance(normalize_embeddings=False, power=3), jm.LpDistance(normalize_embeddings=False, power=3)),
    (lambda: pml_distances.CosineSimilarity(), jm.CosineSimilarity()),
    (lambda: pml_distances.DotProductSimilarity(), jm.DotProductSimilarity()),
    (lambda: pml_distances.DotProductSimilarity(normalize_embeddings=False), jm.DotProductSimilarity(normalize_embeddings=False)),
    (lambda: pml_distances.SNRDistance(), jm.SNRDistance()),
    (lambda: pml_distances.SNRDistance(normalize_embeddings=False, power=2), jm.SNRDistance(normalize_embeddings=False, power=2)),
]


@pytest.mark.pml
@pytest.mark.parametrize("pair", DISTANCES, ids=[repr(d[1]) for d in DISTANCES])
def test_distance_matches_pml(pair):
    ctor, dist = pair
    rng = np.random.default_rng(1)
    q, r = rng.normal(size=(7, 5)), rng.normal(size=(9, 5))
    cot = rng.normal(size=(7, 9))
    tq, tr = torch.tensor(q, requires_grad=True), torch.tensor(r, requires_grad=True)
    pd = ctor()
    mat = pd(tq, tr)
    (mat * torch.tensor(cot)).sum().backward()
    jmat, vjp = jax.vjp(lambda a, b: dist(a, b), jnp.asarray(q), jnp.asarray(r))
    gq, gr = vjp(jnp.asarray(cot))
    assert_close(jmat, mat.detach().numpy())
    assert_close(gq, tq.grad.numpy())
    assert_close(gr, tr.grad.numpy())
    assert dist.is_inverted == pd.is_inverted
    # Row-wise form equals the diagonal of the matrix.
    assert_close(dist.pairwise(jnp.asarray(q), jnp.asarray(r[:7])), np.diag(np.asarray(dist(jnp.asarray(q), jnp.asarray(r[:7])))))


@pytest.mark.parametrize("dist", [d[1] for d in DISTANCES], ids=[repr(d[1]) for d in DISTANCES])
def test_distance_gradients_finite_at_zero_and_duplicates(dist):
    x = jnp.asarray(np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))
    g = jax.grad(lambda a: jnp.sum(dist(a, a)))(x)
    assert np.all(np.isfinite(g))


def test_distances_are_static_hashable():
    assert hash(jm.LpDistance()) == hash(jm.LpDistance())
    with pytest.raises(ValueError, match="normalize_embeddings"):
        jm.CosineSimilarity(normalize_embeddings=False)
