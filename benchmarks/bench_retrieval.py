"""Retrieval evaluation at scale, side by side: exact kNN (faiss-cpu ``IndexFlatL2`` against
``jaxmetric.evaluation.knn``) and the metrics (PML's ``AccuracyCalculator`` with its default
faiss kNN against ``jaxmetric.evaluation.get_accuracy``), same data, one run.

Clustered data: ``N / per_class`` centres in D dimensions, each point a centre (scaled by 0.5)
plus unit Gaussian noise, labels drawn uniformly (so class sizes vary around ``per_class``).
The query set is the reference set (each query's own row excluded), ``k="max_bin_count"``,
precision@1, R-precision and MAP@R. Each measurement runs in its own subprocess, so its
peak resident memory (``ru_maxrss``, the whole process) is its own; the kNN runs also write
their neighbours, which this script compares.

    python benchmarks/bench_retrieval.py                      # N = 100,000 side by side (markdown)
    python benchmarks/bench_retrieval.py --million            # N = 1,000,000, jaxmetric only
    python benchmarks/bench_retrieval.py --n 20000 --per-class 10
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
RUNS = ("faiss-knn", "jaxmetric-knn", "pml", "jaxmetric")


def make_data(n: int, dim: int, per_class: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    classes = max(1, n // per_class)
    centres = rng.standard_normal((classes, dim), dtype=np.float32)
    labels = rng.integers(0, classes, n)
    x = rng.standard_normal((n, dim), dtype=np.float32)  # float32 throughout: no float64 temporary
    x += 0.5 * centres[labels]
    return x, labels


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _worker(run: str, n: int, dim: int, per_class: int, out_path: str) -> None:
    import numpy as np

    # The library first, then the data: the baseline is the process with both, before the run.
    __import__({"faiss-knn": "faiss", "pml": "pytorch_metric_learning.utils.accuracy_calculator"}.get(run, "jaxmetric"))
    x, y = make_data(n, dim, per_class)
    k = int(np.bincount(y).max()) - 1  # max_bin_count minus the query itself
    result: dict = {"k": k, "rss_before_mb": _current_rss_mb()}
    if run == "faiss-knn":
        import faiss

        t0 = time.perf_counter()
        index = faiss.IndexFlatL2(dim)
        index.add(x)
        dist, idx = index.search(x, k + 1)
        result["seconds"] = time.perf_counter() - t0
        # PML's self removal: drop each query's own index, or the last column when absent.
        is_self = idx == np.arange(n)[:, None]
        is_self[~is_self.any(1), -1] = True
        np.save(out_path, idx[~is_self].reshape(n, k))
        np.save(out_path + ".dist.npy", dist[~is_self].reshape(n, k))
    elif run == "jaxmetric-knn":
        import jax.numpy as jnp

        from jaxmetric import evaluation

        emb = jnp.asarray(x)
        t0 = time.perf_counter()
        idx, dist = evaluation.knn(emb, emb, k=k, exclude_self=True)
        idx = np.asarray(idx)
        result["seconds"] = time.perf_counter() - t0  # compile included, as a user's first call
        np.save(out_path, idx)
        np.save(out_path + ".dist.npy", np.asarray(dist))
    elif run == "pml":
        import torch
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calc = AccuracyCalculator(include=METRICS, k="max_bin_count", device=torch.device("cpu"))
        t0 = time.perf_counter()
        values = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(y))
        result["seconds"] = time.perf_counter() - t0
        result["values"] = {m: float(values[m]) for m in METRICS}
    else:
        from jaxmetric import evaluation

        def progress(done, total, state={"shown": 0}):  # a line every 5% on stderr
            if done * 20 // total > state["shown"]:
                state["shown"] = done * 20 // total
                print(f"  {done:,}/{total:,} queries, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

        t0 = time.perf_counter()
        values = evaluation.get_accuracy(x, y, include=METRICS, k="max_bin_count", progress=progress)
        result["seconds"] = time.perf_counter() - t0  # compile included
        result["values"] = values
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def measure(run: str, n: int, dim: int, per_class: int, out_path: str, timeout_s: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", run, str(n), str(dim), str(per_class), out_path]
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None if run == "jaxmetric" else subprocess.PIPE, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"> {timeout_s:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
    return {"error": tail[0][:100]}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import jax
    import numpy

    versions = [f"Python {platform.python_version()}", f"jax {jax.__version__}", f"numpy {numpy.__version__}"]
    for mod in ("torch", "pytorch_metric_learning", "faiss"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            versions.append(f"{mod} not installed")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM; " + ", ".join(versions)


def neighbour_agreement(path_a: str, path_b: str) -> str:
    """Identical neighbour lists, and where they differ how far apart the two distances are
    (float32 rounding of two different computations reorders near-ties)."""
    import numpy as np

    a, b = np.load(path_a), np.load(path_b)
    da, db = np.load(path_a + ".dist.npy"), np.load(path_b + ".dist.npy")
    same = (a == b).mean()
    rows = (a != b).any(1).mean()
    gap = np.abs(da - db)[a != b].max() if (a != b).any() else 0.0
    scale = np.abs(da).max()
    return f"{100 * same:.4f}% of neighbours identical ({100 * rows:.3f}% of rows differ; largest distance gap there {gap:.2g}, distances up to {scale:.3g})"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="points (query = reference)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--per-class", type=int, default=100, help="mean class size (k = max_bin_count - 1 follows)")
    parser.add_argument("--million", action="store_true", help="N = 1,000,000, jaxmetric's get_accuracy only")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=None)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run, n, dim, per_class, out = args.worker
        _worker(run, int(n), int(dim), int(per_class), out)
        return
    n = 1_000_000 if args.million else args.n
    runs = args.runs or (["jaxmetric"] if args.million else list(RUNS))
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load_before = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            print(f"running {run} (N={n:,})...", file=sys.stderr, flush=True)
            results[run] = measure(run, n, args.dim, args.per_class, os.path.join(tmp, f"{run}.npy"), args.timeout)
        agreement = None
        if "faiss" in str(runs) and all(r in results and "error" not in results[r] for r in ("faiss-knn", "jaxmetric-knn")):
            agreement = neighbour_agreement(os.path.join(tmp, "faiss-knn.npy"), os.path.join(tmp, "jaxmetric-knn.npy"))
    load_after = os.getloadavg()

    cmd = "python benchmarks/bench_retrieval.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"`{cmd.strip()}` — {started}\n")
    print(f"Machine: {machine()}")
    print(f"Load average (1 min) at start {load_before[0]:.1f}, at end {load_after[0]:.1f} (cores: {os.cpu_count()})\n")
    k = next((r["k"] for r in results.values() if "k" in r), None)
    emb_mb = n * args.dim * 4 / 2**20
    print(f"N = {n:,} (query = reference), D = {args.dim}, mean class size {args.per_class}, k = max_bin_count - 1 = {k}; "
          f"embeddings {emb_mb:.0f} MB (float32)\n")
    print("| run | time | peak RSS | RSS before the run (libraries + data) | values (P@1, R-precision, MAP@R) |")
    print("|---|---|---|---|---|")
    names = {"faiss-knn": "faiss-cpu IndexFlatL2 search (k+1, self removed)", "jaxmetric-knn": "jaxmetric evaluation.knn (first call, compile included)",
             "pml": "PML 2.9 AccuracyCalculator (default faiss kNN)", "jaxmetric": "jaxmetric evaluation.get_accuracy (first call)"}
    for run, r in results.items():
        if "error" in r:
            print(f"| {names[run]} | {r['error']} | - | - | - |")
            continue
        values = ", ".join(f"{r['values'][m]:.6f}" for m in METRICS) if "values" in r else "-"
        print(f"| {names[run]} | {r['seconds']:.1f} s | {r['peak_rss_mb'] / 1024:.2f} GB | {r['rss_before_mb'] / 1024:.2f} GB | {values} |")
    print()
    for a, b in (("faiss-knn", "jaxmetric-knn"), ("pml", "jaxmetric")):
        if a in results and b in results and "seconds" in results[a] and "seconds" in results[b]:
            print(f"- {b} vs {a}: {results[a]['seconds'] / results[b]['seconds']:.2f}x the speed")
    if agreement:
        print(f"- neighbours: {agreement}")
    if "pml" in results and "jaxmetric" in results and "values" in results["pml"] and "values" in results["jaxmetric"]:
        diff = max(abs(results["pml"]["values"][m] - results["jaxmetric"]["values"][m]) for m in METRICS)
        print(f"- largest metric difference PML vs jaxmetric: {diff:.2g}")


if __name__ == "__main__":
    main()
