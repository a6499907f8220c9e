"""Paired data: training from labelled pairs ``(x1[i], x2[i], y[i])`` with ``paired_mask``.

Many datasets come as pairs, not classes: "these two signatures / faces / sentences match"
(``y = 1``) or "they do not" (``y = 0``). Here the pairs are built once from digits (positive =
two different images of the same digit, negative = images of two different digits), half and
half, and the class ids are then thrown away: training sees only ``(x1, x2, y)``.

One shared (siamese) encoder embeds ``concat([x1, x2])``; ``jaxmetric.paired_mask(y,
other_pairs=...)`` says which of the ``[2B, 2B]`` pairs are positive and negative:

* ``other_pairs="ignore"``: only the ``B`` explicit pairs count (the classic siamese
  contrastive loss of Hadsell et al.);
* ``other_pairs="negative"``: every cross pair ``(x1[i], x2[j != i])`` is also a negative
  ("in-batch negatives"). Far more negatives per step, but about 1 in 10 of them is in truth
  the same digit (a false negative), since the pairs do not say otherwise.

``ntxent_loss`` needs negatives in each anchor's softmax, so it is run with in-batch
negatives only: with ``"ignore"`` a positive anchor has no negatives and its loss is exactly 0.
Class labels are used only to measure held-out retrieval before and after.

    python examples/paired_data.py                       # the three runs below, 800 steps each
    python examples/paired_data.py --runs contrastive:negative --steps 2000
    python examples/paired_data.py --quick               # 40 steps each (smoke test)
"""
from __future__ import annotations

import argparse
import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from tqdm import tqdm

import jaxmetric
from common import format_metrics, load_digits_split, retrieval_report, save_embedding_panels

# (loss, other_pairs); ntxent:ignore is refused (see the module docstring).
DEFAULT_RUNS = ("contrastive:ignore", "contrastive:negative", "ntxent:negative")


class Encoder(nn.Module):
    dim: int = 32

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(128)(x))
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(self.dim)(x)


def make_pair_dataset(rng, x, y, n_pairs: int, pos_fraction: float = 0.5):
    """``n_pairs`` labelled pairs from a class-labelled set; returns ``(x1, x2, pair_labels)``.

    ``x1`` is a random image; ``x2`` a different image of the same digit (pair label 1, with
    probability ``pos_fraction``) or an image of another digit (pair label 0).
    """
    by_class = {c: np.flatnonzero(y == c) for c in np.unique(y)}
    classes = np.array(sorted(by_class))
    i1 = rng.integers(len(x), size=n_pairs)
    pair_labels = (rng.random(n_pairs) < pos_fraction).astype(np.int32)
    # A negative's class: the anchor's class shifted by 1..C-1 (uniform over the other classes).
    shift = rng.integers(1, len(classes), size=n_pairs)
    c2 = np.where(pair_labels == 1, y[i1], classes[(np.searchsorted(classes, y[i1]) + shift) % len(classes)])
    i2 = np.empty(n_pairs, np.int64)
    rank = np.empty(len(y), np.int64)  # position of each image in its class's index list
    for c, members in by_class.items():
        rank[members] = np.arange(len(members))
    for c, members in by_class.items():
        rows = np.flatnonzero(c2 == c)
        same = y[i1[rows]] == c  # the positive pairs among them
        # Positives draw from the class minus the anchor itself (skip its rank): never (x, x).
        k = rng.integers(0, len(members) - same.astype(np.int64))
        k = np.where(same & (k >= rank[i1[rows]]), k + 1, k)
        i2[rows] = members[k]
    return x[i1], x[i2], pair_labels


