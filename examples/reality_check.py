"""A metric-learning reality check on real data (`make reality-check`; docs/reality_check.md).

The protocol of Musgrave et al., "A Metric Learning Reality Check" (ECCV 2020), scaled to a
2-core CPU:

* scikit-learn's 8x8 digits; the network trains on classes 0-4 and is tested on 5-9, which it
  never saw (and the reverse split). Retrieval on the unseen classes: each test image queries
  the other test images (cosine); Precision@1, R-Precision and MAP@R.
* every loss gets the same Flax MLP (64-128-128-32), the same initial weights, the same
  m-per-class batches, Adam, and a fixed budget of epochs; no early stopping and nothing
  tuned on the test classes; 3 seeds (mean and sample std).
* the untrained network (and the raw pixels) as floors; MAP@R on held-out images of the
  training classes beside it, to tell "learned nothing" from "learned what does not transfer".
* the same recipe in PyTorch with pytorch-metric-learning's (PML) losses and miners for four of
  the losses: the weights and proxies are copied, the batches are the same index arrays.
* multi-label classification on two Mulan data sets (yeast, emotions) with jaxmetric's
  multi-label losses: test mAP, and micro/macro-F1 at a threshold tuned on a validation split.

    python examples/reality_check.py                      # the full run of the docs page
    python examples/reality_check.py --quick              # one seed, one split, a few steps
    python examples/reality_check.py --parts digits       # no PML, no multi-label data

It writes ``results.json``, ``tables.md`` (the docs page's tables) and ``reality_check.png``
under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

import jaxmetric as jm  # noqa: E402

PARTS = ("digits", "pml", "multilabel")
SPLITS = {"train 0-4, test 5-9": (0, 1, 2, 3, 4), "train 5-9, test 0-4": (5, 6, 7, 8, 9)}
RETRIEVAL = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
SHORT = {"precision_at_1": "P@1", "r_precision": "R-Prec", "mean_average_precision_at_r": "MAP@R"}
MULTILABEL_SETS = ("yeast", "emotions")
MULTILABEL_METRICS = ("mAP", "micro-F1", "macro-F1")


# ----------------------------------------------------------------------------- metric learning
class EmbeddingMLP(nn.Module):
    """The network of every run (named layers: the PyTorch copy maps them one to one)."""

    hidden: int = 128
    dim: int = 32

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.hidden, name="dense_0")(x))
        x = nn.relu(nn.Dense(self.hidden, name="dense_1")(x))
        return nn.Dense(self.dim, name="dense_2")(x)


@dataclass(frozen=True)
class MetricLoss:
    name: str
    settings: str  # shown in the docs table
    fn: Callable  # (embeddings, labels, class_matrix or None) -> scalar
    class_matrix: str | None = None  # init_class_weights kind, for the losses with proxies / a head


# PML's default hyperparameters throughout (jaxmetric's defaults are PML's); written out so the
# PyTorch side (pml_loss_and_miner below) can be checked against them.
METRIC_LOSSES = [
    MetricLoss("contrastive", "pos_margin 0, neg_margin 1", lambda e, y, w: jm.contrastive_loss(e, y, pos_margin=0.0, neg_margin=1.0)),
    MetricLoss(
        "triplet + miner",
        "margin 0.05; triplet_margin_miner(margin 0.2, all)",
        lambda e, y, w: jm.triplet_margin_loss(e, jm.triplet_margin_miner(e, y, margin=0.2), margin=0.05),
    ),
    MetricLoss(
        "multi-similarity + miner",
        "alpha 2, beta 50, base 0.5; multi_similarity_miner(epsilon 0.1)",
        lambda e, y, w: jm.multi_similarity_loss(e, jm.multi_similarity_miner(e, y, epsilon=0.1), alpha=2.0, beta=50.0, base=0.5),
    ),
    MetricLoss("circle", "m 0.4, gamma 80", lambda e, y, w: jm.circle_loss(e, y, m=0.4, gamma=80.0)),
    MetricLoss("supcon", "temperature 0.1", lambda e, y, w: jm.supcon_loss(e, y, temperature=0.1)),
    MetricLoss("ntxent", "temperature 0.07", lambda e, y, w: jm.ntxent_loss(e, y, temperature=0.07)),
    MetricLoss("ProxyAnchor", "margin 0.1, alpha 32", lambda e, y, w: jm.proxy_anchor_loss(e, y, w, margin=0.1, alpha=32.0), "proxy_anchor"),
    MetricLoss("ArcFace", "margin 28.6 deg, scale 64", lambda e, y, w: jm.arcface_loss(e, y, w, margin=28.6, scale=64.0), "arcface"),
]
LOSSES_BY_NAME = {spec.name: spec for spec in METRIC_LOSSES}


def load_class_split(train_classes, seed: int, seen_test_fraction: float):
    """Digits with pixels in [0, 1], as ``(x_train, y_train, x_seen, y_seen, x_unseen, y_unseen)``:
    the images of ``train_classes`` (labels renumbered 0..4: the proxy / head losses index a
    class matrix) less a stratified ``seen_test_fraction`` of them, those held-out images of the
    training classes, and every image of the other classes."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    seen = np.isin(y, train_classes)
    renumber = np.zeros(10, np.int32)
    renumber[sorted(train_classes)] = np.arange(len(train_classes))
    x_train, x_seen, y_train, y_seen = train_test_split(
        x[seen], renumber[y[seen]], test_size=seen_test_fraction, random_state=seed, stratify=y[seen]
    )
    return x_train, y_train, x_seen, y_seen, x[~seen], y[~seen]


