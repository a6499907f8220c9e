"""The PyTorch side of ``examples/reality_check.py``: the same MLP, initial weights, batches and
optimizer, trained with pytorch-metric-learning's (PML) losses and miners.

Imported only when the PML comparison runs (it needs ``torch`` and
``pytorch-metric-learning``: ``pip install -e ".[pml]"``).
"""
from __future__ import annotations

import time

import numpy as np
import torch
from pytorch_metric_learning import losses, miners

# The losses run in both libraries, with the same hyperparameters as the jaxmetric side
# (PML's defaults, which are also jaxmetric's).
PML_LOSSES = ("contrastive", "multi-similarity + miner", "circle", "ProxyAnchor")


def torch_mlp_from_flax(params: dict) -> torch.nn.Sequential:
    """``Linear-ReLU-Linear-ReLU-Linear`` holding a copy of the Flax MLP's weights.

    Flax's ``Dense`` computes ``x @ kernel`` with ``kernel`` ``(in, out)``; torch's ``Linear``
    computes ``x @ weight.T`` with ``weight`` ``(out, in)``: the kernels are transposed.
    """
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


def make_loss(name: str, proxies: np.ndarray | None):
    """``(loss module, miner or None)``; ``proxies`` ``(num_classes, dim)`` for ProxyAnchor
    (PML stores them in that layout too, as ``loss.proxies``)."""
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
            loss.proxies.copy_(torch.from_numpy(np.asarray(proxies, np.float32)))
        return loss, None
    raise ValueError(f"no PML counterpart for {name!r}; choose from {PML_LOSSES}")


def train(name: str, params: dict, proxies, x_batches: np.ndarray, y_batches: np.ndarray, *, lr: float, loss_lr: float, threads: int = 1):
    """Trains a copy of the Flax MLP ``params`` on ``x_batches [E, S, B, 64]`` /
    ``y_batches [E, S, B]`` (E epochs of S steps) with Adam, on ``threads`` torch threads.

    Returns ``(model, first_batch_loss, epoch_seconds)``.
    """
    # One thread by default: on a shared 2-core machine torch's default of one OpenMP thread per
    # core made these tiny steps 25-40x slower (threads waiting on each other under load).
    torch.set_num_threads(threads)
    model = torch_mlp_from_flax(params)
    loss_fn, miner = make_loss(name, proxies)
    groups = [{"params": model.parameters(), "lr": lr}]
    loss_params = list(loss_fn.parameters())
    if loss_params:  # ProxyAnchor's proxies: their own learning rate, as on the jaxmetric side
        groups.append({"params": loss_params, "lr": loss_lr})
    optimizer = torch.optim.Adam(groups)
    first_loss = None
    epoch_seconds = []
    for xs, ys in zip(x_batches, y_batches):
        start = time.perf_counter()
        for x, y in zip(xs, ys):
            x, y = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
            emb = model(x)
            indices = miner(emb, y) if miner is not None else None
            loss = loss_fn(emb, y, indices)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if first_loss is None:
                first_loss = float(loss.detach())
        epoch_seconds.append(time.perf_counter() - start)
    return model, first_loss, epoch_seconds


def embed(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(np.asarray(x, np.float32))).numpy()
