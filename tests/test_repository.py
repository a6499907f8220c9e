"""Nothing of a developer's machine is in the repository: no symbolic link that leaves it, no
virtualenv, no path into a folder beside or above the checkout (``.ci/run`` alone may name the
CI data folder beside the clone); and ``tools/venv.sh`` (the Makefile's virtualenv keeper)
refuses a ``.venv`` it did not make."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CI_ONLY = {".ci/run"}  # runs in CI alone, with the shared data folder beside the clone
OUTSIDE = re.compile(r"\.\./shared|(?<![\w.])/(?:work|root|home|Users)/|/tmp/venv")


def _tracked() -> list[tuple[str, str]]:
    """``(mode, path)`` of every tracked file."""
    out = subprocess.run(["git", "ls-files", "-s", "-z"], cwd=ROOT, capture_output=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    rows = []
    for entry in filter(None, out.stdout.decode().split("\0")):
        meta, path = entry.split("\t", 1)
        rows.append((meta.split()[0], path))
    return rows


def test_no_tracked_symbolic_link_leaves_the_repository():
    for mode, path in _tracked():
        if mode == "120000":
            target = (ROOT / path).parent / os.readlink(ROOT / path)
            assert target.resolve().is_relative_to(ROOT.resolve()), f"{path} links outside the repository, to {os.readlink(ROOT / path)}"


def test_no_virtualenv_is_tracked():
    paths = [p for _, p in _tracked()]
    venvs = [p for p in paths if p.endswith("pyvenv.cfg") or "/site-packages/" in p or p.endswith("bin/activate")
             or p.split("/")[0].startswith(".venv")]
    assert not venvs, venvs


def test_no_tracked_file_names_a_folder_outside_the_repository():
    offenders = []
    for _, path in _tracked():
        if path in CI_ONLY or path.startswith("tests/test_repository.py"):
            continue
        try:
            text = (ROOT / path).read_text()
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue  # binary files (PNG figures)
        for lineno, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path}:{lineno}: {line.strip()[:120]}")
    assert not offenders, "\n".join(offenders)


# ----------------------------------------------------------------------------- tools/venv.sh
def _venv_sh(*args, cwd):
    return subprocess.run(["sh", str(ROOT / "tools" / "venv.sh"), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("kind", ["symlink", "dangling_symlink", "folder", "foreign_virtualenv"])
def test_venv_refuses_a_folder_it_did_not_make(kind, tmp_path):
    venv = tmp_path / ".venv"
    if kind == "symlink":
        (tmp_path / "elsewhere").mkdir()
        venv.symlink_to(tmp_path / "elsewhere")
    elif kind == "dangling_symlink":
        venv.symlink_to(tmp_path / "missing")
    elif kind == "folder":
        venv.mkdir()
    else:
        venv.mkdir()
        (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    out = _venv_sh("ensure", "python3", ".venv", cwd=tmp_path)
    assert out.returncode == 1
    assert "error: .venv exists but is" in out.stderr and "make installs only into a virtualenv it made itself" in out.stderr
    assert "rm -rf .venv" in out.stderr and "VENV=" in out.stderr
    assert sorted(os.listdir(tmp_path / ("elsewhere" if kind == "symlink" else "."))) == (
        [] if kind == "symlink" else sorted(p.name for p in tmp_path.iterdir()))
    out = _venv_sh("remove", ".venv", cwd=tmp_path)
    assert (venv.is_symlink() or venv.exists()) and "not removing .venv" in out.stderr


def test_venv_refuses_a_broken_virtualenv_it_made(tmp_path):
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".made-by-jaxmetric-make").touch()
    out = _venv_sh("ensure", "python3", ".venv", cwd=tmp_path)
    assert out.returncode == 1 and "was made by make, but .venv/bin/python no longer runs" in out.stderr
    assert "make clean VENV=.venv" in out.stderr
    _venv_sh("remove", ".venv", cwd=tmp_path)
    assert not venv.exists()


def test_venv_names_a_missing_interpreter(tmp_path):
    out = _venv_sh("ensure", "python-that-does-not-exist", ".venv", cwd=tmp_path)
    assert out.returncode == 1 and "the interpreter 'python-that-does-not-exist' was not found" in out.stderr
    assert not (tmp_path / ".venv").exists()


def test_venv_names_an_interpreter_that_does_not_run_and_the_pyenv_way_out(tmp_path):
    # what pyenv's shim does when no selected version provides the command
    shims = tmp_path / "shims"
    shims.mkdir()
    shim = shims / "python3.99"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.99: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    out = subprocess.run(["sh", str(ROOT / "tools" / "venv.sh"), "ensure", "python3.99", ".venv"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}"})
    assert out.returncode == 1 and f"'python3.99' was found ({shim}) but does not run" in out.stderr
    assert "pyenv shim" in out.stderr and "PYENV_VERSION=" in out.stderr
    assert not (tmp_path / ".venv").exists()
