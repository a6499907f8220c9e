"""Two processes on localhost with jax.distributed (CPU collectives) equal one process."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_losses_equal_single_process():
    port = str(_free_port())
    worker = ROOT / "tests" / "helpers" / "multihost_worker.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "error::DeprecationWarning"}  # as pytest's filterwarnings
    env.pop("XLA_FLAGS", None)
    procs = [
        subprocess.Popen([sys.executable, str(worker), port, str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for i in range(2)
    ]
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads([line for line in out.splitlines() if line.startswith("RESULT ")][0][7:]))
    for out in outs:
        assert out["devices"] == 4
        for name, r in out["results"].items():
            assert abs(r["value"] - r["value_ref"]) <= 1e-10 * max(1.0, abs(r["value_ref"])), name
            assert r["grad_err"] <= 1e-10 * max(1.0, r["grad_scale"]), name
