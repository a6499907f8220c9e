"""Numerical robustness at degenerate inputs: zero rows, float16 gradients, huge and tiny norms,
a tiny CLIP log temperature, miners where rows coincide or are antipodal (finite, NaN-free values
and gradients). Regression tests for the library fixes found by the property battery
(tests/test_battery.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from jaxmetric._src import validate
from jaxmetric.distances import l2_normalize

X = jnp.asarray(np.random.default_rng(0).normal(size=(6, 4)), jnp.float32).at[2].set(0.0)
Y = jnp.array([0, 0, 1, 1, 2, 2])


def test_l2_normalize_zero_vector_has_zero_gradient():
    """F.normalize's gradient at a zero vector is 1/eps = 1e12 times the incoming one: inf once
    cast back to float16 inputs. An exactly zero row now gets a zero gradient; others unchanged."""
    out = l2_normalize(X)
    np.testing.assert_array_equal(out[2], 0.0)
    np.testing.assert_allclose(out[0], X[0] / jnp.linalg.norm(X[0]), rtol=1e-6)
    g = jax.grad(lambda x: jnp.sum(l2_normalize(x) * jnp.arange(4.0)))(X)
    np.testing.assert_array_equal(g[2], 0.0)
    assert np.all(np.isfinite(g))
    tiny = jnp.full((1, 4), 1e-20, jnp.float32)  # below F.normalize's eps: x / 1e-12, as PyTorch
    np.testing.assert_allclose(l2_normalize(tiny), tiny / 1e-12, rtol=1e-6)


@pytest.mark.parametrize("fn", [jm.contrastive_loss, jm.circle_loss, jm.lifted_structure_loss])
def test_float16_zero_row_gives_finite_gradients(fn):
    g = jax.grad(lambda x: fn(x, Y))(X.astype(jnp.float16))
    assert g.dtype == jnp.float16 and np.all(np.isfinite(np.asarray(g, np.float32)))
    np.testing.assert_array_equal(np.asarray(g[2], np.float32), 0.0)


def test_p2sgrad_zero_row_is_nan_free():
    """The cosine divided by max(||x||, finfo.tiny): a 1e38 gradient and a NaN (0 * inf) in the
    backward pass for a zero embedding. Now x / ||x|| through l2_normalize."""
    w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 4)), jnp.float32)
    with jax.debug_nans(True):
        v, (ge, gw) = jax.value_and_grad(lambda x, ww: jm.p2sgrad_loss(x, Y, ww), argnums=(0, 1))(X, w)
    assert np.isfinite(v) and np.all(np.isfinite(ge)) and np.all(np.isfinite(gw))
    np.testing.assert_array_equal(ge[2], 0.0)
    # other rows: unchanged x / ||x|| (vs the reference formula)
    xn = X / jnp.maximum(jnp.linalg.norm(X, axis=1, keepdims=True), 1e-30)
    wn = w / jnp.linalg.norm(w, axis=1, keepdims=True)
    cos = jnp.clip(xn @ wn.T, -1, 1)
    ref = jnp.mean(jnp.mean((cos - jax.nn.one_hot(Y, 3)) ** 2, axis=1))
    np.testing.assert_allclose(v, ref, rtol=1e-6)


def test_clip_loss_tiny_log_temperature_is_finite():
    """exp(-log_temperature) overflowed to inf before the clip at max_logit_scale, and the
    gradient of the clipped branch was inf * 0 = NaN. The clip is now taken in log space."""
    lt = jnp.asarray(-1000.0)
    v, (gx, gt) = jax.value_and_grad(lambda x, t: jm.clip_loss(x, x[::-1], t), argnums=(0, 1))(X, lt)
    assert np.isfinite(v) and np.all(np.isfinite(gx)) and gt == 0.0
    np.testing.assert_allclose(v, jm.clip_loss(X, X[::-1], jnp.asarray(-np.log(100.0))), rtol=1e-6)


@pytest.mark.parametrize("p", [2, 3])
def test_safe_norm_neither_overflows_nor_underflows(p):
    """Squaring 1e30 overflows float32 and squaring 1e-25 underflows to 0: the norm is computed
    as max|x| * ||x / max|x|||, with the same gradient."""
    from jaxmetric.distances import safe_norm

    x = jnp.asarray([[3.0, 4.0, 0.0]], jnp.float32)
    for scale in (1e30, 1e-25, 1.0):
        xs = x * jnp.float32(scale)
        want = np.linalg.norm(np.asarray(x, np.float64), ord=p, axis=1) * scale
        np.testing.assert_allclose(safe_norm(xs, p, axis=1), want, rtol=1e-6)
        g = jax.grad(lambda v: jnp.sum(safe_norm(v, p, axis=1)))(xs)
        g_ref = jax.grad(lambda v: jnp.sum(jnp.sum(jnp.abs(v) ** p, axis=1) ** (1 / p)))(x)  # scale-free
        np.testing.assert_allclose(g, g_ref, rtol=1e-5)
    np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(safe_norm(v, p, axis=1)))(jnp.zeros((1, 3))), 0.0)


@pytest.mark.parametrize("fn", [jm.lp_regularizer, lambda x: jm.sphereface_loss(x, Y, X[:3] + 1.0)])
def test_huge_embeddings_give_finite_norm_based_losses(fn):
    x = X * jnp.float32(1e30)
    v, g = jax.value_and_grad(fn)(x)
    assert np.isfinite(v) and np.all(np.isfinite(g))


def test_float16_gradients_saturate_instead_of_overflowing():
    """A float16 row of norm ~1e-6 under a large scale has gradient components beyond 65504:
    they saturate at float16's largest finite value (sign kept) instead of coming back inf."""
    x = np.asarray(X, np.float32).copy()
    x[1] *= 1e-6
    x16 = jnp.asarray(x, jnp.float16)
    w = jnp.asarray(np.random.default_rng(2).normal(size=(3, 4)), jnp.float32)
    g16 = jax.grad(lambda e: jm.cosface_loss(e, Y, w))(x16)
    g32 = jax.grad(lambda e: jm.cosface_loss(e, Y, w))(x16.astype(jnp.float32))
    assert g16.dtype == jnp.float16 and np.all(np.isfinite(np.asarray(g16, np.float32)))
    big = float(jnp.finfo(jnp.float16).max)
    over = np.abs(np.asarray(g32)) > big
    assert over.any()  # the case really overflows float16
    np.testing.assert_array_equal(np.asarray(g16, np.float32)[over], np.sign(np.asarray(g32))[over] * big)
    np.testing.assert_allclose(np.asarray(g16, np.float32)[~over], np.asarray(g32)[~over], rtol=2e-3, atol=1e-3)
    # float32 and bfloat16 inputs are untouched
    for dt in (jnp.float32, jnp.bfloat16):
        xd = x16.astype(dt)
        assert validate.saturate_grad(xd) is xd


