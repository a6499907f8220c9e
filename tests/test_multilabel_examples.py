"""The multi-label examples, shortened: yeast and emotions (an unseen Mulan data set given its
paths and label count, the example unchanged) for one epoch, and the imbalance benchmark for
a few steps. The real data come from the data cache (see ``tests/multilabel_data.py``)."""
from __future__ import annotations

import importlib.util
import json
import math
import sys

import pytest

from tests.multilabel_data import REPO, data_dir, mulan


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses (flax modules) look their module up
    spec.loader.exec_module(mod)
    return mod


def check_table(results, names, num_labels):
    assert list(results) == names
    for r in results.values():
        for k in ("mAP", "micro-F1", "macro-F1", "hamming"):
            assert 0.0 <= r[k] <= 1.0 and math.isfinite(r[k]), (k, r)
        assert math.isfinite(r["train loss"])


def test_yeast_one_epoch(capsys, tmp_path):
    mod = load_example("multilabel_yeast")
    out = tmp_path / "yeast.json"
    mulan("yeast")  # skips (fails in CI) when the cache lacks it; the example never downloads then
    results = mod.main(["--dataset", "yeast", "--epochs", "1", "--json", str(out)])
    check_table(results, mod.DEFAULT_LOSSES, 14)
    assert json.loads(out.read_text()).keys() == results.keys()
    text = capsys.readouterr().out
    assert "14 labels" in text and "mAP" in text and "hamming" in text
    assert results["BCE"]["mAP"] > 0.35  # one epoch already beats chance (~0.3 on yeast)


def test_emotions_unchanged_given_paths_and_label_count(capsys):
    d = data_dir()
    mod = load_example("multilabel_yeast")
    results = mod.main([
        "--train", str(d / "emotions-train.arff"), "--test", str(d / "emotions-test.arff"),
        "--num-labels", "6", "--epochs", "1",
    ])
    check_table(results, mod.DEFAULT_LOSSES, 6)
    assert "6 labels" in capsys.readouterr().out


def test_emotions_with_xml_labels_and_extra_losses():
    d = data_dir()
    mod = load_example("multilabel_yeast")
    names = ["DB"]
    results = mod.main([
        "--train", str(d / "emotions-train.arff"), "--test", str(d / "emotions-test.arff"),
        "--label-xml", str(d / "emotions.xml"), "--epochs", "1", "--losses", ",".join(names),
    ])
    check_table(results, names, 6)


def test_bad_loss_name_and_missing_file(tmp_path):
    mod = load_example("multilabel_yeast")
    with pytest.raises(SystemExit, match="data file not found"):
        mod.main(["--train", str(tmp_path / "a.arff"), "--test", str(tmp_path / "b.arff"), "--num-labels", "3"])
    with pytest.raises(SystemExit, match="unknown loss"):
        mod.main(["--dataset", "emotions", "--data-home", str(data_dir().parent), "--losses", "nope", "--epochs", "1"])


def test_imbalance_runs():
    mod = load_example("imbalance_synthetic")
    results = mod.main(["--steps", "3", "--train-size", "512", "--test-size", "128", "--losses", "BCE,ASL (4/0/0.05)"])
    assert list(results) == ["BCE", "ASL (4/0/0.05)"]
    for r in results.values():
        assert all(math.isfinite(v) for v in r.values())
