"""Every Python block in the README runs; the benchmark script runs (quick mode)."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_benchmark_script_quick(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_losses.py"), "--quick", "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=ENV,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "geometric-mean speed-up" in out.stdout
    assert (tmp_path / "r.json").exists()


def test_gpu_and_large_batch_benchmark_scripts_run_quick():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_losses.py"), "--quick"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT, env=ENV)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "time / floor" in out.stdout
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "large_batch.py"), "--batch-sizes", "64",
                          "--modes", "dense", "blocked", "--block-size", "16"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT, env=ENV)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("| 64 |") == 2 and "failed" not in out.stdout