def _angle_rule_f64(x, labels, angle_deg):
    """PML AngularMiner's selection, float64 (torch ``pairwise_distance`` epsilon): ``[a, p, n]``."""
    x = np.asarray(x, np.float64)
    eps = 1e-6
    ap = np.linalg.norm(x[:, None] - x[None] + eps, axis=-1)  # [a, p]
    c = (x[:, None] + x[None]) / 2  # [a, p, D]
    nc = np.linalg.norm(x[None, None] - c[:, :, None] + eps, axis=-1)  # [a, p, n]
    ang = np.arctan(ap[:, :, None] / (2 * nc))
    same = labels[:, None] == labels[None]
    pos = same & ~np.eye(len(labels), dtype=bool)
    return pos[:, :, None] & ~same[:, None, :] & (ang > np.deg2rad(angle_deg)), ang


def test_angular_miner_is_nan_free_where_a_p_n_coincide():
    """On the [a, a, a] diagonal (a = p = n) float32 cancellation makes both ||a - p|| and
    ||n - (a + p)/2|| exactly 0: the angle was 0 / 0, a NaN masked afterwards (reported by
    jax.debug_nans on the battery's base input under jax 0.12). Now divided only where the
    denominator is positive; the selection is unchanged (a = p is never a positive pair)."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(32, 8)), jnp.float32)
    y = np.arange(32) % 4
    with jax.debug_nans(True):
        m = jm.angular_miner(x, jnp.asarray(y))
        dense = np.asarray(m.to_dense())
        v, g = jax.value_and_grad(lambda e: jm.triplet_margin_loss(e, m))(x)
    want, ang = _angle_rule_f64(x, y, 20)
    clear = np.abs(ang - np.deg2rad(20)) > 1e-5  # float32 vs float64 at the threshold
    assert want.any() and (~want & clear).any()
    np.testing.assert_array_equal((dense > 0)[clear], want[clear])
    assert np.isfinite(v) and np.all(np.isfinite(g))


def test_distance_weighted_miner_is_nan_free_on_antipodal_rows():
    """Antipodal unit rows sit at distance 2.0000002 in float32, outside the log-density's
    domain (0, 2): log(1 - d^2/4) was NaN before the isfinite mask. The logs are now taken only
    inside the domain; such negatives still get no weight (as in PML, beyond nonzero_loss_cutoff)."""
    rng = np.random.default_rng(0)
    e = rng.normal(size=(32, 5)).astype(np.float32)
    e = jnp.asarray(np.concatenate([e, -e * rng.uniform(0.5, 2.0, size=(32, 1)).astype(np.float32)]))
    y = jnp.arange(64) % 5  # row i and its antipode i + 32 are in different classes
    assert np.any(np.asarray(jm.LpDistance()(e)) > 2.0)  # the case really leaves the domain
    with jax.debug_nans(True):
        m = jm.distance_weighted_miner(e, y, key=jax.random.key(0))
        pairs = m.to_pairs()
    neg = np.asarray(pairs.neg) > 0
    d = np.asarray(jm.LpDistance()(e))
    assert neg.any() and not np.any(neg & (d >= 1.4))
