"""A two-tower CLIP / SigLIP toy: match the left half of each digit to its right half.

Two "modalities" with no shared weights: tower A sees the left 8x4 half of an image, tower B
the right 8x4 half. Row ``i`` of a batch is a matching pair (the two halves of one image);
every other row is a negative, as image/caption pairs are in CLIP. No class labels are used
in training.

* ``--loss clip``: ``clip_loss`` (symmetric InfoNCE) with a learnable temperature,
  ``params["loss"] = init_clip_params()`` (``log_temperature = log 0.07``);
* ``--loss siglip``: ``siglip_loss`` (pairwise sigmoid) with a learnable scale and bias,
  ``params["loss"] = init_siglip_params()`` (``t' = log 10``, ``b = -10``).

The temperature (and bias) live in the params pytree beside the two towers, so one
``jax.grad`` and one optimizer train all of them. Printed before and after: the temperature,
cross-modal Recall@1 on held-out images (a left half queries the right halves of all held-out
images; a hit is its own right half) and class-level P@1 (the retrieved right half shows the
same digit). The plot shows the temperature during training and the held-out A-vs-B
similarity matrix before and after.

    python examples/two_tower_clip.py                  # clip_loss, 1500 steps
    python examples/two_tower_clip.py --loss siglip    # siglip_loss
    python examples/two_tower_clip.py --quick          # 60 steps (smoke test)
"""
from __future__ import annotations

import argparse
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
from common import load_digits_split


class Tower(nn.Module):
    """One modality's encoder: 32 pixels -> a 32-d embedding (clip/siglip L2-normalise it)."""

    dim: int = 32

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(128)(x))
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(self.dim)(x)


class TwoTowers(nn.Module):
    """Both towers in one module, so their params are one pytree: {"tower_a", "tower_b"}."""

    def setup(self):
        self.tower_a = Tower()
        self.tower_b = Tower()

    def __call__(self, left, right):
        return self.tower_a(left), self.tower_b(right)


def split_halves(x):
    """Flattened 8x8 images -> (left 8x4 halves, right 8x4 halves), each flattened to 32."""
    img = x.reshape(-1, 8, 8)
    return img[:, :, :4].reshape(-1, 32), img[:, :, 4:].reshape(-1, 32)


def temperature_report(loss: str, loss_params) -> dict:
    """The learnable loss parameters in readable form."""
    if loss == "clip":
        tau = float(jnp.exp(loss_params["log_temperature"]))
        return {"temperature": tau, "logit_scale": 1.0 / tau}
    return {"t": float(jnp.exp(loss_params["t_prime"])), "bias": float(loss_params["bias"])}


def format_temperature(report: dict) -> str:
    return "  ".join(f"{k} {v:.3f}" for k, v in report.items())


def make_train_step(loss: str):
    def loss_value(params, apply_fn, left, right):
        emb_a, emb_b = apply_fn({"params": params["towers"]}, left, right)
        if loss == "clip":
            return jaxmetric.clip_loss(emb_a, emb_b, params["loss"]["log_temperature"])
        return jaxmetric.siglip_loss(emb_a, emb_b, params["loss"]["t_prime"], params["loss"]["bias"])

    @jax.jit
    def train_step(state, left, right):
        # The gradient reaches the towers and the temperature (and bias) alike.
        value, grads = jax.value_and_grad(loss_value)(state.params, state.apply_fn, left, right)
        return state.apply_gradients(grads=grads), value

    return train_step


def evaluate(model, towers_params, left, right, digits) -> dict:
    """Cross-modal retrieval: queries = tower A of the left halves, references = tower B of
    the right halves (two different sets, so nothing is excluded as "self")."""
    emb_a, emb_b = (np.asarray(e) for e in jax.jit(model.apply)({"params": towers_params}, left, right))
    cos = jaxmetric.CosineSimilarity()  # the similarity clip_loss and siglip_loss train
    ids = np.arange(len(left))  # instance level: the only relevant reference is the own half
    instance = jaxmetric.evaluation.get_accuracy(emb_a, ids, emb_b, ids, include=("recall_at_k",), recall_ks=(1, 5), distance=cos)
    by_class = jaxmetric.evaluation.get_accuracy(emb_a, digits, emb_b, digits, include=("precision_at_1",), distance=cos)
    a = emb_a / np.linalg.norm(emb_a, axis=1, keepdims=True)
    b = emb_b / np.linalg.norm(emb_b, axis=1, keepdims=True)
    return {**instance, "class_precision_at_1": by_class["precision_at_1"], "similarity": a @ b.T}


