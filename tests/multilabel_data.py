"""Where the tests find the real multi-label data: ``../shared/data/multilabel`` beside the
repository root (``$MULTILABEL_DATA_DIR`` overrides it). The data are never copied into the
repository. Missing data fail the tests in CI (``CI=true``) and skip them locally."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    candidates = [Path(os.environ["MULTILABEL_DATA_DIR"])] if os.environ.get("MULTILABEL_DATA_DIR") else []
    candidates.append(REPO / ".." / "shared" / "data" / "multilabel")
    for c in candidates:
        if (c / "yeast-train.arff").exists():
            return c.resolve()
    msg = f"multi-label data not found in {[str(c) for c in candidates]}"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)
