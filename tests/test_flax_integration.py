"""Flax integration: proxies in the params pytree beside the backbone, their own learning rate
through optax.multi_transform, with Linen (the example, run shortened) and NNX."""
import importlib.util
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric

flax = pytest.importorskip("flax")
pytest.importorskip("sklearn")
from flax import nnx  # noqa: E402

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "proxy_anchor_flax.py"
BACKBONE_LR, PROXY_LR = 1e-3, 1e-1


@pytest.fixture(scope="module")
def ex():
    spec = importlib.util.spec_from_file_location("proxy_anchor_flax", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # Linen's dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def digits(ex):
    return ex.load_digits_split(0)


def test_linen_example_improves_precision_at_1(ex):
    out = ex.main(["--steps", "40"])
    assert out["p1_after"] > out["p1_before"] + 0.01, out
    assert np.mean(out["losses"][-5:]) < np.mean(out["losses"][:5])


def _max_abs_delta(new, old):
    return max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(old)))


def test_linen_proxies_get_their_own_learning_rate(ex, digits):
    x_tr, _, y_tr, _ = digits
    state = ex.create_state(jax.random.PRNGKey(1), BACKBONE_LR, PROXY_LR)
    labels = ex.param_labels(state.params)
    assert labels["proxies"] == "proxies"
    assert set(jax.tree.leaves(labels["backbone"])) == {"backbone"}
    assert set(state.opt_state.inner_states) == {"backbone", "proxies"}
    new, loss = ex.train_step(state, x_tr[:64], y_tr[:64])
    assert loss.dtype == jnp.float32 and np.isfinite(loss)
    # Adam's first update is lr * g / (|g| + eps): its largest entry is the learning rate.
    np.testing.assert_allclose(_max_abs_delta(new.params["proxies"], state.params["proxies"]), PROXY_LR, rtol=1e-2)
    np.testing.assert_allclose(_max_abs_delta(new.params["backbone"], state.params["backbone"]), BACKBONE_LR, rtol=1e-2)


def test_linen_bf16_backbone_with_float32_proxies(ex, digits):
    x_tr, _, y_tr, _ = digits
    model = ex.MLP()
    params = model.init(jax.random.PRNGKey(0), x_tr[:2])["params"]
    proxies = jaxmetric.init_class_weights(jax.random.PRNGKey(1), 10, ex.EMBED_DIM, kind="proxy_anchor")

    def loss_fn(p, w):
        emb = model.apply({"params": p}, x_tr[:32]).astype(jnp.bfloat16)
        return jaxmetric.proxy_anchor_loss(emb, y_tr[:32], w)

    loss, (gp, gw) = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))(params, proxies)
    assert loss.dtype == jnp.float32 and np.isfinite(loss)
    assert gw.dtype == jnp.float32 and np.all(np.isfinite(gw))


class Net(nnx.Module):
    """The same recipe in NNX: the proxies are an nnx.Param of the model."""

    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 128, rngs=rngs)
        self.out = nnx.Linear(128, 32, rngs=rngs)
        self.proxies = nnx.Param(jaxmetric.init_class_weights(rngs.params(), 10, 32, kind="proxy_anchor"))

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


@nnx.jit
def nnx_step(model, optimizer, x, y):
    def loss_fn(model):
        return jaxmetric.proxy_anchor_loss(model(x), y, model.proxies[...])

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def test_nnx_param_and_optimizer(ex, digits):
    x_tr, x_te, y_tr, y_te = digits
    model = Net(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, ex.make_optimizer(BACKBONE_LR, PROXY_LR), wrt=nnx.Param)
    proxies0 = np.asarray(model.proxies[...])
    kernel0 = np.asarray(model.hidden.kernel[...])
    p1_before = float(ex.precision_at_1(model(x_te), y_te))
    data = ex.batches(x_tr, y_tr, 64, 0)
    xb, yb = next(data)
    nnx_step(model, optimizer, xb, yb)
    np.testing.assert_allclose(np.max(np.abs(np.asarray(model.proxies[...]) - proxies0)), PROXY_LR, rtol=1e-2)
    np.testing.assert_allclose(np.max(np.abs(np.asarray(model.hidden.kernel[...]) - kernel0)), BACKBONE_LR, rtol=1e-2)
    for _ in range(39):
        xb, yb = next(data)
        loss = nnx_step(model, optimizer, xb, yb)
    assert np.isfinite(loss)
    p1_after = float(ex.precision_at_1(model(x_te), y_te))
    assert p1_after > p1_before + 0.01, (p1_before, p1_after)
