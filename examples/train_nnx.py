"""Flax NNX: train an embedding MLP on digits with multi_similarity_loss and an nnx.Optimizer.

Miner-free: every positive and negative pair of the batch enters the loss. Batches come from
PML-style ``MPerClassSampler`` (8 classes x 16 samples). Prints held-out retrieval metrics
before and after training and saves a 2-D picture of the held-out embeddings.

    python examples/train_nnx.py            # 600 steps, about a minute on a laptop CPU
    python examples/train_nnx.py --quick    # 40 steps
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

import jaxmetric
from common import format_metrics, load_digits_split, retrieval_report, save_embedding_plot


class EmbeddingMLP(nnx.Module):
    def __init__(self, din: int, dim: int = 32, *, rngs: nnx.Rngs):
        self.hidden1 = nnx.Linear(din, 128, rngs=rngs)
        self.hidden2 = nnx.Linear(128, 128, rngs=rngs)
        self.out = nnx.Linear(128, dim, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.hidden1(x))
        x = nnx.relu(self.hidden2(x))
        return self.out(x)


@nnx.jit
def train_step(model: EmbeddingMLP, optimizer: nnx.Optimizer, x, y):
    def loss_fn(model):
        return jaxmetric.multi_similarity_loss(model(x), y, alpha=2.0, beta=40.0, base=0.5)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)  # in place
    return loss


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--quick", action="store_true", help="40 steps (smoke test)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--m", type=int, default=16, help="samples per class in a batch")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/nnx_embeddings.png")
    args = parser.parse_args(argv)
    steps = 40 if args.quick else args.steps
    start = time.time()

    x_train, x_test, y_train, y_test = load_digits_split(args.seed)
    model = EmbeddingMLP(x_train.shape[1], rngs=nnx.Rngs(args.seed))
    optimizer = nnx.Optimizer(model, optax.adam(args.lr), wrt=nnx.Param)

    before = retrieval_report(model(jnp.asarray(x_test)), y_test)
    print(f"before: {format_metrics(before)}")

    sampler = jaxmetric.samplers.MPerClassSampler(
        y_train, args.m, args.batch_size, length_before_new_iter=steps * args.batch_size, seed=args.seed
    )
    bar = tqdm(sampler.batches(), total=steps, desc="nnx training", unit="step")
    for step, idx in enumerate(bar):
        loss = train_step(model, optimizer, jnp.asarray(x_train[idx]), jnp.asarray(y_train[idx]))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{float(loss):.3f}")

    emb = np.asarray(model(jnp.asarray(x_test)))
    after = retrieval_report(emb, y_test)
    print(f"after:  {format_metrics(after)}")
    plot = save_embedding_plot(emb, y_test, args.out, "Held-out digits: NNX + multi_similarity_loss (PCA)")
    print(f"saved held-out embedding plot: {plot}")
    print(f"total time: {time.time() - start:.1f} s")
    return {"before": before, "after": after, "plot": plot, "final_loss": float(loss)}


if __name__ == "__main__":
    main()