def retrieval(embeddings, labels) -> dict:
    """Each query against the other rows (leave-one-out), cosine ranking."""
    out = jm.evaluation.get_accuracy(
        np.asarray(embeddings, np.float32), np.asarray(labels), include=RETRIEVAL, distance=jm.CosineSimilarity()
    )
    return {k: float(out[k]) for k in RETRIEVAL}


def initial_weights(seed: int, num_classes: int, dim: int = 32):
    """Network params and one class matrix per kind, all from ``seed`` (shared by both libraries)."""
    net_key, loss_key = jax.random.split(jax.random.PRNGKey(seed))
    net = EmbeddingMLP(dim=dim).init(net_key, jnp.zeros((1, 64), jnp.float32))["params"]
    matrices = {
        kind: np.asarray(jm.init_class_weights(loss_key, num_classes, dim, kind=kind))
        for kind in {s.class_matrix for s in METRIC_LOSSES if s.class_matrix}
    }
    return net, matrices


def make_batches(x_train, y_train, *, seed, epochs, steps_per_epoch, batch_size, m):
    """``[epochs, steps, batch, ...]`` images and labels from ``m_per_class_batches``."""
    idx = np.stack(list(jm.samplers.m_per_class_batches(y_train, m, batch_size, seed=seed, num_batches=epochs * steps_per_epoch)))
    idx = idx.reshape(epochs, steps_per_epoch, batch_size)
    return x_train[idx], y_train[idx]


class JaxTrainer:
    """One jitted epoch (a ``lax.scan`` over its batches) per loss; every split and seed reuses
    the compilation (the batches have one shape)."""

    def __init__(self, spec: MetricLoss, lr: float, loss_lr: float):
        self.spec = spec
        model = EmbeddingMLP()
        # The proxies / class head get their own learning rate (Proxy-Anchor's recipe), the same
        # on the PyTorch side.
        self.tx = optax.multi_transform({"net": optax.adam(lr), "loss": optax.adam(loss_lr)}, lambda p: {k: k for k in p})

        def objective(params, x, y):
            return spec.fn(model.apply({"params": params["net"]}, x), y, params.get("loss"))

        def epoch(params, opt_state, xs, ys):
            def step(carry, batch):
                params, opt_state = carry
                loss, grads = jax.value_and_grad(objective)(params, *batch)
                updates, opt_state = self.tx.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), loss

            (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (xs, ys))
            return params, opt_state, losses

        self.epoch = jax.jit(epoch)
        self.embed = jax.jit(lambda params, x: model.apply({"params": params["net"]}, x))

    def train(self, net, matrices, x_batches, y_batches):
        """Returns ``(params, first_batch_loss, epoch_seconds)``."""
        params = {"net": net}
        if self.spec.class_matrix:
            params["loss"] = jnp.asarray(matrices[self.spec.class_matrix])
        opt_state = self.tx.init(params)
        first_loss, epoch_seconds = None, []
        for xs, ys in zip(x_batches, y_batches):
            start = time.perf_counter()
            params, opt_state, losses = self.epoch(params, opt_state, jnp.asarray(xs), jnp.asarray(ys))
            losses = np.asarray(losses)  # waits for the epoch
            epoch_seconds.append(time.perf_counter() - start)
            if first_loss is None:
                first_loss = float(losses[0])
        if not np.isfinite(losses).all():
            raise FloatingPointError(f"{self.spec.name}: non-finite loss during training")
        return params, first_loss, epoch_seconds


