"""Memory bound at B=2048, D=128: a jitted train step (value_and_grad) with batch_hard_miner +
triplet_margin_loss, and with the semihard triplet_margin_miner + triplet_margin_loss, runs in
a fresh process with a peak RSS under 2 GB (a dense B^3 float32 cube alone would be 32 GB).
Memory, not time, is asserted."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

LIMIT_MB = 2048

SCRIPT = textwrap.dedent(
    """
    import json, os, resource
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, jax.numpy as jnp
    import jaxmetric as jm

    B, D_IN, D = 2048, 64, 128
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(k1, (B, D_IN))
    labels = jax.random.randint(k2, (B,), 0, 128)
    w0 = jax.random.normal(k3, (D_IN, D)) * 0.1

    def make_step(mine):
        def loss_fn(w):
            emb = x @ w
            return jm.triplet_margin_loss(emb, mine(emb, labels))

        @jax.jit
        def step(w):
            value, grad = jax.value_and_grad(loss_fn)(w)
            return value, w - 0.1 * grad
        return step

    def rss_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def hwm_mb():  # the kernel's peak RSS of this process's own address space
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    out = {"baseline_mb": rss_mb()}
    for name, mine in [
        ("batch_hard", jm.batch_hard_miner),
        ("semihard", lambda e, l: jm.triplet_margin_miner(e, l, type_of_triplets="semihard")),
    ]:
        value, w1 = make_step(mine)(w0)
        out[name] = {"loss": float(value), "finite_grad": bool(jnp.all(jnp.isfinite(w1))), "peak_mb": rss_mb(), "vmhwm_mb": hwm_mb()}
    print("RESULT " + json.dumps(out))
    """
)


# Linux keeps the high-water RSS of the address space a process replaces at exec in its
# ru_maxrss, so a child exec'd straight from this (large) pytest process would report pytest's
# peak. A small launcher process forks the measured one, so its ru_maxrss starts near zero.
LAUNCHER = (
    "import subprocess, sys; "
    "p = subprocess.run([sys.executable, '-c', sys.argv[1]], capture_output=True, text=True); "
    "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr); sys.exit(p.returncode)"
)


def test_b2048_train_steps_peak_rss_under_2gb():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device, default float32
    env.pop("JAX_ENABLE_X64", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONWARNINGS"] = "error::DeprecationWarning"  # as pytest's filterwarnings
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT "):])
    print(res)
    for name in ("batch_hard", "semihard"):
        assert res[name]["finite_grad"], res
        assert res[name]["loss"] > 0, res
        assert res[name]["peak_mb"] < LIMIT_MB, res
        assert res[name]["vmhwm_mb"] < LIMIT_MB, res
