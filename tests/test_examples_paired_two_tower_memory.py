"""The paired-data, two-tower CLIP/SigLIP and cross-batch-memory examples, in shortened mode."""
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


def test_paired_data_example_both_other_pairs_options(tmp_path, capsys):
    out = _import("paired_data").main(["--quick", "--n-pairs", "4000", "--out", str(tmp_path / "paired.png")])
    assert set(out["runs"]) == {"contrastive:ignore", "contrastive:negative", "ntxent:negative"}
    before = out["before"]["mean_average_precision_at_r"]
    for name, run in out["runs"].items():
        assert np.isfinite(run["final_loss"]), name
        assert run["after"]["mean_average_precision_at_r"] > before + 0.15, name
    assert Path(out["plot"]).stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "after contrastive:ignore" in printed and "MAP@R" in printed


def test_paired_data_refuses_ntxent_without_negatives():
    with pytest.raises(SystemExit):
        _import("paired_data").main(["--quick", "--runs", "ntxent:ignore"])


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_two_tower_example_learns_temperature_and_cross_modal_retrieval(loss, tmp_path, capsys):
    out = _import("two_tower_clip").main(["--quick", "--loss", loss, "--out", str(tmp_path / f"{loss}.png")])
    assert out["after"]["recall_at_1"] > out["before"]["recall_at_1"] + 0.02  # chance is 1/540
    assert out["after"]["class_precision_at_1"] > out["before"]["class_precision_at_1"] + 0.3
    assert out["temperature_after"] != out["temperature_before"]  # the loss params are trained
    if loss == "clip":
        assert out["temperature_after"]["temperature"] < 0.07  # sharpens from CLIP's init
    assert Path(out["plot"]).stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "cross-modal (A queries B): R@1" in printed


def test_cross_batch_memory_example_no_retrace_and_memory_helps(tmp_path, capsys):
    out = _import("cross_batch_memory").main(["--quick", "--out", str(tmp_path / "xbm.png")])
    assert out["traces"] == {"plain": 1, "memory": 1}
    before = out["before"]["mean_average_precision_at_r"]
    assert out["no_memory"]["mean_average_precision_at_r"] > before + 0.1
    # At 60 steps of 8 digits the memory run is clearly ahead (0.66 vs 0.56 MAP@R).
    assert out["memory"]["mean_average_precision_at_r"] > out["no_memory"]["mean_average_precision_at_r"] + 0.03
    assert Path(out["plot"]).exists()
    assert "jit traces in 60 steps: step_plain 1, step_memory 1" in capsys.readouterr().out
