"""Where the tests find the real multi-label data (yeast, emotions): the data cache that
``jaxmetric.datasets.fetch_mulan`` fills (``$JAXMETRIC_DATA``, else ``~/.cache/jaxmetric``).

The tests never download: when the cache lacks the files they are skipped with a reason that
says how to fill it, except under ``CI=true``, where they must run (``.ci/run`` points
``$JAXMETRIC_DATA`` at a copy of the data)."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from jaxmetric.datasets import MulanDataset, fetch_mulan, get_data_home

REPO = Path(__file__).resolve().parents[1]
SETS = ("yeast", "emotions")


@functools.lru_cache(maxsize=None)
def _load(name: str) -> MulanDataset | str:
    try:
        return fetch_mulan(name, download=False)
    except OSError as e:
        return str(e)


def mulan(name: str) -> MulanDataset:
    """The cached Mulan set ``name`` (checked against its SHA-256), or skip / fail."""
    data = _load(name)
    if isinstance(data, str):
        msg = (f"the {name} data are not in the data cache {get_data_home()} ({data}). Fill it once with "
               f"`python -c \"import jaxmetric; jaxmetric.datasets.fetch_mulan('{name}')\"` (downloads), or point "
               "$JAXMETRIC_DATA at a folder whose mulan/ subfolder holds the files")
        if os.environ.get("CI"):
            pytest.fail("CI: " + msg)
        pytest.skip(msg)
    return data


def data_dir() -> Path:
    """The cache folder holding the yeast and emotions files."""
    for name in SETS:
        data = mulan(name)
    return next(iter(data.paths.values())).parent
