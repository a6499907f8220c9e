"""Multi-label classification on a Mulan data set (default: yeast) with jaxmetric's losses.

An MLP (two hidden layers; the second is the embedding) is trained with each loss from the
same initialization, and the test-set mAP, micro/macro F1 and Hamming loss (labels predicted
where the logit is > 0) are printed in one table:

    python examples/multilabel_yeast.py                        # yeast, 14 labels
    python examples/multilabel_yeast.py --dataset emotions     # or scene
    python examples/multilabel_yeast.py --train D/my-train.arff \
        --test D/my-test.arff --num-labels 6                   # any other Mulan-format files

``--dataset`` sets are fetched once by ``jaxmetric.datasets.fetch_mulan`` into the data cache
(``$JAXMETRIC_DATA``, else ``~/.cache/jaxmetric``; ``--data-home`` overrides). Batches have a static shape: the last batch of an epoch is padded
and its padded rows are switched off with ``where``, so one compiled step serves every batch.
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
from flax import linen as nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

import jaxmetric as jm  # noqa: E402
from jaxmetric import metrics  # noqa: E402

class MLP(nn.Module):
    hidden: int
    num_labels: int

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(self.hidden)(x))
        emb = nn.relu(nn.Dense(self.hidden)(h))
        return emb, nn.Dense(self.num_labels)(emb)


def make_losses(class_counts, num_samples):
    """name -> loss(embeddings, logits, targets, where)."""
    pos_weight = jm.pos_weight_from_counts(class_counts, num_samples)

    def cls(f, **kw):
        return lambda emb, logits, y, w: f(logits, y, where=w, **kw)

    def joint(metric):
        def loss(emb, logits, y, w):
            return jm.bce_loss(logits, y, where=w) + 0.1 * metric(emb, y, w)

        return loss

    return {
        "BCE": cls(jm.bce_loss),
        "weighted BCE": cls(jm.bce_loss, pos_weight=pos_weight),
        "focal": cls(jm.focal_loss),
        "ASL": cls(jm.asymmetric_loss),
        "ZLPR": cls(jm.zlpr_loss),
        "BCE + 0.1 SupCon(Jaccard)": joint(
            lambda e, y, w: jm.supcon_loss(e, jm.pair_mask(y, rule="jaccard", where=w), where=w)
        ),
        # --losses all adds:
        "BCE + 0.1 MultiSim(any)": joint(lambda e, y, w: jm.multi_similarity_loss(e, jm.pair_mask(y, where=w), where=w)),
        "two-way": cls(jm.two_way_loss),
        "Hill": cls(jm.hill_loss),
        "Poly-1": cls(jm.poly_bce_loss),
        "DB": lambda emb, logits, y, w: jm.distribution_balanced_loss(logits, y, class_counts, num_samples, where=w),
    }


DEFAULT_LOSSES = ["BCE", "weighted BCE", "focal", "ASL", "ZLPR", "BCE + 0.1 SupCon(Jaccard)"]


def make_evaluate(model):
    """One compiled evaluation for every loss (same model, same test set)."""

    @jax.jit
    def evaluate(params, X, Y):
        _, logits = model.apply(params, X)
        pred = (logits > 0).astype(jnp.int32)
        return {
            "mAP": metrics.average_precision(Y, logits),
            "micro-F1": metrics.f1_score(Y, pred, average="micro"),
            "macro-F1": metrics.f1_score(Y, pred, average="macro"),
            "hamming": metrics.hamming_loss(Y, pred),
        }

    return evaluate


def train_and_evaluate(loss_fn, model, evaluate, data, args, key):
    X_tr, Y_tr, X_te, Y_te = data
    n, d = X_tr.shape
    params = model.init(key, jnp.zeros((1, d)))
    tx = optax.adam(args.lr)
    opt_state = tx.init(params)
    bs = args.batch_size
    steps = -(-n // bs)  # ceil: the last batch is padded

    def objective(p, x, y, w):
        emb, logits = model.apply(p, x)
        return loss_fn(emb, logits, y, w)

    @jax.jit
    def epoch(params, opt_state, perm, X, Y):
        idx = jnp.concatenate([perm, jnp.zeros(steps * bs - n, perm.dtype)]).reshape(steps, bs)
        valid = (jnp.arange(steps * bs) < n).reshape(steps, bs)

        def step(carry, batch):
            params, opt_state = carry
            i, w = batch
            loss, grads = jax.value_and_grad(objective)(params, X[i], Y[i], w)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (idx, valid))
        return params, opt_state, jnp.mean(losses)

    rng = np.random.default_rng(args.seed)
    last = jnp.nan
    for _ in range(args.epochs):
        params, opt_state, last = epoch(params, opt_state, jnp.asarray(rng.permutation(n)), X_tr, Y_tr)
    out = {k: float(v) for k, v in evaluate(params, X_te, Y_te).items()}
    out["train loss"] = float(last)
    return out


def load_local(args):
    """``--train`` / ``--test`` ARFF files, labels by ``--label-xml`` or ``--num-labels``."""
    if not (args.train and args.test):
        raise SystemExit("give both --train and --test (or neither, for --dataset)")
    for p in (args.train, args.test):
        if not Path(p).exists():
            raise SystemExit(f"data file not found: {p} (see --train / --test)")
    if args.label_xml is None and args.num_labels is None:
        raise SystemExit("local files need --num-labels (the last attributes are the labels) or --label-xml")
    kw = {"label_names": args.label_xml} if args.label_xml else {"num_labels": args.num_labels}
    X_tr, Y_tr, _, names = jm.load_arff(args.train, **kw)
    X_te, Y_te, _, names_te = jm.load_arff(args.test, **kw)
    if names != names_te:
        raise SystemExit(f"train and test label names differ: {names} vs {names_te}")
    return X_tr, Y_tr, X_te, Y_te


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="yeast", choices=sorted(jm.datasets.MULAN_DATASETS), help="a Mulan set fetched by jaxmetric.datasets.fetch_mulan (default yeast)")
    ap.add_argument("--data-home", type=Path, default=None, help="the data cache (default $JAXMETRIC_DATA, else ~/.cache/jaxmetric)")
    ap.add_argument("--train", type=Path, default=None, help="a local training ARFF instead of --dataset (with --test and --num-labels or --label-xml)")
    ap.add_argument("--test", type=Path, default=None, help="a local test ARFF (with --train)")
    ap.add_argument("--num-labels", type=int, default=None, help="number of label attributes of --train/--test (the last ones, Mulan's format)")
    ap.add_argument("--label-xml", type=Path, default=None, help="optional Mulan .xml label file (overrides --num-labels)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="one epoch (smoke test)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--losses", default="default", help="'default', 'all', or a comma-separated list of loss names")
    ap.add_argument("--json", type=Path, default=None, help="also write the results table as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.epochs = 1
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.train or args.test:
        X_tr, Y_tr, X_te, Y_te = load_local(args)
    else:
        data = jm.datasets.fetch_mulan(args.dataset, data_home=args.data_home)
        X_tr, Y_tr, X_te, Y_te = data.X_train, data.Y_train, data.X_test, data.Y_test
    mean, std = np.nanmean(X_tr, 0), np.nanstd(X_tr, 0) + 1e-6
    X_tr = np.nan_to_num((X_tr - mean) / std)
    X_te = np.nan_to_num((X_te - mean) / std)
    # metrics need {0, 1}: unknown (-1) test labels count as negatives there
    Y_te_eval = np.maximum(Y_te, 0)
    counts = (Y_tr == 1).sum(0)
    n_known = (Y_tr >= 0).sum(0)
    print(
        f"train {X_tr.shape[0]} x {X_tr.shape[1]} features, test {X_te.shape[0]}, {Y_tr.shape[1]} labels, "
        f"cardinality {np.maximum(Y_tr, 0).sum(1).mean():.2f}; {args.epochs} epochs, batch {args.batch_size}, "
        f"Adam lr {args.lr}, MLP {args.hidden}-{args.hidden}, seed {args.seed}"
    )
    losses = make_losses(jnp.asarray(counts), float(n_known.max()))
    if args.losses == "default":
        selected = DEFAULT_LOSSES
    elif args.losses == "all":
        selected = list(losses)
    else:
        selected = [s.strip() for s in args.losses.split(",")]
        unknown = [s for s in selected if s not in losses]
        if unknown:
            raise SystemExit(f"unknown loss(es) {unknown}; choose from {list(losses)}")
    data = tuple(jnp.asarray(a) for a in (X_tr, Y_tr.astype(np.int32), X_te, Y_te_eval.astype(np.int32)))
    key = jax.random.PRNGKey(args.seed)
    model = MLP(args.hidden, Y_tr.shape[1])
    evaluate = make_evaluate(model)
    results = {}
    header = f"{'loss':<28}{'mAP':>8}{'micro-F1':>10}{'macro-F1':>10}{'hamming':>9}{'time s':>8}"
    print(header)
    print("-" * len(header))
    for name in selected:
        t0 = time.perf_counter()
        r = train_and_evaluate(losses[name], model, evaluate, data, args, key)
        r["time s"] = time.perf_counter() - t0
        results[name] = r
        print(f"{name:<28}{r['mAP']:>8.4f}{r['micro-F1']:>10.4f}{r['macro-F1']:>10.4f}{r['hamming']:>9.4f}{r['time s']:>8.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
