"""jaxmetric.checks.checkify_finite: NaN/inf inputs become a checkify error (opt-in)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import jaxmetric as jm

EMB = jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)), jnp.float32)
Y = jnp.array([0, 0, 1, 1, 2, 2])


def test_finite_inputs_pass_and_value_is_unchanged():
    err, v = jax.jit(jm.checkify_finite(jm.contrastive_loss))(EMB, Y)
    assert err.get() is None
    err.throw()  # no-op
    np.testing.assert_allclose(v, jm.contrastive_loss(EMB, Y), rtol=1e-6)
    assert jm.checks.checkify_finite is jm.checkify_finite


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf, -jnp.inf])
def test_non_finite_embeddings_raise_under_jit(bad):
    checked = jax.jit(jm.checkify_finite(jm.circle_loss))
    err, _ = checked(EMB.at[2, 1].set(bad), Y)
    msg = err.get()
    assert msg is not None and "circle_loss: `embeddings` must be finite (no NaN or inf)" in msg
    assert "flat index 7" in msg and "(6, 3)" in msg
    with pytest.raises(checkify.JaxRuntimeError, match="`embeddings` must be finite"):
        err.throw()


def test_learned_parameters_states_and_keywords_are_checked():
    w = jnp.ones((3, 3)).at[0, 0].set(jnp.nan)
    err, _ = jm.checkify_finite(jm.arcface_loss)(EMB, Y, w)
    assert "arcface_loss: `weights` must be finite" in err.get()
    state = jm.DynamicSoftMarginState(jnp.full((10,), jnp.inf))
    err, _ = jm.checkify_finite(jm.dynamic_soft_margin_loss)(EMB, Y, state)
    assert "`state.hist` must be finite" in err.get() or "`state[0]` must be finite" in err.get()
    err, _ = jm.checkify_finite(jm.contrastive_loss)(EMB, Y, ref_emb=EMB.at[0, 0].set(jnp.nan), ref_labels=Y)
    assert "`ref_emb` must be finite" in err.get()
    with pytest.raises(ValueError, match="`temperature` must be > 0; got nan"):  # concrete: at once
        jm.checkify_finite(jm.ntxent_loss)(EMB, Y, temperature=float("nan"))
    err, _ = jm.checkify_finite(jm.ntxent_loss)(EMB, Y, temperature=jnp.asarray(jnp.nan))  # an array: checkify
    assert "`temperature` must be finite" in err.get()


def test_composes_with_vmap_and_extra_checks():
    embs = jnp.stack([EMB, EMB.at[0, 0].set(jnp.nan)])
    err, v = jax.vmap(jm.checkify_finite(jm.contrastive_loss), in_axes=(0, None))(embs, Y)
    assert err.get() is not None and v.shape == (2,)
    # checkify's own NaN checks can be added for NaNs produced inside the loss
    err, _ = jm.checkify_finite(lambda x: jnp.log(x - 2.0).sum(), errors=checkify.nan_checks)(jnp.ones(3))
    assert err.get() is not None