# ----------------------------------------------------------------------------- the PML side
# The same MLP, initial weights, batches and optimizer in PyTorch, with pytorch-metric-learning's
# (PML) losses and miners, at the same hyperparameters as the jaxmetric side. torch and PML are
# imported only here (pip install -e ".[pml]").
PML_LOSSES = ("contrastive", "multi-similarity + miner", "circle", "ProxyAnchor")


def torch_mlp_from_flax(params: dict):
    """``Linear-ReLU-Linear-ReLU-Linear`` holding a copy of the Flax MLP's weights.

    Flax's ``Dense`` computes ``x @ kernel`` with ``kernel`` ``(in, out)``; torch's ``Linear``
    computes ``x @ weight.T`` with ``weight`` ``(out, in)``: the kernels are transposed.
    """
    import torch

    names = sorted(params)  # "dense_0", "dense_1", "dense_2"
    layers = []
    for i, name in enumerate(names):
        kernel = np.asarray(params[name]["kernel"], np.float32)
        linear = torch.nn.Linear(*kernel.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(kernel.T.copy()))
            linear.bias.copy_(torch.from_numpy(np.array(params[name]["bias"], np.float32)))
        layers.append(linear)
        if i < len(names) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def pml_loss_and_miner(name: str, proxies):
    """``(loss module, miner or None)``; ``proxies`` ``(num_classes, dim)`` for ProxyAnchor
    (PML keeps them in that layout too, as ``loss.proxies``)."""
    import torch
    from pytorch_metric_learning import losses, miners

    if name == "contrastive":
        return losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0), None
    if name == "multi-similarity + miner":
        return losses.MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5), miners.MultiSimilarityMiner(epsilon=0.1)
    if name == "circle":
        return losses.CircleLoss(m=0.4, gamma=80.0), None
    if name == "ProxyAnchor":
        num_classes, dim = proxies.shape
        loss = losses.ProxyAnchorLoss(num_classes, dim, margin=0.1, alpha=32.0)
        with torch.no_grad():
            loss.proxies.copy_(torch.from_numpy(np.array(proxies, np.float32)))
        return loss, None
    raise ValueError(f"no PML counterpart for {name!r}; choose from {PML_LOSSES}")


class PmlTrainer:
    """Trains a torch copy of the Flax MLP with PML (one Python step per batch, as PML is used)."""

    def __init__(self, name: str, lr: float, loss_lr: float, threads: int):
        import torch

        self.name, self.lr, self.loss_lr = name, lr, loss_lr
        # One thread by default: on the shared 2-core machine torch's default (one OpenMP
        # thread per core) made these tiny steps 25-40x slower (threads waiting on each other).
        torch.set_num_threads(threads)

    def train(self, net, matrices, x_batches, y_batches):
        """Returns ``(model, first_batch_loss, epoch_seconds)``, batches as ``JaxTrainer.train``."""
        import torch

        model = torch_mlp_from_flax(net)
        loss_fn, miner = pml_loss_and_miner(self.name, matrices.get(LOSSES_BY_NAME[self.name].class_matrix))
        groups = [{"params": model.parameters(), "lr": self.lr}]
        loss_params = list(loss_fn.parameters())
        if loss_params:  # ProxyAnchor's proxies: their own learning rate, as on the jaxmetric side
            groups.append({"params": loss_params, "lr": self.loss_lr})
        optimizer = torch.optim.Adam(groups)
        first_loss, epoch_seconds = None, []
        for xs, ys in zip(x_batches, y_batches):
            start = time.perf_counter()
            for x, y in zip(xs, ys):
                x, y = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
                emb = model(x)
                loss = loss_fn(emb, y, miner(emb, y) if miner is not None else None)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if first_loss is None:
                    first_loss = float(loss.detach())
            epoch_seconds.append(time.perf_counter() - start)
        return model, first_loss, epoch_seconds

    @staticmethod
    def embed(model, x):
        import torch

        with torch.no_grad():
            return model(torch.from_numpy(np.asarray(x, np.float32))).numpy()


