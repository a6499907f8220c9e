"""Every similarity-matrix loss against the matmul floor, side by side in one process.

The floor is ``jit(value_and_grad(lambda x: sum_i logsumexp_j x_i . x_j))``: one ``B x B x D``
matrix product forward and two backward, the least any loss over a ``B x B`` similarity matrix
does. Each loss is ``jit(value_and_grad)`` of ``fn(embeddings, labels)`` (two-view losses:
``fn(x, y)``), float32, ``D = 128``, 4 samples per class. For every batch size the floor and the
losses are timed in the same process, interleaved (floor, loss, floor, ...), so each ratio
compares runs under the same machine state; the first call (trace + compile) is reported
separately.

    python benchmarks/floor.py                          # B = 512, 1024, 4096 -> markdown
    python benchmarks/floor.py --batch-sizes 256 --repeats 3 --losses supcon_loss ntxent_loss

A loss whose time, grown quadratically from one batch size to the next, would exceed
``--budget`` seconds per call is not run at the larger ones (reported as skipped, with the
time that stopped it): the O(B^3) listwise losses.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxmetric as jm

# name -> how to call it: "pair" fn(emb, labels), "two_view" fn(x, y), or a callable(emb, labels)
LOSSES = {
    "contrastive_loss": "pair",
    "triplet_margin_loss": "pair",
    "multi_similarity_loss": "pair",
    "circle_loss": "pair",
    "ntxent_loss": "pair",
    "supcon_loss": "pair",
    "angular_loss": "pair",
    "lifted_structure_loss": "pair",
    "generalized_lifted_structure_loss": "pair",
    "npairs_loss": "pair",
    "instance_loss": "pair",
    "intra_pair_variance_loss": "pair",
    "snr_contrastive_loss": "pair",
    "tuplet_margin_loss": "pair",
    "nca_loss": "pair",
    "threshold_consistent_margin_loss": "pair",
    "ranked_list_loss": lambda e, y: jm.ranked_list_loss(e, y, margin=0.4, Tn=2.0),
    "margin_loss": lambda e, y: jm.margin_loss(e, y, jnp.asarray(1.2, e.dtype)),
    "fast_ap_loss": "pair",
    "smooth_ap_loss": "pair",
    "pnp_loss": "pair",
    "histogram_loss": "pair",
    "multi_supcon_loss": "pair",
    "dcl_loss": "two_view",
    "dclw_loss": "two_view",
    "clip_loss": lambda x, y: jm.clip_loss(x, y, jnp.asarray(math.log(1 / 0.07), x.dtype)),
    "siglip_loss": lambda x, y: jm.siglip_loss(x, y, jnp.asarray(math.log(10.0), x.dtype), jnp.asarray(-10.0, x.dtype)),
}


def floor(x):
    return jnp.sum(jax.nn.logsumexp(x @ x.T, axis=1))


def _step(name):
    how = LOSSES[name]
    if how == "pair" or how == "two_view":
        fn = getattr(jm, name)
    else:
        fn = how
    return jax.jit(jax.value_and_grad(lambda e, y: fn(e, y)))


def _inputs(name, b, dim, seed=0):
    rng = np.random.default_rng(seed)
    emb = jnp.asarray(rng.normal(size=(b, dim)).astype(np.float32))
    if LOSSES[name] == "two_view" or name in ("clip_loss", "siglip_loss"):
        return emb, emb + 0.1 * jnp.asarray(rng.normal(size=(b, dim)).astype(np.float32))
    labels = np.repeat(np.arange(b // 4), 4)
    rng.shuffle(labels)
    return emb, jnp.asarray(labels)


def _time(f, args):
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    return time.perf_counter() - t0


def measure(names, b, dim, repeats):
    """``(name, median, floor median, first call)`` of each loss at one batch size."""
    floor_step = jax.jit(jax.value_and_grad(floor))
    x = _inputs("supcon_loss", b, dim)[0]
    _time(floor_step, (x,))
    for name in names:
        step, args = _step(name), _inputs(name, b, dim)
        first = _time(step, args)
        times, floors = [], []
        for _ in range(repeats):
            floors.append(_time(floor_step, (x,)))
            times.append(_time(step, args))
        yield name, statistics.median(times), statistics.median(floors), first


def _cpu():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[512, 1024, 4096])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--budget", type=float, default=10.0, help="projected seconds per call above which larger batches are skipped")
    p.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    args = p.parse_args(argv)
    print(f"Machine: {_cpu()}, {os.cpu_count()} cores, device {jax.devices()[0].device_kind}; "
          f"Python {platform.python_version()}, jax {jax.__version__}, numpy {np.__version__}")
    print(f"`python {' '.join(['benchmarks/floor.py'] + sys.argv[1:])}`; D={args.dim}, float32, "
          f"jit(value_and_grad), median of {args.repeats}\n")
    print("| loss | B | median | floor | time / floor | first call |\n|---|---|---|---|---|---|")
    stopped = {}
    sizes = sorted(args.batch_sizes)
    for i, b in enumerate(sizes):
        names = [n for n in args.losses if n not in stopped]
        for name, t, f, first in measure(names, b, args.dim, args.repeats):
            print(f"| {name} | {b} | {t * 1e3:.1f} ms | {f * 1e3:.1f} ms | {t / f:.1f}x | {first:.1f} s |", flush=True)
            if i + 1 < len(sizes) and t * (sizes[i + 1] / b) ** 2 > args.budget:
                stopped[name] = (b, t)
        for name, (b0, t0) in stopped.items():
            if b0 < b:
                print(f"| {name} | {b} | skipped ({t0:.1f} s at B={b0}) | | | |", flush=True)


if __name__ == "__main__":
    main()
