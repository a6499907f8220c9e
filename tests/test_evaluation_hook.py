"""EvaluationHook: held-out metrics every N steps of a training loop, equal to get_accuracy on
the embeddings; fixed-shape embedding batches; the optional tqdm bar; argument errors."""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from jaxmetric import evaluation as ev

TRACES = []


@jax.jit
def embed(w, x):
    TRACES.append(x.shape)
    return x @ w


def data(seed=0, n=130):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype(np.float32), rng.integers(0, 5, n), jnp.asarray(rng.normal(size=(6, 3)).astype(np.float32))


def test_hook_evaluates_every_n_steps_and_equals_get_accuracy():
    x, y, w = data()
    opts = dict(include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count", distance=jm.CosineSimilarity())
    hook = ev.EvaluationHook(embed, x, y, every=3, batch_size=32, **opts)
    TRACES.clear()
    results = {step: hook(step, w) for step in range(7)}
    assert [s for s, m in results.items() if m is not None] == [2, 5]
    expected = ev.get_accuracy(np.asarray(x @ np.asarray(w)), y, **opts)
    assert results[2] == pytest.approx(expected, rel=1e-6)
    assert [s for s, _ in hook.history] == [2, 5]
    assert set(TRACES) == {(32, 6)}  # the last, short batch is padded: one compilation
    assert hook(0, w) is None and ev.EvaluationHook(embed, x, y, every=0)(99, w) is None


def test_hook_with_a_separate_reference_set():
    x, y, w = data(1)
    xr, yr, _ = data(2, n=70)
    hook = ev.EvaluationHook(embed, x, y, xr, yr, every=1, batch_size=64, include=("precision_at_1", "recall_at_k"), recall_ks=(1, 5))
    out = hook.evaluate(w, step=4)
    expected = ev.get_accuracy(np.asarray(x @ np.asarray(w)), y, np.asarray(xr @ np.asarray(w)), yr, include=("precision_at_1", "recall_at_k"), recall_ks=(1, 5))
    assert out == pytest.approx(expected, rel=1e-6)
    assert hook.history == [(4, out)]


def test_progress_bar_follows_the_search(monkeypatch):
    tqdm_auto = pytest.importorskip("tqdm.auto")
    bars = []

    class Bar:
        def __init__(self, total, **kw):
            self.total, self.n, self.closed = total, 0, False
            bars.append(self)

        def update(self, n):
            self.n += n

        def close(self):
            self.closed = True

    monkeypatch.setattr(tqdm_auto, "tqdm", Bar)
    monkeypatch.setattr(ev, "_PAIRS_PER_CALL", 16 * 130)  # one block of 16 queries per call
    x, y, w = data(3)
    ev.EvaluationHook(embed, x, y, every=1, include=("precision_at_1",), block_size=16, progress=True).evaluate(w)
    assert len(bars) == 1 and bars[0].total == 130 and bars[0].n == 130 and bars[0].closed
    ev.EvaluationHook(embed, x, y, every=1, include=("precision_at_1",)).evaluate(w)  # short: no bar
    ev.EvaluationHook(embed, x, y, every=1, include=("precision_at_1",), progress=False).evaluate(w)
    assert len(bars) == 1
    monkeypatch.setattr(ev, "_LONG_EVALUATION_PAIRS", 1)  # long: the automatic bar appears
    ev.EvaluationHook(embed, x, y, every=1, include=("precision_at_1",)).evaluate(w)
    assert len(bars) == 2


def test_progress_true_without_tqdm_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    x, y, w = data(4)
    with pytest.raises(ImportError, match="needs tqdm"):
        ev.EvaluationHook(embed, x, y, progress=True, include=("precision_at_1",)).evaluate(w)
    # progress=None without tqdm: no bar, no error.
    assert "precision_at_1" in ev.EvaluationHook(embed, x, y, include=("precision_at_1",)).evaluate(w)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"embed": "model"}, TypeError, "`embed` must be a callable"),
        ({"every": -1}, ValueError, "`every` must be an int >= 0"),
        ({"batch_size": 0}, ValueError, "`batch_size` must be an int >= 1"),
        ({"progress": "yes"}, ValueError, "`progress` must be True, False or None"),
        ({"reference": np.zeros((4, 6), np.float32)}, ValueError, "`reference` and `reference_labels` must be given together"),
        ({"query_labels": np.zeros(3, int)}, ValueError, "`query` must be an array with one row per label"),
        ({"kk": 3}, TypeError, r"unknown get_accuracy option\(s\) \['kk'\]"),
    ],
)
def test_hook_argument_errors_name_the_argument(kwargs, err, match):
    x, y, _ = data(5)
    args = {"embed": embed, "query": x, "query_labels": y, **kwargs}
    with pytest.raises(err, match=match):
        ev.EvaluationHook(args.pop("embed"), args.pop("query"), args.pop("query_labels"), **args)
