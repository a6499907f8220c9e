"""The package as users get it: the sdist and wheel build without setuptools warnings, the
wheel installs into a new virtualenv with only the runtime dependencies and runs a loss, the
sdist carries the tests and docs, ``import jaxmetric`` pulls in no example or test library,
and type checkers see real types."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import jaxmetric

ROOT = Path(__file__).resolve().parents[1]


def _source_tree(dest: Path) -> Path:
    """The files git tracks (a clean checkout's content), else the tree minus build outputs."""
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".venv*", ".git", "build", "dist", "*.egg-info", "_build", "__pycache__"))
        return dest
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    return dest


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    src = _source_tree(tmp_path_factory.mktemp("src") / "jaxmetric")
    dist = tmp_path_factory.mktemp("dist")
    out = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out, sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))


def test_build_has_no_setuptools_warning(built):
    out, wheels, sdists = built
    assert len(wheels) == 1 and len(sdists) == 1
    log = out.stdout + out.stderr
    assert "Warning" not in log and "deprecat" not in log.lower(), log[-3000:]


def test_wheel_metadata_and_typed_marker(built):
    _, (wheel,), _ = built
    assert wheel.name.startswith(f"jaxmetric-{jaxmetric.__version__}-py3-none-any")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "jaxmetric/py.typed" in names
    assert "License-Expression: Apache-2.0" in meta and f"Version: {jaxmetric.__version__}" in meta
    assert not [n for n in names if n.startswith(("tests/", "docs/", "examples/"))]
    required = sorted(line.split()[1].split(">")[0].split("<")[0].split("=")[0] for line in meta.splitlines()
                      if line.startswith("Requires-Dist:") and "extra ==" not in line)
    assert required == ["chex", "flax", "jax", "jaxlib", "numpy", "optax"]


def test_sdist_carries_tests_docs_and_license(built):
    _, _, (sdist,) = built
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for needed in ("LICENSE", "README.md", "Makefile", "jaxmetric/py.typed", "tests/conftest.py", "tests/test_battery.py",
                   "docs/index.md", "docs/design.md", "docs/conf.py", "examples/train_digits.py", "tools/venv.sh"):
        assert needed in names, needed
    assert not [n for n in names if "__pycache__" in n or n.startswith(("docs/_build", ".venv"))]


def test_readme_install_and_the_wheel_in_a_new_virtualenv_with_runtime_dependencies_only(built, tmp_path):
    """The README's ``pip install .`` (from a clone) into a new virtualenv, then the built wheel
    over it: each imports and runs a loss, and nothing beyond the runtime dependencies came."""
    _, (wheel,), _ = built
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    src = _source_tree(tmp_path / "clone")
    code = (
        "import sys, jax.numpy as jnp, jaxmetric as jm\n"
        "loss = jm.circle_loss(jnp.eye(8, 4), jnp.arange(8) % 2)\n"
        "assert loss.dtype == jnp.float32 and loss.shape == () and bool(jnp.isfinite(loss))\n"
        "print(jm.__version__, jm.__file__)\n"
    )
    for install in (["pip", "install", "-q", "."], ["pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)]):
        pip = subprocess.run([str(py), "-m", *install], capture_output=True, text=True, timeout=900, cwd=src, env=env)
        assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
        run = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
        assert run.returncode == 0, run.stderr[-3000:]
        version, location = run.stdout.split()
        assert version == jaxmetric.__version__ and str(venv) in location  # the installed copy, not the checkout
    extras = subprocess.run([str(py), "-c", "import importlib.util as u; print([m for m in ('sklearn', 'matplotlib', 'torch', 'tqdm', 'pytest') if u.find_spec(m)])"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert extras.stdout.strip() == "[]", extras.stdout


def test_import_pulls_in_no_example_or_test_library():
    code = "import sys, jaxmetric; print(sorted(m for m in ('sklearn', 'matplotlib', 'torch', 'tqdm', 'pytest', 'pytorch_metric_learning') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_version_is_written_once():
    """Only ``jaxmetric/__init__.py`` spells the version; pyproject and the docs read it."""
    hits = subprocess.run(["git", "grep", "-l", "-F", f'"{jaxmetric.__version__}"'], cwd=ROOT, capture_output=True, text=True)
    if hits.returncode > 1:
        pytest.skip("not a git checkout")
    assert hits.stdout.split() == ["jaxmetric/__init__.py"]
    assert 'dynamic = ["version"]' in (ROOT / "pyproject.toml").read_text()


def test_every_public_function_is_annotated():
    import inspect

    missing = []
    for name in jaxmetric.__all__:
        obj = getattr(jaxmetric, name)
        if not callable(obj) or inspect.isclass(obj):
            continue
        sig = inspect.signature(obj)
        missing += [f"{name}({p.name})" for p in sig.parameters.values()
                    if p.annotation is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if sig.return_annotation is inspect.Signature.empty:
            missing.append(f"{name} -> ?")
    assert not missing, missing


USER_SCRIPT = '''
import jax.numpy as jnp
import numpy as np
import jaxmetric as jm

emb = jnp.zeros((8, 4))
labels = np.arange(8) % 2
reveal_type(jm.circle_loss(emb, labels, m=0.25, gamma=jnp.float32(64.0)))
reveal_type(jm.multi_similarity_miner(emb, labels))
reveal_type(jm.supcon_loss(emb, jm.pair_mask(labels), reduction="mean"))
reveal_type(jm.bce_loss(emb, labels))
reveal_type(jm.cross_batch_memory_loss(jm.contrastive_loss, emb, labels, jm.init_cross_batch_memory(16, 4)))
jm.circle_loss("not an array", labels)
'''


def test_type_checker_sees_real_types(tmp_path):
    """mypy on a user's script: the results have real types (not Any), and a wrong argument
    type is caught."""
    pytest.importorskip("mypy")
    script = tmp_path / "user_script.py"
    script.write_text(USER_SCRIPT)
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", "--no-incremental", "--show-error-codes", str(script)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    revealed = [line.split("Revealed type is ")[1].strip('"') for line in out.stdout.splitlines() if "Revealed type is" in line]
    assert revealed == ["jax._src.basearray.Array", "jaxmetric.masks.PairMask", "jax._src.basearray.Array", "jax._src.basearray.Array",
                        "tuple[jax._src.basearray.Array, jaxmetric.wrappers.CrossBatchMemoryState]"], out.stdout
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and ":13: error: Argument 1 to \"circle_loss\"" in errors[0], out.stdout
