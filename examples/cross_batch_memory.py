"""Cross-batch memory (XBM) in a jitted Flax train step, against the same loss without it.

With small batches a loss sees few pairs per step: a batch of 8 random digits holds about
3 positive pairs. ``cross_batch_memory_loss`` (Wang et al., CVPR 2020) compares the batch
with a ring buffer of the last ``--memory-size`` (detached) embeddings, so each step scores
8 x 1024 pairs for the cost of one small matrix product. The memory is an explicit pytree
(``CrossBatchMemoryState``) with fixed shapes: it goes into the jitted step and comes back
out, next to the ``TrainState``, and the step compiles once however full the memory is (the
example counts the traces and checks that).

Both runs start from the same weights, see the same batches (plain random sampling, no
m-per-class) and use the same loss (``--loss``: ``multi_similarity_loss`` with PML's
defaults, or the XBM paper's contrastive loss on cosine similarity, margin 0.5); the memory
run also scores each batch against the memory. Prints held-out retrieval for both, MAP@R
at a few steps, and saves those curves.

    python examples/cross_batch_memory.py                      # 1500 steps of 8 digits
    python examples/cross_batch_memory.py --loss contrastive --batch-size 16
    python examples/cross_batch_memory.py --quick              # 60 steps (smoke test)
"""
from __future__ import annotations

import argparse
import collections
import functools
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from tqdm import tqdm

import jaxmetric
from common import format_metrics, load_digits_split, retrieval_report

DIM = 32
TRACES = collections.Counter()  # incremented only while jax traces a step (Python side effect)

LOSSES = {
    # XBM paper's loss: contrastive on cosine similarity, positives pulled to 1, negatives
    # pushed below 0.5.
    "contrastive": functools.partial(
        jaxmetric.contrastive_loss, distance=jaxmetric.CosineSimilarity(), pos_margin=1.0, neg_margin=0.5
    ),
    "multi_similarity": jaxmetric.multi_similarity_loss,  # PML defaults, no miner
}


class Encoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(128)(x))
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(DIM)(x)


@functools.partial(jax.jit, static_argnames="loss")
def step_plain(state, x, y, *, loss: str):
    TRACES["plain"] += 1

    def loss_fn(params):
        return LOSSES[loss](state.apply_fn({"params": params}, x), y)

    value, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), value


@functools.partial(jax.jit, static_argnames="loss")
def step_memory(state, memory, x, y, *, loss: str):
    TRACES["memory"] += 1

    def loss_fn(params):
        emb = state.apply_fn({"params": params}, x)
        # Enqueues the batch (stop_gradient) and scores it against every filled slot; the
        # updated memory comes back as an auxiliary output.
        return jaxmetric.cross_batch_memory_loss(LOSSES[loss], emb, y, memory)

    (value, memory), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads), memory, value


@jax.jit
def embed(state, x):
    return state.apply_fn({"params": state.params}, x)


def save_curves(path, steps, curves, before, args) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for name, curve in curves.items():
        ax.plot(steps, curve, marker="o", label=name)
    ax.axhline(before, color="gray", linestyle="--", label="before training")
    ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out MAP@R")
    ax.set_title(f"{args.loss}_loss, batches of {args.batch_size}, memory {args.memory_size}")
    ax.grid(alpha=0.3)
    ax.legend()
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--quick", action="store_true", help="60 steps (smoke test)")
    parser.add_argument("--loss", choices=sorted(LOSSES), default="multi_similarity")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--memory-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/cross_batch_memory.png")
    args = parser.parse_args(argv)
    steps = 60 if args.quick else args.steps
    start = time.time()

    x_train, x_test, y_train, y_test = load_digits_split(args.seed)
    model = Encoder()
    params0 = jax.jit(model.init)(jax.random.PRNGKey(args.seed), jnp.zeros((1, x_train.shape[1]), jnp.float32))["params"]
    before = retrieval_report(model.apply({"params": params0}, x_test), y_test)
    print(f"{'before:':<17} {format_metrics(before)}")

    # Fixed batches (plain random sampling, no m-per-class), shared by both runs.
    rng = np.random.default_rng(args.seed)
    batches = [rng.choice(len(x_train), size=args.batch_size, replace=False) for _ in range(steps)]

    # Held-out MAP@R at a few log-spaced steps: the memory's gain is largest early on.
    checkpoints = sorted({min(c, steps) for c in (25, 50, 100, 200, 400, 800, 1600, 3200) if c <= steps} | {steps})
    results, curves, traces = {}, {}, {}
    for name, kind in (("no memory", "plain"), ("with memory", "memory")):
        traces_at_start = TRACES[kind]
        state = train_state.TrainState.create(apply_fn=model.apply, params=params0, tx=optax.adam(args.lr))
        memory = jaxmetric.init_cross_batch_memory(args.memory_size, DIM)  # empty; y are class ids
        curves[name] = []
        bar = tqdm(batches, desc=name, unit="step", leave=False)
        for step, idx in enumerate(bar, start=1):
            x, y = x_train[idx], y_train[idx].astype(np.int32)
            if kind == "plain":
                state, value = step_plain(state, x, y, loss=args.loss)
            else:
                state, memory, value = step_memory(state, memory, x, y, loss=args.loss)
            if step == 1:
                traces_after_first_step = TRACES[kind]  # 1 more, or 0 if compiled by an earlier call
            if step % 20 == 0:
                bar.set_postfix(loss=f"{float(value):.3f}")
            if step in checkpoints:
                metrics = retrieval_report(embed(state, x_test), y_test)
                curves[name].append(metrics["mean_average_precision_at_r"])
        print(f"after {name:<11} {format_metrics(metrics)}")
        results[name] = metrics
        # New memory contents (and fill level) every step, yet no retrace after the first step.
        assert TRACES[kind] == traces_after_first_step, f"step_{kind} retraced"
        traces[kind] = TRACES[kind] - traces_at_start

    print("held-out MAP@R by step:")
    print("  step         " + "".join(f"{c:>7d}" for c in checkpoints))
    for name, curve in curves.items():
        print(f"  {name:<12} " + "".join(f"{v:7.3f}" for v in curve))
    print(f"memory filled: {int(memory.num_filled)}/{args.memory_size} slots")
    print(f"jit traces in {steps} steps: step_plain {traces['plain']}, step_memory {traces['memory']} (no retrace as the memory fills)")
    plot = save_curves(args.out, checkpoints, curves, before["mean_average_precision_at_r"], args)
    print(f"saved MAP@R curves: {plot}")
    print(f"total time: {time.time() - start:.1f} s")
    return {
        "before": before, "no_memory": results["no memory"], "memory": results["with memory"],
        "curves": {"steps": checkpoints, **curves}, "traces": traces, "plot": plot,
    }


if __name__ == "__main__":
    main()
