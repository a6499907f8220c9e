"""The documentation: builds with warnings as errors, documents every export, and every
```python block of README.md and docs/*.md runs.

Outside CI the build test is skipped when sphinx or myst-parser is missing; in CI (CI=true)
it must run.
"""
import importlib.util
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import jaxmetric
from tests import multilabel_data

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _need_sphinx():
    missing = [m for m in ("sphinx", "myst_parser") if importlib.util.find_spec(m) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI: the docs must build, but {missing} are not installed (the `test` extra lists them)")
        pytest.skip(f"{missing} not installed")


def _inventory_names(path: Path) -> set:
    with open(path, "rb") as f:
        for _ in range(4):  # "# Sphinx inventory version 2", project, version, compression note
            f.readline()
        body = zlib.decompress(f.read()).decode()
    return {line.split(" ", 1)[0] for line in body.splitlines() if line}


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory):
    _need_sphinx()
    out = tmp_path_factory.mktemp("docs")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONWARNINGS": "error::DeprecationWarning"}  # as pytest's filterwarnings
    results = {}
    for builder in ("html", "doctest"):  # the second build reuses the parsed doctrees
        cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", builder, "-d", str(out / "doctrees"), str(DOCS), str(out / builder)]
        proc = subprocess.run(cmd, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=600)
        results[builder] = proc
    return out, results


def test_docs_build_without_warnings(built_docs):
    out, results = built_docs
    html = results["html"]
    assert html.returncode == 0, f"sphinx -W -b html failed:\n{html.stdout[-4000:]}\n{html.stderr[-4000:]}"
    assert (out / "html" / "index.html").exists()
    for page in ("porting", "masks_and_mining", "evaluation", "multi_device", "examples", "api", "contributing", "losses/index"):
        assert (out / "html" / f"{page}.html").exists(), page


def test_docstring_doctests_pass(built_docs):
    _, results = built_docs
    proc = results["doctest"]
    assert proc.returncode == 0, f"sphinx -b doctest failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"


def test_every_export_is_in_the_api_reference(built_docs):
    out, _ = built_docs
    documented = _inventory_names(out / "html" / "objects.inv")
    missing = [name for name in jaxmetric.__all__ if f"jaxmetric.{name}" not in documented]
    assert not missing, (
        f"exported in jaxmetric.__all__ but not documented: {missing}. Add them to docs/api.md "
        "(losses are picked up from jaxmetric/losses/<family>.py automatically)"
    )
    api = (out / "html" / "api.html").read_text()
    not_on_page = [name for name in jaxmetric.__all__ if name not in api]
    assert not not_on_page, f"names missing from the API reference page: {not_on_page}"


def test_every_loss_family_module_has_a_page(built_docs):
    out, _ = built_docs
    import pkgutil

    import jaxmetric.losses

    for module in pkgutil.iter_modules(jaxmetric.losses.__path__):
        if not module.name.startswith("_"):
            assert (out / "html" / "losses" / f"{module.name}.html").exists(), module.name


def test_existing_markdown_pages_are_in_the_site(built_docs):
    out, _ = built_docs
    for page in DOCS.glob("*.md"):
        assert (out / "html" / f"{page.stem}.html").exists(), f"{page.name} is not in the built site"


# ------------------------------------------------------------------ code blocks
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def _markdown_files():
    files = [ROOT / "README.md"] + sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts and "_generated" not in p.parts)
    return [p for p in files if FENCE.search(p.read_text())]


def _available(requirement: str) -> bool:
    if requirement.startswith("data:"):
        return not isinstance(multilabel_data._load(requirement.removeprefix("data:")), str)
    return importlib.util.find_spec(requirement) is not None


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(path, tmp_path, monkeypatch):
    """Each file's ```python blocks run in order in one namespace (a block whose first line is
    ``# requires: module`` runs only where that module is installed; ``# requires: data:NAME``
    only where the data cache holds the Mulan set NAME, since tests never download)."""
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{path.stem}"}
    ran = 0
    unmet = []
    for i, match in enumerate(FENCE.finditer(path.read_text())):
        code = match.group(1)
        first = code.splitlines()[0] if code.strip() else ""
        req = re.match(r"#\s*requires:\s*([\w.:]+)", first)
        if req and not _available(req.group(1)):
            unmet.append(req.group(1))
            continue
        line = path.read_text()[: match.start()].count("\n") + 2
        try:
            exec(compile(code, f"{path.name}:{line}", "exec"), namespace)
        except Exception as e:  # pragma: no cover - the message is the point
            raise AssertionError(f"{path.relative_to(ROOT)} block {i + 1} (line {line}) failed: {type(e).__name__}: {e}") from e
        ran += 1
    if os.environ.get("CI") and any(u.startswith("data:") for u in unmet):
        pytest.fail(f"CI: {path.name} has blocks that need {sorted(set(unmet))}, which CI must provide")
    if ran == 0 and unmet:
        pytest.skip(f"every block of {path.name} needs what is missing here: {sorted(set(unmet))}")
    assert ran > 0


# ------------------------------------------------------------------ committed generated pages
def test_porting_table_is_current():
    """The committed porting table equals what the library gives now (``python docs/_porting.py``
    rewrites it), and every PML component it lists has its jaxmetric name."""
    sys.path.insert(0, str(DOCS))
    try:
        import _porting
    finally:
        sys.path.remove(str(DOCS))
    text = _porting.PAGE.read_text()
    assert _porting.page_with_table(text, jaxmetric) == text, "docs/porting.md's table is stale: run `python docs/_porting.py`"
    assert "| not ported |" not in text


def test_multi_device_page_lists_every_function_that_takes_axis_name():
    import inspect

    takes = sorted(n for n in jaxmetric.__all__ if callable(getattr(jaxmetric, n)) and not inspect.isclass(getattr(jaxmetric, n))
                   and "axis_name" in inspect.signature(getattr(jaxmetric, n)).parameters)
    page = (DOCS / "multi_device.md").read_text()
    missing = [n for n in takes if f"`{n}`" not in page]
    assert not missing, f"docs/multi_device.md does not name these functions that take `axis_name`: {missing}"
    assert f"{len(takes)} public functions" in page
