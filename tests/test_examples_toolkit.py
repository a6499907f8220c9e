"""Every toolkit example runs in its shortened mode and prints/returns retrieval metrics."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

pytest.importorskip("sklearn")
pytest.importorskip("tqdm")
pytest.importorskip("matplotlib")


def _import(name):
    sys.path.insert(0, str(EXAMPLES))
    try:
        module = __import__(name)
    finally:
        sys.path.remove(str(EXAMPLES))
    return module


def test_nnx_example(tmp_path, capsys):
    out = _import("train_nnx").main(["--quick", "--out", str(tmp_path / "nnx.png")])
    assert Path(out["plot"]).stat().st_size > 10_000
    assert out["after"]["mean_average_precision_at_r"] > out["before"]["mean_average_precision_at_r"] + 0.2
    assert "MAP@R" in capsys.readouterr().out


def test_simclr_example(tmp_path):
    out = _import("simclr_digits").main(["--quick", "--out", str(tmp_path / "ssl.png")])
    assert Path(out["plot"]).exists() and np.isfinite(out["final_loss"])
    assert out["after"]["mean_average_precision_at_r"] > out["before"]["mean_average_precision_at_r"]


def test_joint_classification_example(tmp_path):
    out = _import("joint_classification").main(["--quick", "--out", str(tmp_path / "joint.png")])
    assert Path(out["plot"]).exists()
    assert out["accuracy"] > 0.5 and out["retrieval"]["precision_at_1"] > 0.8


def test_data_parallel_example_sets_its_own_devices():
    """Run as a script (fresh process) so the example's own XLA_FLAGS line is what gives 8 devices."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONWARNINGS"] = "error::DeprecationWarning"  # as pytest's filterwarnings
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "data_parallel.py"), "--quick"], env=env, cwd=str(ROOT),
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "8 devices" in out
    for mode in ("shard_map", "pmap"):
        line = next(l for l in out.splitlines() if l.startswith(f"{mode}: |loss"))
        grad_diff = float(line.rsplit("=", 1)[1])
        assert grad_diff < 1e-5, line  # the pmean-ed gradient equals the single-device one
        assert f"{mode} after 20 steps: P@1" in out