def format_retrieval(out) -> str:
    return "  ".join(f"{SHORT[k]} {out[k]:.3f}" for k in RETRIEVAL) + f"  (seen classes: MAP@R {out['seen_map_at_r']:.3f})"


def steady_epoch_seconds(epoch_seconds) -> float:
    """Median epoch time without the first epoch (which includes JAX's compilation)."""
    return float(np.median(epoch_seconds[1:] if len(epoch_seconds) > 1 else epoch_seconds))


def run_metric_learning(args, losses, pml_losses, log):
    """results[split][method][seed] = {metric: value, ...}."""
    trainers = {}
    results = {}
    splits = list(SPLITS.items())[: args.splits]
    runs = [(s, seed) for s in splits for seed in range(args.seeds)]
    bar = tqdm(total=len(runs) * (len(losses) + len(pml_losses)), desc="metric learning", unit="run")
    for (split_name, train_classes), seed in runs:
        x_tr, y_tr, x_seen, y_seen, x_te, y_te = load_class_split(train_classes, seed, args.seen_test_fraction)

        def evaluate(embed):
            """Unseen classes (the benchmark), plus MAP@R on held-out images of the seen ones."""
            out = retrieval(embed(x_te), y_te)
            out["seen_map_at_r"] = retrieval(embed(x_seen), y_seen)["mean_average_precision_at_r"]
            return out

        res = results.setdefault(split_name, {})
        res.setdefault("raw pixels", {})[seed] = evaluate(lambda x: x)
        net, matrices = initial_weights(seed, len(train_classes))
        untrained = jax.jit(lambda p, x: EmbeddingMLP().apply({"params": p}, x))
        res.setdefault("untrained network", {})[seed] = evaluate(lambda x: untrained(net, x))
        steps = args.steps_per_epoch or len(y_tr) // args.batch_size
        xb, yb = make_batches(x_tr, y_tr, seed=seed, epochs=args.epochs, steps_per_epoch=steps, batch_size=args.batch_size, m=args.m)
        for name in losses:
            trainer = trainers.setdefault(name, JaxTrainer(LOSSES_BY_NAME[name], args.lr, args.loss_lr))
            params, first_loss, seconds = trainer.train(net, matrices, xb, yb)
            out = evaluate(lambda x: trainer.embed(params, x))
            out.update(first_loss=first_loss, epoch_seconds=steady_epoch_seconds(seconds))
            res.setdefault(f"jaxmetric {name}", {})[seed] = out
            log(f"{split_name} seed {seed} jaxmetric {name}: {format_retrieval(out)}")
            bar.update()
        for name in pml_losses:
            trainer = trainers.setdefault(f"PML {name}", PmlTrainer(name, args.lr, args.loss_lr, args.torch_threads))
            model, first_loss, seconds = trainer.train(net, matrices, xb, yb)
            out = evaluate(lambda x: trainer.embed(model, x))
            out.update(first_loss=first_loss, epoch_seconds=steady_epoch_seconds(seconds))
            res.setdefault(f"PML {name}", {})[seed] = out
            log(f"{split_name} seed {seed} PML {name}: {format_retrieval(out)}")
            bar.update()
    bar.close()
    return results


# ----------------------------------------------------------------------------- multi-label
class MultiLabelMLP(nn.Module):
    hidden: int
    num_labels: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.num_labels)(x)