@functools.partial(jax.jit, static_argnames=("loss", "other_pairs"))
def train_step(state, x1, x2, pair_labels, *, loss: str, other_pairs: str):
    # [2B, 2B] over concat([x1, x2]); built inside jit from traced labels, so one compile per run.
    mask = jaxmetric.paired_mask(pair_labels, other_pairs=other_pairs)

    def loss_fn(params):
        emb = state.apply_fn({"params": params}, jnp.concatenate([x1, x2]))
        if loss == "contrastive":
            # Euclidean distance of L2-normalised embeddings (PML's default): positives pulled
            # to 0, negatives pushed beyond 1.
            return jaxmetric.contrastive_loss(emb, mask, pos_margin=0.0, neg_margin=1.0)
        return jaxmetric.ntxent_loss(emb, mask, temperature=0.1)

    value, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), value


@jax.jit
def embed(state, x):
    return state.apply_fn({"params": state.params}, x)


def parse_run(text: str):
    loss, _, other_pairs = text.partition(":")
    if loss not in ("contrastive", "ntxent") or other_pairs not in ("ignore", "negative"):
        raise argparse.ArgumentTypeError(f"a run is LOSS:OTHER_PAIRS with LOSS in contrastive/ntxent, OTHER_PAIRS in ignore/negative; got {text!r}")
    if (loss, other_pairs) == ("ntxent", "ignore"):
        raise argparse.ArgumentTypeError("ntxent:ignore has no negative for a positive anchor (its loss is 0); use ntxent:negative")
    return loss, other_pairs


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=parse_run, metavar="LOSS:OTHER_PAIRS",
                        help=f"runs to train and compare (default: {' '.join(DEFAULT_RUNS)})")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--quick", action="store_true", help="40 steps per run (smoke test)")
    parser.add_argument("--batch-size", type=int, default=128, help="pairs per step (2x embeddings)")
    parser.add_argument("--n-pairs", type=int, default=20_000, help="size of the pair dataset")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/paired_embeddings.png")
    args = parser.parse_args(argv)
    steps = 40 if args.quick else args.steps
    start = time.time()

    x_train, x_test, y_train, y_test = load_digits_split(args.seed)
    rng = np.random.default_rng(args.seed)
    x1, x2, pair_labels = make_pair_dataset(rng, x_train, y_train, args.n_pairs)
    del y_train  # from here on, training sees only the pairs
    print(f"{len(pair_labels)} training pairs, {pair_labels.mean():.0%} positive; held-out: {len(x_test)} digits")

    model = Encoder()
    params0 = jax.jit(model.init)(jax.random.PRNGKey(args.seed), jnp.zeros((1, x_test.shape[1]), jnp.float32))["params"]
    before = retrieval_report(model.apply({"params": params0}, x_test), y_test)
    print(f"{'before:':<26} {format_metrics(before)}")

    results, panels = {}, []
    for loss, other_pairs in args.runs or [parse_run(r) for r in DEFAULT_RUNS]:
        name = f"{loss}:{other_pairs}"
        # Every run starts from the same initial weights and sees the same batches.
        state = train_state.TrainState.create(apply_fn=model.apply, params=params0, tx=optax.adam(args.lr))
        order = np.random.default_rng(args.seed + 1)
        bar = tqdm(range(steps), desc=name, unit="step", leave=False)
        for step in bar:
            idx = order.choice(len(pair_labels), size=args.batch_size, replace=False)
            state, value = train_step(state, x1[idx], x2[idx], pair_labels[idx], loss=loss, other_pairs=other_pairs)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{float(value):.3f}")
        emb = np.asarray(embed(state, x_test))
        metrics = retrieval_report(emb, y_test)
        print(f"after {name:<20} {format_metrics(metrics)}")
        results[name] = {"after": metrics, "final_loss": float(value)}
        panels.append((emb, y_test, f"{name}  P@1 {metrics['precision_at_1']:.2f}"))

    plot = save_embedding_panels(panels, args.out, "Held-out digits, trained from labelled pairs only (PCA)")
    print(f"saved held-out embedding plot: {plot}")
    print(f"total time: {time.time() - start:.1f} s")
    return {"before": before, "runs": results, "plot": plot}


if __name__ == "__main__":
    main()
