"""Every example takes ``--quick`` (and ``--steps`` or ``--epochs``) as docs/examples.md
promises, and the page's table lists every example."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if p.name != "common.py")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_takes_quick_and_a_length(path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--quick" in out.stdout, f"{path.name} has no --quick"
    assert "--steps" in out.stdout or "--epochs" in out.stdout, f"{path.name} has neither --steps nor --epochs"


def test_examples_page_lists_every_example():
    page = (ROOT / "docs" / "examples.md").read_text()
    missing = [p.name for p in EXAMPLES if f"`examples/{p.name}`" not in page]
    assert not missing, f"docs/examples.md's table does not list {missing}"
