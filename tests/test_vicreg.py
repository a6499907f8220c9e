"""VICReg: parity with PML 2.9 (float64, value and gradients including the second view),
reductions, padding, a single row and errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from loss_parity import check, jvg, pml
from pml_utils import assert_close, pml_losses

B, D = 12, 8


def test_vicreg_parity(rng):
    defaults = {"invariance_lambda": 25.0, "variance_mu": 25.0, "covariance_v": 1.0, "eps": 1e-4}
    for dyn in (defaults, {"invariance_lambda": 3.0, "variance_mu": 2.0, "covariance_v": 0.5, "eps": 1e-3}):
        emb, ref = rng.normal(size=(B, D)) * 0.5, rng.normal(size=(B, D)) * 0.5
        pv, pg, pgr, _ = pml(pml_losses.VICRegLoss(**dyn), emb, None, ref_emb=ref)
        jv, jg = jvg(jm.vicreg_loss, (emb, ref), dyn=dyn)
        check(jv, jg, pv, [pg, pgr], str(dyn))


def test_vicreg_reductions_where_and_single_row(rng):
    emb, ref = rng.normal(size=(B, D)), rng.normal(size=(B, D))
    parts = jax.jit(lambda e, r: jm.vicreg_loss(e, r, reduction="none"))(emb, ref)
    assert parts["invariance_loss"].shape == (B,) and parts["variance_loss1"].shape == (D,)
    total = jax.jit(lambda e, r: jm.vicreg_loss(e, r))(emb, ref)
    expect = sum(jnp.mean(parts[k]) for k in ("invariance_loss", "variance_loss1", "variance_loss2")) + parts["covariance_loss"]
    assert_close(total, expect)
    # Padding rows with where == the unpadded batch.
    v, (g, gr) = jvg(jm.vicreg_loss, (emb[:9], ref[:9]))
    f = lambda e, w, r: jm.vicreg_loss(e, r, where=w)  # noqa: E731
    pv, (pg, pgr) = jvg(f, (emb, ref), (jnp.arange(B) < 9,))
    assert_close(pv, v)
    assert_close(pg[:9], g)
    assert_close(pgr[:9], gr)
    assert np.all(pg[9:] == 0)
    # A single row: PML's unbiased variance is NaN; jaxmetric uses 0 and stays finite.
    pv1, _, _, _ = pml(pml_losses.VICRegLoss(), emb[:1], None, ref_emb=ref[:1])
    assert np.isnan(pv1)
    v1, grads = jvg(jm.vicreg_loss, (emb[:1], ref[:1]))
    assert np.isfinite(v1) and all(np.all(np.isfinite(x)) for x in grads)


def test_vicreg_bad_inputs():
    x = jnp.ones((6, 4))
    with pytest.raises(ValueError, match="vicreg_loss: `ref_emb` .* is required"):
        jm.vicreg_loss(x, None)
    with pytest.raises(ValueError, match=r"vicreg_loss: `ref_emb` must have the shape of `embeddings` \(6, 4\)"):
        jm.vicreg_loss(x, jnp.ones((5, 4)))
    with pytest.raises(TypeError, match="vicreg_loss: `embeddings` must have a floating dtype"):
        jm.vicreg_loss(jnp.ones((6, 4), jnp.int32), x)
    with pytest.raises(ValueError, match="vicreg_loss: `reduction` must be one of"):
        jm.vicreg_loss(x, x, reduction="avg")
