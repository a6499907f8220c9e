"""GPU benchmark: forward + backward time of the row-decomposable losses against the
matrix-multiply floor.

One similarity pass costs 2 * B * R * D flops; forward + backward of a loss on the similarity
matrix needs at least three such products (S = Q R^T, dQ = dS R, dR = dS^T Q), and the blocked
path recomputes S in the backward pass (four). The floor is the time of those matrix products
alone at the device's measured matmul rate, so ``time / floor`` says how far the loss is from
being bound by its unavoidable matrix products.

    python benchmarks/gpu_losses.py                      # on an NVIDIA GPU
    python benchmarks/gpu_losses.py --quick              # tiny sizes, any backend (tests)
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxmetric as jm

LOSSES = ["ntxent_loss", "supcon_loss", "circle_loss", "multi_similarity_loss", "contrastive_loss"]


def _timeit(f, *args, repeats=10):
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def matmul_rate(b, d, dtype, repeats):
    """Measured flop/s of the similarity product ``q @ r.T`` at this size."""
    q = jax.random.normal(jax.random.PRNGKey(0), (b, d), dtype)
    f = jax.jit(lambda a: a @ a.T)
    t = _timeit(f, q, repeats=repeats)
    return 2.0 * b * b * d / t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[4096, 16384, 65536])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--block-size", type=int, default=2048)
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--losses", nargs="+", default=LOSSES)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.dim, args.block_size, args.repeats, args.losses = [256], 32, 64, 2, args.losses[:2]
    dev = jax.devices()[0]
    print(f"Device: {dev.device_kind} ({dev.platform}); jax {jax.__version__}; embeddings {args.dtype}, D={args.dim}\n")
    if dev.platform != "gpu":
        print("warning: not a GPU; the numbers below describe this backend only\n")
    dtype = jnp.dtype(args.dtype)
    print("| loss | B | path | median | matmul floor | time / floor |\n|---|---|---|---|---|---|")
    for b in args.batch_sizes:
        rate = matmul_rate(b, args.dim, dtype, args.repeats)
        x = jax.random.normal(jax.random.PRNGKey(1), (b, args.dim), dtype)
        y = jnp.arange(b) // 4
        for name in args.losses:
            fn = getattr(jm, name)
            for path, kw, passes in (("dense", {}, 3), ("blocked", {"block_size": args.block_size}, 4)):
                if path == "dense" and b * b * 4 * 6 > 0.8 * _device_bytes(dev):
                    print(f"| {name} | {b} | {path} | does not fit | | |")
                    continue
                step = jax.jit(jax.value_and_grad(lambda e, l, fn=fn, kw=kw: fn(e, l, **kw)))
                t = _timeit(step, x, y, repeats=args.repeats)
                floor = passes * 2.0 * b * b * args.dim / rate
                print(f"| {name} | {b} | {path} | {t * 1e3:.2f} ms | {floor * 1e3:.2f} ms | {t / floor:.1f} |", flush=True)


def _device_bytes(dev):
    try:
        return dev.memory_stats()["bytes_limit"]
    except Exception:
        return 16 * 2**30


if __name__ == "__main__":
    main()
