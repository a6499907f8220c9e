"""Peak memory and time against batch size: dense vs blocked jaxmetric losses vs PML (CPU).

Each point runs in its own subprocess (peak RSS = ru_maxrss of that process) with an
address-space cap, so the largest batch each path reaches is measured, not guessed.

    python benchmarks/large_batch.py --loss supcon_loss --batch-sizes 1024 4096 16384 65536
    python benchmarks/large_batch.py --single 65536 --block-size 512   # one blocked point
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

PML_NAMES = {"supcon_loss": "SupConLoss", "ntxent_loss": "NTXentLoss", "circle_loss": "CircleLoss",
             "multi_similarity_loss": "MultiSimilarityLoss", "contrastive_loss": "ContrastiveLoss"}


def _worker(mode, loss, batch, dim, per_class, block_size):
    import numpy as np

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(batch, dim)).astype(np.float32)
    labels = np.repeat(np.arange(batch // per_class), per_class)
    t0 = time.perf_counter()
    if mode == "pml":
        import torch
        from pytorch_metric_learning import losses

        x = torch.tensor(emb, requires_grad=True)
        v = getattr(losses, PML_NAMES[loss])()(x, torch.tensor(labels))
        v.backward()
        value = float(v)
    else:
        import jax
        import jax.numpy as jnp

        import jaxmetric

        fn = getattr(jaxmetric, loss)
        kw = {"block_size": block_size} if mode == "blocked" else {}
        step = jax.jit(jax.value_and_grad(lambda e, y: fn(e, y, **kw)))
        v, g = jax.block_until_ready(step(jnp.asarray(emb), jnp.asarray(labels)))
        value = float(v)
    seconds = time.perf_counter() - t0
    print("RESULT " + json.dumps({"value": value, "seconds": seconds,
                                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(mode, loss, batch, dim, per_class, block_size, cap_gb, timeout):
    cmd = [sys.executable, __file__, "--worker", mode, loss, str(batch), str(dim), str(per_class), str(block_size)]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")

    def limit():
        cap = int(cap_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=limit, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"> {timeout} s"}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": f"failed (cap {cap_gb:g} GB): " + ((p.stderr.strip().splitlines() or ["?"])[-1][:60])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=6)
    ap.add_argument("--loss", default="supcon_loss", choices=sorted(PML_NAMES))
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    ap.add_argument("--single", type=int, help="measure only the blocked path at this batch size")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--per-class", type=int, default=4)
    ap.add_argument("--block-size", type=int, default=512)
    ap.add_argument("--modes", nargs="+", default=["dense", "blocked", "pml"])
    ap.add_argument("--cap-gb", type=float, default=20.0)
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--plot", help="save a PNG of peak memory and time against B")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.worker:
        mode, loss, b, d, m, blk = args.worker
        _worker(mode, loss, int(b), int(d), int(m), int(blk))
        return None
    if args.single:
        r = measure("blocked", args.loss, args.single, args.dim, args.per_class, args.block_size, args.cap_gb, args.timeout)
        print(json.dumps(r))
        return r
    rows = []
    print(f"{args.loss}, D={args.dim}, {args.per_class} per class, block_size={args.block_size}, float32, forward+backward (first call, compile included)\n")
    print("| B | mode | peak RSS | time | value |\n|---|---|---|---|---|")
    failed = set()
    for b in args.batch_sizes:
        for mode in args.modes:
            if mode in failed:
                r = {"error": "skipped (failed at a smaller B)"}
            else:
                r = measure(mode, args.loss, b, args.dim, args.per_class, args.block_size, args.cap_gb, args.timeout)
                if "error" in r:
                    failed.add(mode)
            rows.append({"B": b, "mode": mode, **r})
            if "error" in r:
                print(f"| {b} | {mode} | {r['error']} | | |", flush=True)
            else:
                print(f"| {b} | {mode} | {r['peak_rss_mb']:.0f} MB | {r['seconds']:.1f} s | {r['value']:.5f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for mode in args.modes:
            pts = [(r["B"], r["peak_rss_mb"], r["seconds"]) for r in rows if r["mode"] == mode and "peak_rss_mb" in r]
            if pts:
                bs, mem, sec = zip(*pts)
                axes[0].plot(bs, mem, "o-", label=mode)
                axes[1].plot(bs, sec, "o-", label=mode)
        for ax, title in zip(axes, ["peak resident memory (MB)", "time, first call (s)"]):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("batch size B")
            ax.set_title(title)
            ax.legend()
        fig.suptitle(f"{args.loss}: dense vs blocked (block {args.block_size}) vs PML, CPU")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        print(f"\nplot: {args.plot}")
    return rows


if __name__ == "__main__":
    main()
