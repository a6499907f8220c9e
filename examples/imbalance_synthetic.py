"""Extreme label imbalance: 512 labels, 5 positives per row (1% positives).

A reproducible synthetic case where plain BCE learns to predict (almost) nothing at the
0.5 threshold, and re-weighted losses recover the positives. Each row has exactly
``--positives`` labels drawn uniformly from ``--num-labels``; its features are the sum of the
labels' random prototypes plus Gaussian noise. A linear classifier (logits = x W + b, zero
initialization) is trained with Adam for a fixed number of steps with each loss, and the
test set is scored at the logit-0 threshold (probability 0.5):

    python examples/imbalance_synthetic.py               # the numbers in docs/multilabel.md
    python examples/imbalance_synthetic.py --steps 20    # a quick run
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import jaxmetric as jm  # noqa: E402
from jaxmetric import metrics  # noqa: E402


def make_data(rng, n, num_labels, positives, prototypes, noise):
    """Exactly ``positives`` labels per row, uniform over the labels; x = sum of prototypes + noise."""
    chosen = np.argsort(rng.random((n, num_labels)), axis=1)[:, :positives]
    Y = np.zeros((n, num_labels), np.int32)
    np.put_along_axis(Y, chosen, 1, axis=1)
    X = Y @ prototypes + noise * rng.normal(size=(n, prototypes.shape[1]))
    return X.astype(np.float32), Y


def make_losses(counts, n):
    pw = jm.pos_weight_from_counts(counts, n)
    pw_sqrt = jm.pos_weight_from_counts(counts, n, power=0.5)
    return {
        "BCE": lambda l, y: jm.bce_loss(l, y),
        "weighted BCE (n-/n+)": lambda l, y: jm.bce_loss(l, y, pos_weight=pw),
        "weighted BCE (sqrt)": lambda l, y: jm.bce_loss(l, y, pos_weight=pw_sqrt),
        "focal (a=0.25 g=2)": lambda l, y: jm.focal_loss(l, y),
        "focal (a=0.75 g=2)": lambda l, y: jm.focal_loss(l, y, alpha=0.75),
        "ASL (4/0/0.05)": lambda l, y: jm.asymmetric_loss(l, y),
        "ZLPR": lambda l, y: jm.zlpr_loss(l, y),
    }


def train(loss_fn, X, Y, args):
    d, c = X.shape[1], Y.shape[1]
    params = (jnp.zeros((d, c)), jnp.zeros((c,)))
    tx = optax.adam(args.lr)
    opt_state = tx.init(params)

    @jax.jit
    def run(params, opt_state, key, X, Y):
        def step(carry, k):
            params, opt_state = carry
            idx = jax.random.choice(k, X.shape[0], (args.batch_size,), replace=False)
            grads = jax.grad(lambda p: loss_fn(X[idx] @ p[0] + p[1], Y[idx]))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, _), _ = jax.lax.scan(step, (params, opt_state), jax.random.split(key, args.steps))
        return params

    return run(params, opt_state, jax.random.PRNGKey(args.seed), X, Y)


@jax.jit
def scores(logits, Y):
    pred = (logits > 0).astype(jnp.int32)
    tp = jnp.sum(pred * Y)
    return {
        "pred/row": jnp.mean(jnp.sum(pred, 1).astype(jnp.float32)),
        "precision": tp / jnp.maximum(jnp.sum(pred), 1),
        "recall": tp / jnp.sum(Y),
        "micro-F1": metrics.f1_score(Y, pred, average="micro"),
        "macro-F1": metrics.f1_score(Y, pred, average="macro"),
        "mAP": metrics.average_precision(Y, logits),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-labels", type=int, default=512)
    ap.add_argument("--positives", type=int, default=5)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--train-size", type=int, default=4096)
    ap.add_argument("--test-size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="20 steps on 512 / 128 rows (smoke test)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--losses", default="all", help="'all' or a comma-separated list of names")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.train_size, args.test_size = 20, 512, 128

    rng = np.random.default_rng(args.seed)
    prototypes = rng.normal(size=(args.num_labels, args.dim)) / np.sqrt(args.positives)
    X_tr, Y_tr = make_data(rng, args.train_size, args.num_labels, args.positives, prototypes, args.noise)
    X_te, Y_te = make_data(rng, args.test_size, args.num_labels, args.positives, prototypes, args.noise)
    counts = Y_tr.sum(0)
    print(
        f"{args.num_labels} labels, {args.positives} positives per row ({args.positives / args.num_labels:.1%}), "
        f"train {args.train_size} / test {args.test_size}, dim {args.dim}, noise {args.noise}; linear model, "
        f"Adam lr {args.lr}, {args.steps} steps of batch {args.batch_size}, seed {args.seed}; threshold: logit > 0"
    )
    losses = make_losses(jnp.asarray(counts), args.train_size)
    names = list(losses) if args.losses == "all" else [s.strip() for s in args.losses.split(",")]
    bad = [n for n in names if n not in losses]
    if bad:
        raise SystemExit(f"unknown loss(es) {bad}; choose from {list(losses)}")
    cols = ["pred/row", "precision", "recall", "micro-F1", "macro-F1", "mAP"]
    header = f"{'loss':<24}" + "".join(f"{c:>10}" for c in cols)
    print(header)
    print("-" * len(header))
    results = {}
    Xtr, Ytr, Xte, Yte = (jnp.asarray(a) for a in (X_tr, Y_tr, X_te, Y_te))
    for name in names:
        t0 = time.perf_counter()
        W, b = train(losses[name], Xtr, Ytr, args)
        r = {k: float(v) for k, v in scores(Xte @ W + b, Yte).items()}
        r["time s"] = time.perf_counter() - t0
        results[name] = r
        print(f"{name:<24}" + "".join(f"{r[c]:>10.3f}" for c in cols), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