def multilabel_losses(pos_weight):
    """name -> loss(logits, targets); the library defaults, ``pos_weight`` = n-/n+ per label."""
    return {
        "BCE": lambda z, y: jm.bce_loss(z, y),
        "BCE + pos_weight": lambda z, y: jm.bce_loss(z, y, pos_weight=pos_weight),
        "focal": lambda z, y: jm.focal_loss(z, y),
        "focal + pos_weight": lambda z, y: jm.focal_loss(z, y, pos_weight=pos_weight),
        "ASL": lambda z, y: jm.asymmetric_loss(z, y),
        "ZLPR": lambda z, y: jm.zlpr_loss(z, y),
        "two-way": lambda z, y: jm.two_way_loss(z, y),
        "Hill": lambda z, y: jm.hill_loss(z, y),
    }


MULTILABEL_LOSSES = list(multilabel_losses(None))


def load_multilabel(name: str, data_home):
    """The Mulan data set ``name`` (downloaded once into the data folder)."""
    try:
        data = jm.datasets.fetch_mulan(name, data_home=data_home)
    except OSError as e:
        raise SystemExit(f"{e}\n(or leave the multi-label part out with --parts digits,pml)") from e
    return data.X_train, np.asarray(data.Y_train), data.X_test, np.asarray(data.Y_test)


def tuned_threshold(logits, targets, average: str) -> float:
    """The logit threshold with the best F1 (``average``) on a validation split: 99 quantiles of
    the validation logits (and 0) as candidates."""
    candidates = np.unique(np.concatenate([np.quantile(logits, np.linspace(0.01, 0.99, 99)), [0.0]]))
    f1 = jax.vmap(lambda t: jm.metrics.f1_score(targets, (logits > t).astype(jnp.int32), average=average, zero_division=0.0))
    scores = np.asarray(f1(jnp.asarray(candidates, jnp.float32)))
    return float(candidates[int(np.argmax(scores))])


def multilabel_scores(logits_val, y_val, logits_test, y_test) -> dict:
    out = {"mAP": float(jm.metrics.average_precision(y_test, logits_test))}
    for average in ("micro", "macro"):
        t = tuned_threshold(logits_val, y_val, average)
        pred = (logits_test > t).astype(jnp.int32)
        out[f"{average}-F1"] = float(jm.metrics.f1_score(y_test, pred, average=average, zero_division=0.0))
    return out


def run_multilabel(args, losses, log):
    """results[data set][loss][seed] = {"mAP", "micro-F1", "macro-F1"}."""
    results = {}
    runs = [(d, seed) for d in MULTILABEL_SETS[: args.multilabel_sets] for seed in range(args.seeds)]
    bar = tqdm(total=len(runs) * (len(losses) + 1), desc="multi-label", unit="run")
    for dataset, seed in runs:
        X_tr, Y_tr, X_te, Y_te = load_multilabel(dataset, args.data_home)
        # A validation split of the training set (per seed) for the F1 thresholds; the network
        # trains on the rest.
        order = np.random.default_rng(seed).permutation(len(X_tr))
        n_val = int(round(args.val_fraction * len(X_tr)))
        val, fit = order[:n_val], order[n_val:]
        mean, std = np.nanmean(X_tr[fit], 0), np.nanstd(X_tr[fit], 0) + 1e-6

        def standardize(a):
            return np.nan_to_num((a - mean) / std).astype(np.float32)

        x_fit, x_val, x_te = standardize(X_tr[fit]), standardize(X_tr[val]), standardize(X_te)
        # unknown label values (-1), if any, count as negatives
        y_fit, y_val, y_te = (np.maximum(a, 0).astype(np.int32) for a in (Y_tr[fit], Y_tr[val], Y_te))
        pos_weight = jm.pos_weight_from_counts(jnp.asarray(y_fit.sum(0)), float(len(y_fit)))
        model = MultiLabelMLP(args.hidden, y_fit.shape[1])
        init = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, x_fit.shape[1]), jnp.float32))
        apply = jax.jit(model.apply)
        res = results.setdefault(dataset, {})
        res.setdefault("untrained network", {})[seed] = multilabel_scores(apply(init, x_val), y_val, apply(init, x_te), y_te)
        bar.update()
        steps = len(x_fit) // args.batch_size  # the last partial batch is dropped: one shape
        perms = np.random.default_rng(seed + 1).permuted(np.tile(np.arange(len(x_fit)), (args.multilabel_epochs, 1)), axis=1)
        idx = perms[:, : steps * args.batch_size].reshape(args.multilabel_epochs, steps, args.batch_size)
        xb, yb = jnp.asarray(x_fit[idx]), jnp.asarray(y_fit[idx])
        loss_fns = multilabel_losses(pos_weight)
        for name in losses:
            params = train_multilabel(model, init, loss_fns[name], xb, yb, args.lr)
            res.setdefault(name, {})[seed] = out = multilabel_scores(apply(params, x_val), y_val, apply(params, x_te), y_te)
            log(f"{dataset} seed {seed} {name}: " + "  ".join(f"{k} {out[k]:.3f}" for k in MULTILABEL_METRICS))
            bar.update()
    bar.close()
    return results