def format_retrieval(m: dict) -> str:
    return f"R@1 {m['recall_at_1']:.3f}  R@5 {m['recall_at_5']:.3f}  class P@1 {m['class_precision_at_1']:.3f}"


def save_plot(path, loss, history, sim_before, sim_after, digits) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # 60 held-out images sorted by digit: a good model shows a bright diagonal (own half) inside
    # brighter diagonal blocks (same digit).
    pick = np.argsort(digits, kind="stable")[:: max(1, len(digits) // 60)][:60]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), layout="constrained")
    # The learnable loss parameters during training: CLIP's temperature; SigLIP's t and bias.
    keys = ["temperature"] if loss == "clip" else ["t", "bias"]
    for i, (key, ax) in enumerate(zip(keys, [axes[0], axes[0].twinx()] if len(keys) > 1 else [axes[0]])):
        ax.plot([h[key] for h in history], color=f"C{i}", label=key)
        ax.set_ylabel(key, color=f"C{i}")
    axes[0].set_xlabel("step")
    axes[0].set_title(f"learned {' and '.join(keys)} ({loss}_loss)")
    for ax, sim, when in ((axes[1], sim_before, "before"), (axes[2], sim_after, "after")):
        im = ax.imshow(sim[np.ix_(pick, pick)], cmap="viridis", vmin=-1, vmax=1)
        ax.set_title(f"held-out cosine, {when} training")
        ax.set_xlabel("tower B: right halves (by digit)")
        ax.set_ylabel("tower A: left halves (by digit)")
    fig.colorbar(im, ax=axes[1:], shrink=0.9)
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss", choices=("clip", "siglip"), default="clip")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--quick", action="store_true", help="60 steps (smoke test)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="plot path (default out/two_tower_<loss>.png)")
    args = parser.parse_args(argv)
    steps = 60 if args.quick else args.steps
    out = args.out or f"out/two_tower_{args.loss}.png"
    start = time.time()

    x_train, x_test, _, y_test = load_digits_split(args.seed)  # y_test only for class-level P@1
    left_train, right_train = split_halves(x_train)
    left_test, right_test = split_halves(x_test)

    model = TwoTowers()
    towers = jax.jit(model.init)(jax.random.PRNGKey(args.seed), left_test[:1], right_test[:1])["params"]
    loss_params = jaxmetric.init_clip_params() if args.loss == "clip" else jaxmetric.init_siglip_params()
    params = {"towers": towers, "loss": loss_params}
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(args.lr))

    temp_before = temperature_report(args.loss, state.params["loss"])
    before = evaluate(model, state.params["towers"], left_test, right_test, y_test)
    print(f"before: {format_temperature(temp_before)}")
    print(f"        cross-modal (A queries B): {format_retrieval(before)}")

    train_step = make_train_step(args.loss)
    rng = np.random.default_rng(args.seed)
    history = []
    bar = tqdm(range(steps), desc=f"{args.loss} two-tower", unit="step")
    for step in bar:
        idx = rng.choice(len(x_train), size=args.batch_size, replace=False)
        state, value = train_step(state, left_train[idx], right_train[idx])
        history.append(temperature_report(args.loss, state.params["loss"]))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{float(value):.3f}", **{k: f"{v:.3f}" for k, v in history[-1].items() if k != "logit_scale"})

    temp_after = temperature_report(args.loss, state.params["loss"])
    after = evaluate(model, state.params["towers"], left_test, right_test, y_test)
    print(f"after:  {format_temperature(temp_after)}")
    print(f"        cross-modal (A queries B): {format_retrieval(after)}")
    print(f"        (chance R@1 = 1/{len(x_test)} = {1 / len(x_test):.4f})")
    plot = save_plot(out, args.loss, history, before["similarity"], after["similarity"], y_test)
    print(f"saved plot: {plot}")
    print(f"total time: {time.time() - start:.1f} s")
    drop = lambda m: {k: v for k, v in m.items() if k != "similarity"}  # noqa: E731
    return {
        "before": drop(before), "after": drop(after), "temperature_before": temp_before,
        "temperature_after": temp_after, "final_loss": float(value), "plot": plot,
    }


if __name__ == "__main__":
    main()
