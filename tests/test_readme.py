"""Every Python block and every command in the README runs; the benchmark scripts run
(quick mode)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.test_packaging import _source_tree

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "error::DeprecationWarning"}  # as pytest's filterwarnings

# What an enclosing `make` hands its recipes (`make test PYTHON=python3.12` exports PYTHON and
# passes it again in MAKEFLAGS) and what this virtualenv sets: a `make` the suite starts must
# see a user's shell, not the suite's, or it picks the enclosing run's interpreter and venv.
_NOT_A_USERS_SHELL = ("MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES", "MAKELEVEL", "MAKE_TERMOUT", "MAKE_TERMERR",
                      "PYTHON", "VENV", "PYTHONPATH", "XLA_FLAGS", "VIRTUAL_ENV")


def make_env():
    """The environment of a user's shell for a `make` the suite runs."""
    env = {k: v for k, v in os.environ.items() if k not in _NOT_A_USERS_SHELL}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not (Path(p) / "activate").exists())
    return env


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


# The README's shell commands and where the suite runs each: `make demo` and `make test` here
# (the suite cannot run itself: its recipe is checked, and .ci/run runs it), `pip install .`
# in tests/test_packaging.py.
README_COMMANDS = {"pip install .", "make demo", "make test", "make test PYTHON=python3.12"}


def _readme_commands():
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return {line.split("#")[0].strip() for block in blocks for line in block.splitlines() if line.split("#")[0].strip()}


def test_every_readme_command_is_run_by_the_suite():
    assert _readme_commands() == README_COMMANDS


def test_make_demo_from_a_fresh_copy(tmp_path):
    """`make demo` in a copy of the checkout with no virtualenv: it makes `.venv`, installs,
    and prints Precision@1 before and after training."""
    src = _source_tree(tmp_path / "clone")
    env = make_env()
    out = subprocess.run(["make", "demo"], cwd=src, capture_output=True, text=True, timeout=1200, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (src / ".venv" / ".made-by-jaxmetric-make").exists()
    assert re.search(r"before training: Precision@1 0\.\d+", out.stdout) and re.search(r"after training: +Precision@1 0\.\d+", out.stdout)
    again = subprocess.run(["make", "demo"], cwd=src, capture_output=True, text=True, timeout=1200, env=env)
    assert again.returncode == 0 and "pip install" not in again.stdout  # the install is done once


def test_make_test_recipe_per_interpreter(tmp_path):
    for args, venv in ((["test"], ".venv"), (["test", "PYTHON=python3.12"], ".venv-python3.12")):
        out = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, env=make_env())
        assert out.returncode == 0, out.stderr
        assert f'tools/venv.sh ensure "{args[-1].split("=")[-1] if "=" in args[-1] else "python3"}" "{venv}"' in out.stdout
        assert f"{venv}/bin/python -m pytest" in out.stdout and "--cov-fail-under=90" in out.stdout
        assert "COVERAGE_CORE=" in out.stdout  # sys.monitoring where the interpreter has it


def test_make_env_is_a_users_shell_inside_make_test_python312(monkeypatch):
    # As under `make test PYTHON=python3.12`: the enclosing make's variables do not reach a
    # make the suite starts.
    monkeypatch.setenv("PYTHON", "python3.12")
    monkeypatch.setenv("MAKEFLAGS", " -- PYTHON=python3.12")
    monkeypatch.setenv("MAKELEVEL", "1")
    out = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=60, env=make_env())
    assert out.returncode == 0, out.stderr
    assert 'tools/venv.sh ensure "python3" ".venv"' in out.stdout and "Entering directory" not in out.stdout


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
