"""The main job runs (shortened) and improves held-out retrieval."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_improves_precision_at_1(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import train_digits
    finally:
        sys.path.pop(0)
    out = tmp_path / "emb.png"
    result = train_digits.main(["--steps", "150", "--out", str(out)])
    assert out.exists() and out.stat().st_size > 10_000
    assert result["after"]["precision_at_1"] > result["before"]["precision_at_1"] + 0.03
    assert result["after"]["mean_average_precision_at_r"] > result["before"]["mean_average_precision_at_r"] + 0.3


def test_readme_commands_are_the_makefile_targets():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in readme
        assert f"\n{target}:" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