def train_multilabel(model, params, loss_fn, xb, yb, lr):
    """Adam over ``[epochs, steps, batch]`` batches, all epochs in one jitted scan."""
    tx = optax.adam(lr)

    @jax.jit
    def fit(params, xb, yb):
        def step(carry, batch):
            params, opt_state = carry
            x, y = batch
            loss, grads = jax.value_and_grad(lambda p: loss_fn(model.apply(p, x), y))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        flat = lambda a: a.reshape((-1,) + a.shape[2:])  # noqa: E731
        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), (flat(xb), flat(yb)))
        return params, losses

    params, losses = fit(params, xb, yb)
    if not np.isfinite(np.asarray(losses)).all():
        raise FloatingPointError("non-finite multi-label loss during training")
    return params


# ----------------------------------------------------------------------------- report
def summary(per_seed: dict, key: str):
    values = np.array([r[key] for r in per_seed.values()], np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def cell(per_seed, key, digits=3):
    mean, std = summary(per_seed, key)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def metric_learning_table(results, split: str) -> str:
    columns = RETRIEVAL + ("seen_map_at_r",)
    label = {**SHORT, "seen_map_at_r": "seen-class MAP@R"}
    rows = [f"{split}:", "", "| method | " + " | ".join(label[k] for k in columns) + " |", "|---|" + "---|" * len(columns)]
    for method in (m for m in results[split] if not m.startswith("PML ")):
        rows.append(f"| {method.removeprefix('jaxmetric ')} | " + " | ".join(cell(results[split][method], k) for k in columns) + " |")
    return "\n".join(rows)


def settings_table(losses) -> str:
    rows = ["| loss | settings (PML's defaults) |", "|---|---|"]
    rows += [f"| {name} | {LOSSES_BY_NAME[name].settings} |" for name in losses]
    return "\n".join(rows)


def pml_table(results) -> str:
    splits = list(results)
    names = [m.removeprefix("PML ") for m in results[splits[0]] if m.startswith("PML ")]
    head = " | ".join(f"MAP@R {lib} ({s})" for s in splits for lib in ("jaxmetric", "PML"))
    rows = [f"| loss | {head} | first-batch loss, jaxmetric / PML | ms per epoch, jaxmetric / PML |"]
    rows.append("|---|" + "---|" * (2 * len(splits) + 2))
    for name in names:
        cells = [cell(results[s][f"{lib} {name}"], "mean_average_precision_at_r") for s in splits for lib in ("jaxmetric", "PML")]
        first = results[splits[0]][f"jaxmetric {name}"][0]["first_loss"], results[splits[0]][f"PML {name}"][0]["first_loss"]
        ms = [1e3 * np.mean([r["epoch_seconds"] for s in splits for r in results[s][f"{lib} {name}"].values()]) for lib in ("jaxmetric", "PML")]
        cells.append(f"{first[0]:.5f} / {first[1]:.5f}")
        cells.append(f"{ms[0]:.1f} / {ms[1]:.1f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def multilabel_table(results) -> str:
    sets = list(results)
    rows = ["| loss | " + " | ".join(f"{k} ({d})" for d in sets for k in MULTILABEL_METRICS) + " |"]
    rows.append("|---|" + "---|" * (len(sets) * len(MULTILABEL_METRICS)))
    for name in results[sets[0]]:
        rows.append(f"| {name} | " + " | ".join(cell(results[d][name], k) for d in sets for k in MULTILABEL_METRICS) + " |")
    return "\n".join(rows)


def save_plot(metric_results, multilabel_results, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in (metric_results, multilabel_results) if p]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 4.2 * len(panels)), squeeze=False)
    axes = axes[:, 0]
    if metric_results:
        ax = axes[0]
        splits = list(metric_results)
        jax_methods = [m for m in metric_results[splits[0]] if m.startswith("jaxmetric ")]
        width = 0.8 / (2 * len(splits))
        labelled = set()
        for i, method in enumerate(jax_methods):
            bars = [(si, lib) for si, split in enumerate(splits) for lib in ("jaxmetric", "PML")
                    if method.replace("jaxmetric ", f"{lib} ") in metric_results[split]]
            for j, (si, lib) in enumerate(bars):  # the bars of one loss, centred on its tick
                per_seed = metric_results[splits[si]][method.replace("jaxmetric ", f"{lib} ")]
                mean, std = summary(per_seed, "mean_average_precision_at_r")
                x = i + (j - (len(bars) - 1) / 2) * width
                label = f"{lib}, {splits[si]}"
                ax.bar(x, mean, width, yerr=std, capsize=2, color=f"C{si}", alpha=1.0 if lib == "jaxmetric" else 0.45,
                       hatch="" if lib == "jaxmetric" else "//", label=None if label in labelled else label)
                labelled.add(label)
                seen_label = f"seen classes (held-out images), {splits[si]}"
                ax.plot(x, summary(per_seed, "seen_map_at_r")[0], "v", color=f"C{si}", markeredgecolor="k", markersize=5,
                        label=None if seen_label in labelled else seen_label)
                labelled.add(seen_label)
        for si, split in enumerate(splits):
            for method, style in (("untrained network", "--"), ("raw pixels", ":")):
                floor, _ = summary(metric_results[split][method], "mean_average_precision_at_r")
                ax.axhline(floor, color=f"C{si}", linestyle=style, linewidth=1.2, label=f"{method}, {split}")
        ax.set_xticks(range(len(jax_methods)), [m.removeprefix("jaxmetric ") for m in jax_methods], fontsize=8)
        ax.set_ylabel("MAP@R")
        ax.set_ylim(0, 1.05)
        ax.set_title("Digits: MAP@R on classes never seen in training (bars, mean ± std over seeds); "
                     "triangles: seen classes", fontsize=10)
        ax.legend(fontsize=7, ncol=3, loc="center", bbox_to_anchor=(0.5, 0.76))
    if multilabel_results:
        ax = axes[-1]
        sets = list(multilabel_results)
        names = list(multilabel_results[sets[0]])
        width = 0.8 / len(sets)
        for di, dataset in enumerate(sets):
            stats = [summary(multilabel_results[dataset][n], "mAP") for n in names]
            ax.bar([i + (di - (len(sets) - 1) / 2) * width for i in range(len(names))], [s[0] for s in stats], width,
                   yerr=[s[1] for s in stats], capsize=2, color=f"C{di + 2}", label=dataset)
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_ylabel("test mAP")
        ax.set_title("Multi-label (mean ± std over seeds)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def machine() -> str:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions = [f"Python {platform.python_version()}", f"jax {jax.__version__}"]
    for module, name in (("torch", "torch"), ("pytorch_metric_learning", "PML")):
        if module in sys.modules:
            versions.append(f"{name} {sys.modules[module].__version__}")
    return f"{cpu}, {os.cpu_count()} CPU cores; " + ", ".join(versions)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one seed, one split and data set, 2 epochs of 3 steps (the test's run)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--splits", type=int, default=len(SPLITS), help="how many of the two class splits to run")
    ap.add_argument("--losses", default="all", help="metric losses: 'all' or comma-separated names")
    ap.add_argument("--seen-test-fraction", type=float, default=0.2, help="images of the training classes held out (seen-class MAP@R)")
    ap.add_argument("--epochs", type=int, default=100, help="metric-learning budget (epochs of --steps-per-epoch batches)")
    ap.add_argument("--steps-per-epoch", type=int, default=None, help="default: training images // batch size")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--m", type=int, default=16, help="images per class in a batch")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the networks")
    ap.add_argument("--loss-lr", type=float, default=1e-1, help="Adam learning rate of proxies / class heads")
    ap.add_argument("--torch-threads", type=int, default=1, help="torch.set_num_threads of the PML runs")
    ap.add_argument("--multilabel-epochs", type=int, default=30)
    ap.add_argument("--multilabel-sets", type=int, default=len(MULTILABEL_SETS), help="how many of (yeast, emotions) to run")
    ap.add_argument("--hidden", type=int, default=256, help="hidden width of the multi-label MLP")
    ap.add_argument("--val-fraction", type=float, default=0.2, help="part of the multi-label training set held out for the thresholds")
    ap.add_argument("--data-home", default=None, help="folder of the multi-label data (default: $JAXMETRIC_DATA or ~/.cache/jaxmetric)")
    ap.add_argument("--out", type=Path, default=Path("out/reality_check"))
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.splits, args.epochs, args.steps_per_epoch = 1, 1, 2, 3
        args.multilabel_epochs, args.multilabel_sets = 1, 1
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        raise SystemExit(f"unknown part(s) {unknown}; choose from {PARTS}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start, load_start = time.perf_counter(), os.getloadavg()[0]  # the load explains the times per epoch
    losses = [s.name for s in METRIC_LOSSES] if args.losses == "all" else [s.strip() for s in args.losses.split(",")]
    unknown = [s for s in losses if s not in LOSSES_BY_NAME]
    if unknown:
        raise SystemExit(f"unknown loss(es) {unknown}; choose from {list(LOSSES_BY_NAME)}")
    pml_losses = []
    if "pml" in args.parts and "digits" in args.parts:  # the comparison needs the jaxmetric runs
        pml_losses = [n for n in PML_LOSSES if n in losses]
        try:
            import pytorch_metric_learning  # noqa: F401
            import torch  # noqa: F401
        except ImportError as e:
            raise SystemExit(f"the PML comparison needs torch and pytorch-metric-learning ({e}): "
                             'pip install -e ".[pml]", or leave it out with --parts digits,multilabel') from e
    lines = []

    def log(text):
        lines.append(text)
        tqdm.write(text)

    report = {"command": " ".join(["python examples/reality_check.py", *(argv if argv is not None else sys.argv[1:])]),
              "date": time.strftime("%Y-%m-%d"), "args": {k: str(v) for k, v in vars(args).items()}}
    metric_results = multilabel_results = None
    if "digits" in args.parts:
        metric_results = run_metric_learning(args, losses, pml_losses, log)
    if "multilabel" in args.parts:
        multilabel_results = run_multilabel(args, MULTILABEL_LOSSES, log)
    report["seconds"] = time.perf_counter() - start
    report["load_average"] = [load_start, os.getloadavg()[0]]
    report["machine"] = machine()  # after the runs: names torch and PML's versions when they ran

    tables = [f"Command: `{report['command']}`; {report['date']}; {report['machine']}; {report['seconds'] / 60:.1f} min; "
              f"load average (1 min) {load_start:.1f} at the start, {report['load_average'][1]:.1f} at the end."]
    if metric_results:
        tables += ["", settings_table(losses)]
        for split in metric_results:
            tables += ["", metric_learning_table(metric_results, split)]
        if pml_losses:
            tables += ["", pml_table(metric_results)]
    if multilabel_results:
        tables += ["", multilabel_table(multilabel_results)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tables.md").write_text("\n".join(tables) + "\n")
    report["metric_learning"], report["multilabel"] = metric_results, multilabel_results
    (args.out / "results.json").write_text(json.dumps(report, indent=1))
    plot = save_plot(metric_results, multilabel_results, args.out / "reality_check.png")
    print("\n".join(tables))
    print(f"wrote {args.out / 'tables.md'}, {args.out / 'results.json'}, {plot}")
    return report


if __name__ == "__main__":
    main()
