"""Forward + backward time and peak memory of jaxmetric losses against PML, same run, CPU.

Each (library, loss, batch size) is measured in its own subprocess so that its peak resident
memory (ru_maxrss) is its own. jaxmetric: ``jit(value_and_grad)``, first call (trace +
compile) timed separately, then the median of repeated calls. PML: ``loss(emb, labels)`` +
``backward()``, median of repeated calls. A PML run that exceeds the memory cap or the time
budget is reported as such.

    python benchmarks/bench_losses.py                 # full table -> stdout (markdown)
    python benchmarks/bench_losses.py --quick         # tiny sizes, for the test suite
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time

LOSSES = {
    # name: (PML class, constructor kwargs, jaxmetric kwargs)
    "contrastive_loss": ("ContrastiveLoss", {}, {}),
    "triplet_margin_loss": ("TripletMarginLoss", {}, {}),
    "multi_similarity_loss": ("MultiSimilarityLoss", {}, {}),
    "circle_loss": ("CircleLoss", {}, {}),
    "ntxent_loss": ("NTXentLoss", {}, {}),
    "supcon_loss": ("SupConLoss", {}, {}),
}


def _data(batch, dim, per_class, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(batch, dim)).astype(np.float32)
    labels = np.repeat(np.arange(batch // per_class), per_class)
    rng.shuffle(labels)
    return emb, labels


def _worker(lib, loss, batch, dim, per_class, repeats):
    emb, labels = _data(batch, dim, per_class)
    out = {}
    if lib == "jaxmetric":
        import jax
        import jax.numpy as jnp

        import jaxmetric

        fn = getattr(jaxmetric, loss)
        kw = LOSSES[loss][2]
        step = jax.jit(jax.value_and_grad(lambda e, y: fn(e, y, **kw)))
        e, y = jnp.asarray(emb), jnp.asarray(labels)
        t0 = time.perf_counter()
        jax.block_until_ready(step(e, y))
        out["first_call_s"] = time.perf_counter() - t0
        run = lambda: jax.block_until_ready(step(e, y))  # noqa: E731
    else:
        import torch
        from pytorch_metric_learning import losses

        torch.set_num_threads(os.cpu_count())
        cls, kw, _ = LOSSES[loss]
        loss_obj = getattr(losses, cls)(**kw)
        te, ty = torch.tensor(emb), torch.tensor(labels)

        def run():
            x = te.clone().requires_grad_(True)
            v = loss_obj(x, ty)
            v.backward()
            return v

        t0 = time.perf_counter()
        run()
        out["first_call_s"] = time.perf_counter() - t0
    times = []
    budget = time.perf_counter() + 60
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() > budget and len(times) >= 2:
            break
    times.sort()
    out["median_s"] = times[len(times) // 2]
    out["runs"] = len(times)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def measure(lib, loss, batch, dim, per_class, repeats, mem_cap_gb, timeout_s):
    cmd = [sys.executable, __file__, "--worker", lib, loss, str(batch), str(dim), str(per_class), str(repeats)]

    def limit():
        cap = int(mem_cap_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, preexec_fn=limit if lib == "pml" else None, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"> {timeout_s} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
    if "MemoryError" in proc.stderr or "DefaultCPUAllocator" in proc.stderr or "not enough memory" in proc.stderr:
        return {"error": f"out of memory (cap {mem_cap_gb:g} GB)"}
    return {"error": tail[0][:80]}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import jax
    import numpy

    try:
        import torch

        torch_v = torch.__version__
    except ImportError:
        torch_v = "not installed"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM; Python {platform.python_version()}, "
        f"jax {jax.__version__}, torch {torch_v}, numpy {numpy.__version__}"
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", nargs=6, metavar=("LIB", "LOSS", "B", "D", "M", "REPEATS"))
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--per-class", type=int, default=4, help="samples per class in the batch")
    p.add_argument("--losses", nargs="+", default=list(LOSSES))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--mem-cap-gb", type=float, default=16.0, help="address-space cap for each PML run")
    p.add_argument("--timeout", type=int, default=300)
    p.add_argument("--quick", action="store_true", help="tiny sizes (used by the test suite)")
    p.add_argument("--json", help="also write raw results to this file")
    args = p.parse_args(argv)
    if args.worker:
        lib, loss, b, d, m, r = args.worker
        _worker(lib, loss, int(b), int(d), int(m), int(r))
        return None
    if args.quick:
        args.batch_sizes, args.dim, args.repeats, args.losses = [32], 16, 3, args.losses[:2]

    print(f"Machine: {machine()}\n")
    print(f"D={args.dim}, {args.per_class} samples per class, float32, forward + backward; median of up to {args.repeats} runs.\n")
    print("| loss | B | jaxmetric median | PML median | speed-up | jaxmetric first call | jaxmetric peak RSS | PML peak RSS |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for b in args.batch_sizes:
        for loss in args.losses:
            j = measure("jaxmetric", loss, b, args.dim, args.per_class, args.repeats, args.mem_cap_gb, args.timeout)
            t = measure("pml", loss, b, args.dim, args.per_class, args.repeats, args.mem_cap_gb, args.timeout)
            speedup = t["median_s"] / j["median_s"] if "median_s" in t and "median_s" in j else None
            rows.append({"loss": loss, "B": b, "jaxmetric": j, "pml": t, "speedup": speedup})
            fmt = lambda r, k, unit, scale=1: (f"{r[k] * scale:.1f} {unit}" if k in r else r.get("error", "-"))  # noqa: E731
            print(
                f"| {loss} | {b} | {fmt(j, 'median_s', 'ms', 1e3)} | {fmt(t, 'median_s', 'ms', 1e3)} | "
                f"{f'{speedup:.1f}x' if speedup else '-'} | {fmt(j, 'first_call_s', 's')} | "
                f"{fmt(j, 'peak_rss_mb', 'MB')} | {fmt(t, 'peak_rss_mb', 'MB')} |",
                flush=True,
            )
    print()
    for b in args.batch_sizes:
        ratios = [r["speedup"] for r in rows if r["B"] == b and r["speedup"]]
        missing = [r["loss"] for r in rows if r["B"] == b and not r["speedup"]]
        if ratios:
            gm = math.exp(sum(map(math.log, ratios)) / len(ratios))
            extra = f" (PML did not finish: {', '.join(missing)})" if missing else ""
            print(f"B={b}: geometric-mean speed-up over {len(ratios)} losses: {gm:.1f}x{extra}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
