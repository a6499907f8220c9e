"""``examples/reality_check.py`` shortened (``--quick``: one seed, one class split, 2 epochs of 3
steps; one multi-label set for one epoch), so the benchmark of docs/reality_check.md cannot
rot. The full run is documented there, not run here."""
from __future__ import annotations

import importlib.util
import json
import math
import re
import sys

import pytest

from tests.multilabel_data import REPO, mulan


def load_example():
    spec = importlib.util.spec_from_file_location("example_reality_check", REPO / "examples" / "reality_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses (flax modules) look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.pml
def test_metric_learning_quick_with_pml(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("pytorch_metric_learning")
    mod = load_example()
    report = mod.main(["--quick", "--parts", "digits,pml", "--out", str(tmp_path)])
    (split, results), = report["metric_learning"].items()
    expected = ["raw pixels", "untrained network"] + [f"jaxmetric {s.name}" for s in mod.METRIC_LOSSES] + [f"PML {n}" for n in mod.PML_LOSSES]
    assert list(results) == expected
    for method, per_seed in results.items():
        (r,) = per_seed.values()
        for k in mod.RETRIEVAL + ("seen_map_at_r",):
            assert 0.0 <= r[k] <= 1.0, (method, k, r)
    for name in mod.PML_LOSSES:
        # Same weights, same first batch: both libraries compute the same loss before any step.
        jax_loss, pml_loss = results[f"jaxmetric {name}"][0]["first_loss"], results[f"PML {name}"][0]["first_loss"]
        assert math.isclose(jax_loss, pml_loss, rel_tol=1e-4), (name, jax_loss, pml_loss)
    tables = (tmp_path / "tables.md").read_text()
    assert "| untrained network |" in tables and "| ProxyAnchor |" in tables and "ms per epoch" in tables
    assert json.loads((tmp_path / "results.json").read_text())["metric_learning"].keys() == {split}
    assert (tmp_path / "reality_check.png").stat().st_size > 10_000


def test_multilabel_quick(tmp_path):
    mulan("yeast")  # skips (fails in CI) when the data cache lacks yeast; the script never downloads then
    mod = load_example()
    report = mod.main(["--quick", "--parts", "multilabel", "--out", str(tmp_path)])
    results = report["multilabel"]["yeast"]
    assert list(results) == ["untrained network"] + mod.MULTILABEL_LOSSES
    for name, per_seed in results.items():
        (r,) = per_seed.values()
        assert all(0.0 <= r[k] <= 1.0 for k in mod.MULTILABEL_METRICS), (name, r)
    assert "| BCE + pos_weight |" in (tmp_path / "tables.md").read_text()


def test_docs_page_names_the_scripts_losses():
    """The page's tables come from the script: its loss names and command must match it."""
    mod = load_example()
    page = (REPO / "docs" / "reality_check.md").read_text()
    for name in [s.name for s in mod.METRIC_LOSSES] + mod.MULTILABEL_LOSSES:
        assert re.search(rf"^\| {re.escape(name)} \|", page, re.M), name
    assert "python examples/reality_check.py" in page and "make reality-check" in page
    assert "shared/" not in page
