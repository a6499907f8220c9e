"""Metric + classification joint training: a softmax head on the embedding, plus supcon_loss.

One network, two heads of one loss: ``cross_entropy(classifier(emb), y) + weight *
supcon_loss(emb, y)``. The classifier gives test accuracy; the embedding gives retrieval.
Compare ``--weight 0`` (softmax only) with the default.

    python examples/joint_classification.py              # 800 steps
    python examples/joint_classification.py --quick      # 40 steps
    python examples/joint_classification.py --weight 0   # classification only
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
from common import format_metrics, load_digits_split, retrieval_report, save_embedding_plot


class EmbedAndClassify(nn.Module):
    dim: int = 32
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(128)(x))
        emb = nn.Dense(self.dim)(nn.relu(nn.Dense(128)(h)))
        logits = nn.Dense(self.num_classes)(emb)
        return emb, logits


@jax.jit
def train_step(state, x, y, weight):
    def loss_fn(params):
        emb, logits = state.apply_fn({"params": params}, x)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        metric = jaxmetric.supcon_loss(emb, y, temperature=0.1)
        return ce + weight * metric, (ce, metric)

    (loss, (ce, metric)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads), ce, metric


@jax.jit
def predict(state, x):
    return state.apply_fn({"params": state.params}, x)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--quick", action="store_true", help="40 steps (smoke test)")
    parser.add_argument("--weight", type=float, default=1.0, help="weight of supcon_loss (0 = softmax only)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/joint_embeddings.png")
    args = parser.parse_args(argv)
    steps = 40 if args.quick else args.steps
    start = time.time()

    x_train, x_test, y_train, y_test = load_digits_split(args.seed)
    model = EmbedAndClassify()
    params = jax.jit(model.init)(jax.random.PRNGKey(args.seed), jnp.zeros((1, x_train.shape[1])))["params"]
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(args.lr))

    batches = jaxmetric.samplers.m_per_class_batches(y_train, args.m, args.batch_size, seed=args.seed, num_batches=steps)
    bar = tqdm(batches, total=steps, desc="joint training", unit="step")
    for step, idx in enumerate(bar):
        state, ce, metric = train_step(state, x_train[idx], y_train[idx], args.weight)
        if step % 20 == 0:
            bar.set_postfix(ce=f"{float(ce):.3f}", supcon=f"{float(metric):.3f}")

    emb, logits = (np.asarray(a) for a in predict(state, x_test))
    accuracy = float((logits.argmax(1) == y_test).mean())
    metrics = retrieval_report(emb, y_test)
    print(f"test accuracy {accuracy:.3f}   retrieval: {format_metrics(metrics)}")
    plot = save_embedding_plot(emb, y_test, args.out, f"Held-out digits: softmax + {args.weight:g} x supcon (PCA)")
    print(f"saved held-out embedding plot: {plot}")
    print(f"total time: {time.time() - start:.1f} s")
    return {"accuracy": accuracy, "retrieval": metrics, "plot": plot}


if __name__ == "__main__":
    main()
