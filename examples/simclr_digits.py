"""Self-supervised, SimCLR-style: two augmented views of each digit, ntxent_loss, no class labels.

Each batch of ``B`` images gives ``2B`` embeddings (view 1, view 2); the "labels" are the sample
indices ``[0..B-1, 0..B-1]``, so the only positive of a view is the other view of the same
image and every other image is a negative (exactly PML's ``NTXentLoss`` with
``labels = arange(B).repeat(2)``). Augmentations run inside the jitted step: random shifts of
up to one pixel, random pixel dropout and Gaussian noise. Class labels are used only to
measure held-out retrieval before and after.

    python examples/simclr_digits.py           # 1500 steps
    python examples/simclr_digits.py --quick   # 40 steps
"""
from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from tqdm import tqdm

import jaxmetric
from common import evaluation_hook, format_metrics, load_digits_split, retrieval_report, save_embedding_plot


class Encoder(nn.Module):
    """MLP encoder and a projection head; retrieval uses the encoder output (as in SimCLR)."""

    dim: int = 64

    @nn.compact
    def __call__(self, x, project: bool = True):
        h = nn.relu(nn.Dense(256)(x))
        h = nn.Dense(self.dim)(nn.relu(nn.Dense(256)(h)))
        if not project:
            return h
        return nn.Dense(32)(nn.relu(nn.Dense(64)(h)))


def augment(key, images):
    """One random view of each flattened 8x8 image: shift, dropout, noise."""
    k_shift, k_drop, k_noise = jax.random.split(key, 3)
    b = images.shape[0]
    img = images.reshape(b, 8, 8)
    shifts = jax.random.randint(k_shift, (b, 2), -1, 2)
    padded = jnp.pad(img, ((0, 0), (1, 1), (1, 1)))
    img = jax.vmap(lambda im, s: jax.lax.dynamic_slice(im, (1 + s[0], 1 + s[1]), (8, 8)))(padded, shifts)
    keep = jax.random.bernoulli(k_drop, 0.85, img.shape)
    img = img * keep + 0.1 * jax.random.normal(k_noise, img.shape)
    return img.reshape(b, 64)


@jax.jit
def train_step(state, key, x, temperature):
    k1, k2 = jax.random.split(key)
    views = jnp.concatenate([augment(k1, x), augment(k2, x)])
    ids = jnp.arange(x.shape[0])
    labels = jnp.concatenate([ids, ids])  # positive = the other view of the same image

    def loss_fn(params):
        return jaxmetric.ntxent_loss(state.apply_fn({"params": params}, views), labels, temperature=temperature)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


@jax.jit
def encode(state, x):
    return state.apply_fn({"params": state.params}, x, project=False)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--quick", action="store_true", help="40 steps (smoke test)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=500, help="held-out report every N steps (0: off)")
    parser.add_argument("--out", default="out/simclr_embeddings.png")
    args = parser.parse_args(argv)
    steps = 40 if args.quick else args.steps
    start = time.time()

    x_train, x_test, _, y_test = load_digits_split(args.seed)  # training never sees y_train
    model = Encoder()
    params = jax.jit(model.init)(jax.random.PRNGKey(args.seed), jnp.zeros((1, 64)))["params"]
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(args.lr))
    before = retrieval_report(encode(state, x_test), y_test)
    print(f"before: {format_metrics(before)}")

    hook = evaluation_hook(jax.jit(lambda p, x: model.apply({"params": p}, x, project=False)), x_test, y_test, every=args.eval_every)
    rng = np.random.default_rng(args.seed)
    key = jax.random.PRNGKey(args.seed + 1)
    bar = tqdm(range(steps), desc="simclr", unit="step")
    for step in bar:
        idx = rng.choice(len(x_train), size=args.batch_size, replace=False)
        key, sub = jax.random.split(key)
        state, loss = train_step(state, sub, x_train[idx], args.temperature)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{float(loss):.3f}")
        if (metrics := hook(step, state.params)) is not None:
            bar.write(f"step {step + 1}: {format_metrics(metrics)}")

    emb = np.asarray(encode(state, x_test))
    after = retrieval_report(emb, y_test)
    print(f"after:  {format_metrics(after)}")
    plot = save_embedding_plot(emb, y_test, args.out, "Held-out digits: self-supervised ntxent_loss (PCA)")
    print(f"saved held-out embedding plot: {plot}")
    print(f"total time: {time.time() - start:.1f} s")
    return {"before": before, "after": after, "plot": plot, "final_loss": float(loss)}


if __name__ == "__main__":
    main()
