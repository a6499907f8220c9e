"""Manifold loss: parity with PML 2.9 (float64, value and gradients including the proxies),
pinned differences, padding and errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxmetric as jm
from loss_parity import check, jvg, pml
from pml_utils import assert_close, pml_losses

B, D, K = 12, 8, 4


def _manifold_case(rng):
    emb = rng.normal(size=(B, D))
    proxies = rng.normal(size=(K, D))
    mc = rng.permutation(np.concatenate([np.arange(K), rng.integers(0, K, B - K)]))
    return emb, proxies, mc


def _pml_manifold(emb, proxies, mc, **kw):
    loss = pml_losses.ManifoldLoss(l=D, K=K, **kw).double()
    loss.proxies.data = torch.tensor(proxies)
    call = lambda e, _labels: loss(e, None, indices_tuple=torch.tensor(mc))  # noqa: E731
    v, ge, _, (gp,) = pml(call, emb, None, extra=[loss.proxies])
    return v, ge, gp


MANIFOLD_DEFAULTS = {"lambdaC": 1.0, "alpha": 0.8, "margin": 5e-4}


def test_manifold_parity(rng):
    defaults = MANIFOLD_DEFAULTS
    for dyn in (defaults, {"lambdaC": 0.5, "alpha": 0.6, "margin": 0.01}, dict(defaults, lambdaC=0.0)):
        emb, proxies, mc = _manifold_case(rng)
        pv, pge, pgp = _pml_manifold(emb, proxies, mc, **dyn)
        jv, jg = jvg(jm.manifold_loss, (emb, proxies), (mc,), dyn=dyn)
        check(jv, jg, pv, [pge, pgp], str(dyn))


def test_manifold_lambda_inf_pinned(rng):
    """PML's docstring: lambdaC=inf means the context loss alone; its code returns inf."""
    emb, proxies, mc = _manifold_case(rng)
    assert _pml_manifold(emb, proxies, mc, lambdaC=np.inf)[0] == np.inf
    v1, g1, p1 = _pml_manifold(emb, proxies, mc, lambdaC=1.0)
    v0, g0, p0 = _pml_manifold(emb, proxies, mc, lambdaC=0.0)
    jv, jg = jvg(jm.manifold_loss, (emb, proxies), (mc,), dyn={"lambdaC": np.inf, "alpha": 0.8, "margin": 5e-4})
    check(jv, jg, v1 - v0, [g1 - g0, p1 - p0])


def test_manifold_random_meta_classes(rng):
    key = jax.random.PRNGKey(3)
    mc = jm.manifold_meta_classes(key, B, K)
    assert mc.shape == (B,) and mc.dtype == jnp.int32
    assert set(np.asarray(mc).tolist()) == set(range(K))
    emb, proxies, _ = _manifold_case(rng)
    explicit, _ = jvg(jm.manifold_loss, (emb, proxies), (mc,), dyn=MANIFOLD_DEFAULTS)  # cached compile
    random = jax.jit(lambda e, p, k: jm.manifold_loss(e, None, p, key=k))(jnp.asarray(emb), jnp.asarray(proxies), key)
    assert_close(random, explicit)
    p = jm.init_manifold_proxies(key, K, D)
    assert p.shape == (K, D) and p.dtype == jnp.float32


def test_manifold_where_removes_padded_rows(rng):
    emb, proxies, mc = _manifold_case(rng)
    pad_emb = np.concatenate([emb[:9], rng.normal(size=(3, D))])
    v, (g, gp) = jvg(jm.manifold_loss, (emb[:9], proxies), (mc[:9],))
    f = lambda e, m, w, p: jm.manifold_loss(e, m, p, where=w)  # noqa: E731
    pv, (pg, pgp) = jvg(f, (pad_emb, proxies), (mc, jnp.arange(B) < 9))
    assert_close(pv, v)
    assert_close(pg[:9], g)
    assert_close(pgp, gp)
    assert np.all(pg[9:] == 0)


def test_manifold_degenerate_inputs_finite():
    emb = np.zeros((B, D))
    emb[: B // 2, 0] = 1.0  # duplicates and zero vectors
    proxies = np.zeros((K, D))
    proxies[0, 0] = 1.0
    v, grads = jvg(jm.manifold_loss, (emb, proxies), (np.arange(B) % K,))
    assert np.isfinite(v) and all(np.all(np.isfinite(g)) for g in grads)


def test_manifold_bad_inputs():
    x, p, mc = jnp.ones((6, 4)), jnp.ones((3, 4)), jnp.arange(6) % 3
    cases = [
        (TypeError, "`meta_classes` must be integer meta-class ids", lambda: jm.manifold_loss(x, jm.pair_mask(mc), p)),
        (TypeError, "`meta_classes` must have an integer dtype", lambda: jm.manifold_loss(x, mc.astype(jnp.float32), p)),
        (ValueError, r"`meta_classes` must have shape \(6,\)", lambda: jm.manifold_loss(x, mc[:5], p)),
        (ValueError, r"`meta_classes` must be ids in \[0, 3\)", lambda: jm.manifold_loss(x, mc + 1, p)),
        (ValueError, r"`proxies` must have shape \(K, 4\)", lambda: jm.manifold_loss(x, mc, jnp.ones((3, 5)))),
        (ValueError, "`lambdaC` must be >= 0", lambda: jm.manifold_loss(x, mc, p, lambdaC=-1.0)),
        (ValueError, "pass `meta_classes`", lambda: jm.manifold_loss(x, None, p)),
        (ValueError, "`ref_emb` is not supported", lambda: jm.manifold_loss(x, mc, p, ref_emb=x)),
    ]
    for exc, msg, call in cases:
        with pytest.raises(exc, match="manifold_loss: " + msg):
            call()
    with pytest.raises(ValueError, match="manifold_meta_classes: `batch_size` must be >= K"):
        jm.manifold_meta_classes(jax.random.PRNGKey(0), 2, 3)
