"""The table of bad inputs: for every public function, calls that must raise a clear error.

Each :class:`Case` calls one function with one bad input and says which exception must come
and a regular expression its message must match: the argument's name (in backticks), the
expectation and the value received. Generic cases come from the registry's metadata (argument
names from the signature, label kinds, options, positive hyperparameters); the others are
listed by hand below.

``tests/test_bad_inputs.py`` runs the table; ``python tests/bad_inputs.py`` renders it, with
the messages actually raised, into ``docs/errors.md`` (a test checks the page is current).
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Callable

if __name__ == "__main__":  # the suite's settings (tests/conftest.py): the messages name dtypes
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # registry
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # jaxmetric, when run as a script

import jaxmetric as jm  # noqa: E402
from registry import B, C, D, ENTRIES, HOST_METRICS, Entry  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ERRORS_MD = ROOT / "docs" / "errors.md"


@dataclasses.dataclass(frozen=True)
class Case:
    fn: str  # the public name
    what: str  # the bad input, in words
    call: Callable[[], Any]
    exc: type
    pattern: str  # regex the message must match (argument, expectation, received)
    category: str = ""  # the column of the docs table


_rng = np.random.default_rng(3)
EMB = jnp.asarray(_rng.normal(size=(B, D)), jnp.float32)
LAB = jnp.asarray(np.array([0, 1, 0, 2, 1, 2, 3, 0]), jnp.int32)


def _positional_names(entry: Entry) -> list[str]:
    params = inspect.signature(entry.runner()).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _takes(entry: Entry, name: str) -> bool:
    params = inspect.signature(entry.runner()).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _caller(entry: Entry, replace: dict | None = None, **kw):
    """A call of the entry on valid inputs with positional ``replace`` {index: value} and ``kw``."""
    def call():
        args = list(entry.build(EMB, LAB))
        for i, v in (replace or {}).items():
            args[i] = v(args[i]) if callable(v) else v
        return entry.runner()(*args, **kw)

    return call


def _label_name(entry: Entry, names: list[str]) -> str:
    name = names[entry.labels_arg]
    return "labels" if name in ("labels_or_mask", "labels") else name


def _numeric_keywords(entry: Entry) -> list[str]:
    """Keyword-only hyperparameters with a numeric default that the entry's call accepts."""
    if entry.call is not None:
        return []
    params = inspect.signature(entry.fn).parameters.values()
    return [
        p.name for p in params
        if p.kind is p.KEYWORD_ONLY and isinstance(p.default, (int, float)) and not isinstance(p.default, bool)
        and p.name not in entry.static
    ]


def generic_cases(entry: Entry) -> list[Case]:
    names = _positional_names(entry)
    fn = entry.name
    out = []

    def add(what, call, exc, pattern, category):
        out.append(Case(fn, what, call, exc, pattern, category))

    first = names[0]
    empty = lambda: entry.runner()(*entry.build(EMB[:0], LAB[:0]))  # noqa: E731
    add("an empty batch", empty, ValueError,
        r"`[^`]+` must have at least one row \(an empty batch has nothing to compute\); got .*\(0, ", "empty batch")
    if entry.labels_arg == 0:  # a metric: (y_true, y_score | y_pred)
        return out + metric_cases(entry, names)
    if first != "views":
        add("1-D embeddings", _caller(entry, {0: lambda x: x[0]}), ValueError,
            rf"`{first}` must be .*2-D.*got .*\({D},\)", "wrong rank")
        add("3-D embeddings", _caller(entry, {0: lambda x: x[None]}), ValueError,
            rf"`{first}` must be .*2-D.*got .*\(1, {B}, {D}\)", "wrong rank")
        add("integer embeddings", _caller(entry, {0: lambda x: x.astype(jnp.int32)}), TypeError,
            rf"`{first}` must have a floating dtype.*int32", "wrong dtype")
    if entry.labels_arg is None and 1 in entry.batch and first != "views":
        second = names[1]
        add(f"`{second}` with another batch size", _caller(entry, {1: lambda x: x[:-1]}), ValueError,
            rf"`{second}` must have the shape of `{first}`.*\({B}, {D}\).*got shape \({B - 1}, {D}\)", "mismatched batch")
    if entry.labels_arg is not None:
        i, lab = entry.labels_arg, _label_name(entry, names)
        add(f"`{lab}` for {B - 1} rows", _caller(entry, {i: lambda y: y[:-1]}), ValueError,
            rf"`{lab}` must .*{B}.*got .*\({B - 1},", "mismatched batch")
        if entry.label_kind in ("any", "ids_or_mask", "class_ids", "ids", "labels"):
            add("float class ids", _caller(entry, {i: lambda y: y.astype(jnp.float32)}), TypeError,
                rf"`{lab}` .*integer.*float32", "float or negative class ids")
            add("negative class ids", _caller(entry, {i: lambda y: y.at[3].set(-1)}), ValueError,
                rf"`{lab}` must be .*(non-negative|\[0, {C}\)).*-1", "float or negative class ids")
        if entry.label_kind in ("any", "multi_hot", "labels"):
            bad = lambda y: (y if y.ndim == 2 else jax.nn.one_hot(y, C, dtype=jnp.int32)).at[2, 1].set(2)  # noqa: E731
            add("multi-hot with a 2", _caller(entry, {i: bad}), ValueError,
                rf"`{lab}` (as multi-hot )?must hold (only )?[^;]*0[^;]*1.*value 2", "multi-hot outside {0,1}")
        if entry.label_kind in ("ids_or_mask", "class_ids", "ids"):
            add("multi-hot labels", _caller(entry, {i: lambda y: jax.nn.one_hot(y, C, dtype=jnp.int32)}), (ValueError, TypeError),
                rf"`{lab}` must .*\({B}, {C}\)", "multi-hot outside {0,1}")
        if entry.label_kind == "labels":
            add("a PairMask as labels", _caller(entry, {i: jm.pair_mask(LAB)}), TypeError,
                rf"`{lab}` must be class ids .*not a mask.*got a PairMask", "wrong type")
        if entry.label_kind in ("any", "ids_or_mask", "class_ids", "ids", "labels"):
            add("a PML indices_tuple as labels", _caller(entry, {i: INDICES_TUPLE}), TypeError,
                rf"`{lab}` must be labels, not a PML indices_tuple; got a tuple of 3 index arrays .*"
                rf"jaxmetric.from_indices\(indices_tuple, batch_size\)", "PML idiom")
        if entry.out_kind == "scalar" and len(names) == len(entry.build(EMB, LAB)):
            # PML's loss(embeddings, labels, indices_tuple): Python's own error is the alternative
            add("a mined mask as a third positional argument", lambda: entry.runner()(*entry.build(EMB, LAB), jm.pair_mask(LAB)),
                TypeError, r"takes \d positional arguments .* and no `indices_tuple`; got a PairMask after them.*"
                r"miner\(embeddings, labels\)", "PML idiom")
        if entry.label_kind in ("any", "ids_or_mask"):
            wrong = jm.PairMask(jnp.zeros((B, B + 1), bool), jnp.zeros((B, B + 1), bool))
            add(f"PairMask of shape ({B}, {B + 1})", _caller(entry, {i: wrong}), ValueError,
                rf"`PairMask.pos` must have shape \({B}, {B}\).*got shape \({B}, {B + 1}\)", "wrong mask shape")
            add(f"TripletMask of shape ({B}, {B}, 3)", _caller(entry, {i: jm.TripletMask(jnp.zeros((B, B, 3)))}), ValueError,
                rf"`TripletMask.weights` must have shape \({B}, {B}, {B}\).*got shape \({B}, {B}, 3\)", "wrong mask shape")
    if entry.label_kind == "ids" and _takes(entry, "mask") and entry.out_kind == "scalar":
        wrong = jm.PairMask(jnp.zeros((B, B + 1)), jnp.zeros((B, B + 1)))
        add(f"mask= PairMask of shape ({B}, {B + 1})", _caller(entry, mask=wrong), ValueError,
            rf"`mask` .*must have shape \({B}, {B}\).*got .*\({B}, {B + 1}\)", "wrong mask shape")
    if entry.where is True:
        add(f"`where` of shape ({B - 1},)", _caller(entry, where=jnp.ones(B - 1, bool)), ValueError,
            rf"`where` must be a bool array of shape \(\d+,\).*got shape \({B - 1},\)", "wrong mask shape")
        add("float `where`", _caller(entry, where=jnp.ones(B)), TypeError,
            rf"`where` must be a bool array.*float", "wrong dtype")
    if "reduction" in entry.options and _takes(entry, "reduction"):
        add("reduction='avg'", _caller(entry, reduction="avg"), ValueError,
            r"`reduction` must be one of .*got 'avg'", "unknown option")
    if "distance" in entry.options and _takes(entry, "distance"):
        add("distance='cosine'", _caller(entry, distance="cosine"), TypeError,
            r"`distance` must be a jaxmetric distance.*got 'cosine'", "unknown option")
    numeric = _numeric_keywords(entry)
    if numeric:
        p = numeric[0]
        add(f"{p} of shape (3,)", _caller(entry, **{p: jnp.ones(3)}), ValueError,
            rf"`{p}` must be a scalar.*got shape \(3,\)", "wrong rank")
    for p in entry.positive:
        for v in (0.0, -1.0):
            add(f"{p}={v}", _caller(entry, **{p: v}), ValueError, rf"`{p}` must be > 0; got {v}", "non-positive hyperparameter")
    return out


def metric_cases(entry: Entry, names: list[str]) -> list[Case]:
    """A multi-label metric ``fn(y_true [n, L], y_score | y_pred [n, L], *, sample_weight)``."""
    fn, second = entry.name, names[1]
    bad_true = lambda y: y.at[2, 1].set(2)  # noqa: E731
    cases = [
        Case(fn, "1-D `y_true`", _caller(entry, {0: lambda y: y[0]}), ValueError,
             rf"`y_true` must be a 2-D multi-hot array.*got .*\({D},\)", "wrong rank"),
        Case(fn, f"`{second}` for {B - 1} rows", _caller(entry, {1: lambda x: x[:-1]}), ValueError,
             rf"`{second}` must have the shape of `y_true` \({B}, {D}\); got .*\({B - 1}, {D}\)", "mismatched batch"),
        Case(fn, "`y_true` with a 2", _caller(entry, {0: bad_true}), ValueError,
             r"`y_true` must hold only 0 and 1; got .*value 2", "multi-hot outside {0,1}"),
        Case(fn, f"`sample_weight` of shape ({B - 1},)", _caller(entry, sample_weight=jnp.ones(B - 1)), ValueError,
             rf"`sample_weight` must have shape \({B},\); got .*\({B - 1},\)", "wrong mask shape"),
    ]
    if second == "y_pred":
        cases.append(Case(fn, "`y_pred` with a 2", _caller(entry, {1: bad_true}), ValueError,
                          r"`y_pred` must hold only 0 and 1; got .*value 2", "multi-hot outside {0,1}"))
    else:
        cases.append(Case(fn, "string scores", _caller(entry, {1: lambda x: np.asarray(x).astype(str)}), (TypeError, ValueError),
                          r"`y_score` must be a float \(or int\) array of scores; got", "wrong dtype"))
    return cases


def _c(fn, what, call, exc, pattern, category="other"):
    return Case(fn, what, call, exc, pattern, category)


INDICES_TUPLE = (jnp.asarray([0, 1]), jnp.asarray([2, 4]), jnp.asarray([3, 5]))  # PML's (a, p, n)


R = {e.name: e for e in ENTRIES}
W = jnp.asarray(_rng.normal(size=(C, D)), jnp.float32)
W3 = jnp.asarray(_rng.normal(size=(C, 3, D)), jnp.float32)
MH = jax.nn.one_hot(LAB, C, dtype=jnp.int32)


def specific_cases() -> list[Case]:
    ev = jm.evaluation
    q = np.asarray(EMB)
    ql = np.asarray(LAB)
    return [
        # ambiguous labels, negative weights, stray arguments
        _c("contrastive_loss", "labels of shape (8, 1)", lambda: jm.contrastive_loss(EMB, LAB[:, None]),
           ValueError, r"`labels` of shape \(8, 1\) is ambiguous: pass class ids as a 1-D array \[8\].*got shape \(8, 1\)", "wrong rank"),
        _c("contrastive_loss", "embeddings with 0 columns", lambda: jm.contrastive_loss(EMB[:, :0], LAB),
           ValueError, r"`embeddings` must have at least one column.*got shape \(8, 0\)", "wrong shape"),
        _c("contrastive_loss", "ref_labels without ref_emb", lambda: jm.contrastive_loss(EMB, LAB, ref_labels=LAB),
           ValueError, r"`ref_labels` needs `ref_emb`; got ref_labels without ref_emb", "other"),
        _c("circle_loss", "PairMask with a negative weight", lambda: jm.circle_loss(EMB, jm.PairMask(-jnp.ones((B, B)), jnp.zeros((B, B)))),
           ValueError, r"`PairMask.pos` must hold non-negative weights; got .*value -1.0", "other"),
        _c("triplet_margin_loss", "TripletMask with a negative weight", lambda: jm.triplet_margin_loss(EMB, jm.TripletMask(-jnp.ones((B, B, B)))),
           ValueError, r"`TripletMask.weights` must hold non-negative weights; got .*value -1.0", "other"),
        _c("cosface_loss", "negative sample_weights", lambda: jm.cosface_loss(EMB, LAB, W, sample_weights=-jnp.ones(B)),
           ValueError, r"`sample_weights` must hold non-negative weights; got .*value -1.0", "other"),
        _c("class_weighted", "negative weights", lambda: jm.class_weighted(-jnp.ones(3)),
           ValueError, r"`weights` must hold non-negative weights; got .*value -1.0", "non-positive hyperparameter"),
        _c("threshold", "low=1 above high=0.5", lambda: jm.threshold(low=1.0, high=0.5),
           ValueError, r"`low` must be below `high`.*got low=1.0, high=0.5", "other"),
        # strategies and structural options
        _c("triplet_margin_loss", "triplets_per_anchor='some'", lambda: jm.triplet_margin_loss(EMB, LAB, triplets_per_anchor="some"),
           ValueError, r"`triplets_per_anchor` must be 'all' or a positive int; got 'some'", "unknown option"),
        _c("triplet_margin_loss", "triplets_per_anchor=2 without key", lambda: jm.triplet_margin_loss(EMB, LAB, triplets_per_anchor=2),
           ValueError, r"`key`.*required.*got key=None", "other"),
        _c("margin_loss", "triplets_per_anchor='some'", lambda: jm.margin_loss(EMB, LAB, triplets_per_anchor="some"),
           ValueError, r"`triplets_per_anchor` must be 'all' or a positive int; got 'some'", "unknown option"),
        _c("margin_loss", "`beta` of shape (2, 2)", lambda: jm.margin_loss(EMB, LAB, jnp.ones((2, 2))),
           ValueError, r"`beta` must be a scalar or a \(num_classes,\) array; got shape \(2, 2\)", "wrong rank"),
        _c("pnp_loss", "variant='X'", lambda: jm.pnp_loss(EMB, LAB, variant="X"), ValueError, r"`variant` must be one of .*got 'X'", "unknown option"),
        _c("fast_ap_loss", "num_bins=0", lambda: jm.fast_ap_loss(EMB, LAB, num_bins=0), ValueError, r"`num_bins` must be >= 1; got 0", "non-positive hyperparameter"),
        _c("histogram_loss", "n_bins=0", lambda: jm.histogram_loss(EMB, LAB, n_bins=0), ValueError, r"`n_bins` must be >= 1; got 0", "non-positive hyperparameter"),
        _c("histogram_loss", "delta=0", lambda: jm.histogram_loss(EMB, LAB, delta=0.0), ValueError, r"`delta` must be a positive .*got 0", "non-positive hyperparameter"),
        _c("dynamic_soft_margin_loss", "state of another size", lambda: jm.dynamic_soft_margin_loss(EMB, LAB, jm.init_dynamic_soft_margin_state(5)),
           ValueError, r"`state.hist` must be a float array of shape \(10,\).*got shape \(5,\)", "wrong shape"),
        _c("dynamic_soft_margin_loss", "state=None", lambda: jm.dynamic_soft_margin_loss(EMB, LAB, None),
           TypeError, r"`state` must be a DynamicSoftMarginState.*got NoneType", "wrong type"),
        _c("dynamic_soft_margin_loss", "momentum=2", lambda: jm.dynamic_soft_margin_loss(EMB, LAB, jm.init_dynamic_soft_margin_state(), momentum=2.0),
           ValueError, r"`momentum` must be in \[0, 1\]; got 2.0", "other"),
        _c("manifold_loss", "meta-class id 8 for 8 proxies", lambda: jm.manifold_loss(EMB, LAB.at[0].set(C), W),
           ValueError, rf"`meta_classes` must be ids in \[0, {C}\).*got value {C}", "float or negative class ids"),
        _c("manifold_loss", "proxies of another dim", lambda: jm.manifold_loss(EMB, LAB, W[:, :2]),
           ValueError, rf"`proxies` must have shape \(K, {D}\).*got shape \({C}, 2\)", "wrong shape"),
        _c("multi_supcon_loss", "threshold=1.5", lambda: jm.multi_supcon_loss(EMB, MH, threshold=1.5),
           ValueError, r"`threshold` must be in \[0, 1\]; got 1.5", "other"),
        _c("vicreg_loss", "ref_emb=None", lambda: jm.vicreg_loss(EMB, None), ValueError, r"`ref_emb` .* is required; got None", "other"),
        _c("clip_loss", "log_temperature of shape (2,)", lambda: jm.clip_loss(EMB, EMB, jnp.zeros(2)),
           ValueError, r"`log_temperature` must be a scalar; got shape \(2,\)", "wrong rank"),
        _c("siglip_loss", "integer bias", lambda: jm.siglip_loss(EMB, EMB, jnp.asarray(1.0), jnp.asarray(1)),
           TypeError, r"`bias` must be a float scalar; got dtype int", "wrong dtype"),
        # class matrices
        _c("arcface_loss", "weights of another dim", lambda: jm.arcface_loss(EMB, LAB, W[:, :2]),
           ValueError, rf"`weights` must have shape \(num_classes, {D}\).*got shape \({C}, 2\)", "wrong shape"),
        _c("arcface_loss", "class id 8 for 8 classes", lambda: jm.arcface_loss(EMB, LAB.at[0].set(C), W),
           ValueError, rf"`labels` must be class ids in \[0, {C}\).*got value {C}", "float or negative class ids"),
        _c("proxy_anchor_loss", "integer weights", lambda: jm.proxy_anchor_loss(EMB, LAB, W.astype(jnp.int32)),
           TypeError, r"`weights` must have a floating dtype.*int32", "wrong dtype"),
        _c("soft_triple_loss", "centers_per_class=3 for (8, 2, 4) weights", lambda: jm.soft_triple_loss(EMB, LAB, jnp.zeros((C, 2, D)), centers_per_class=3),
           ValueError, r"`centers_per_class` must equal the 2 centers per class of `weights` \(shape \(8, 2, 4\)\); got 3", "wrong shape"),
        _c("large_margin_softmax_loss", "margin=2.5", lambda: jm.large_margin_softmax_loss(EMB, LAB, W, margin=2.5),
           ValueError, r"`margin` must be a positive integer.*got 2.5", "other"),
        _c("dynamic_arcface_loss", "class_counts with a 0", lambda: jm.dynamic_arcface_loss(EMB, LAB, W3, jnp.zeros(C)),
           ValueError, r"`class_counts` must all be > 0", "non-positive hyperparameter"),
        _c("dynamic_arcface_loss", "class_counts for 3 classes", lambda: jm.dynamic_arcface_loss(EMB, LAB, W3, jnp.ones(3)),
           ValueError, rf"`class_counts` must have one entry per class \({C} = weights.shape\[0\]\); got shape \(3,\)", "wrong shape"),
        _c("subcenter_arcface_outliers", "weights of another dim", lambda: jm.subcenter_arcface_outliers(EMB, LAB, jnp.zeros((C, 3, 2))),
           ValueError, rf"`weights` must have shape .*{D}.*got shape \({C}, 3, 2\)", "wrong shape"),
        # regularizers and wrappers
        _c("sparse_centers_regularizer", "7 rows for 4 classes x 2 centers", lambda: jm.sparse_centers_regularizer(EMB[:7], 4, 2),
           ValueError, r"`x` must have num_classes \* centers_per_class = 8 rows; got shape \(7, 4\)", "wrong shape"),
        _c("sparse_centers_regularizer", "centers_per_class=1", lambda: jm.sparse_centers_regularizer(EMB, 8, 1),
           ValueError, r"`centers_per_class` must be an int > 1; got 1", "non-positive hyperparameter"),
        _c("with_embedding_regularizer", "regularizer=3", lambda: jm.with_embedding_regularizer(jm.contrastive_loss, 3),
           TypeError, r"`regularizer` must be callable; got int", "wrong type"),
        _c("multiple_losses", "losses=[]", lambda: jm.multiple_losses([]), ValueError, r"`losses` must not be empty; got \[\]", "other"),
        _c("multiple_losses", "weights of another length", lambda: jm.multiple_losses([jm.contrastive_loss], [1.0, 2.0]),
           ValueError, r"`weights` must be a sequence of length 1; got \[1.0, 2.0\]", "mismatched batch"),
        _c("multi_view_loss", "a single view", lambda: jm.multi_view_loss(jm.ntxent_loss, [EMB]),
           ValueError, r"`views` must hold at least 2 views; got 1", "other"),
        _c("multi_view_loss", "views of different batch sizes", lambda: jm.multi_view_loss(jm.ntxent_loss, [EMB, EMB[:-1]]),
           ValueError, rf"`views\[1\]` must have the shape of views\[0\], \({B}, {D}\); got shape \({B - 1}, {D}\)", "mismatched batch"),
        _c("multi_view_loss", "1-D view", lambda: jm.multi_view_loss(jm.ntxent_loss, [EMB, EMB[0]]),
           ValueError, rf"`views\[1\]` must be a 2-D float array.*\({D},\)", "wrong rank"),
        _c("cross_batch_memory_loss", "state=None", lambda: jm.cross_batch_memory_loss(jm.contrastive_loss, EMB, LAB, None),
           TypeError, r"`state` must be a CrossBatchMemoryState.*got NoneType", "wrong type"),
        _c("cross_batch_memory_loss", "embeddings of another dim", lambda: jm.cross_batch_memory_loss(jm.contrastive_loss, EMB[:, :2], LAB, jm.init_cross_batch_memory(16, D)),
           ValueError, rf"`embeddings` must have dim {D}.*got shape \({B}, 2\)", "wrong shape"),
        # helpers
        _c("pair_mask", "rule='all'", lambda: jm.pair_mask(LAB, rule="all"), ValueError, r"`rule` must be one of .*got 'all'", "unknown option"),
        _c("pair_mask", "3-D labels", lambda: jm.pair_mask(jnp.zeros((2, 2, 2), jnp.int32)), ValueError, r"`labels` must be class ids \[B\] or multi-hot.*\(2, 2, 2\)", "wrong rank"),
        _c("pair_mask", "float class ids", lambda: jm.pair_mask(LAB.astype(jnp.float32)), TypeError, r"`labels` as class ids must have an integer dtype.*float32", "float or negative class ids"),
        _c("pair_mask", "negative class ids", lambda: jm.pair_mask(LAB.at[0].set(-2)), ValueError, r"`labels` must be non-negative class ids.*-2", "float or negative class ids"),
        _c("from_indices", "a tuple of length 2", lambda: jm.from_indices((LAB, LAB), B), ValueError, r"`indices_tuple` must be \(a1, p, a2, n\) or \(a, p, n\); got a tuple of length 2", "wrong shape"),
        _c("from_indices", "float indices", lambda: jm.from_indices((LAB * 1.0, LAB, LAB), B), TypeError, r"`a` must be a 1-D integer index array.*float", "wrong dtype"),
        _c("from_indices", "index 16 with batch_size=16", lambda: jm.from_indices((jnp.asarray([0, 3]), jnp.asarray([1, 16]), jnp.asarray([0, 3]), jnp.asarray([2, 2])), 16),
           ValueError, r"`p` must hold indices in \[0, 16\) or -1 \(padding\); got 16 at position 1 \(batch_size = 16\)", "index out of range"),
        _c("from_indices", "index 99 for num_refs=16", lambda: jm.from_indices((jnp.asarray([0]), jnp.asarray([1]), jnp.asarray([99])), 8, 16),
           ValueError, r"`n` must hold indices in \[0, 16\) or -1 \(padding\); got 99 at position 0 \(num_refs = 16\)", "index out of range"),
        _c("from_indices", "negative index -2", lambda: jm.from_indices((jnp.asarray([0, -2]), jnp.asarray([1, 1]), jnp.asarray([2, 2])), B),
           ValueError, rf"`a` must hold indices in \[0, {B}\) or -1 \(padding\); got -2 at position 1 \(batch_size = {B}\)", "index out of range"),
        _c("from_indices", "p shorter than a1", lambda: jm.from_indices((jnp.asarray([0, 1]), jnp.asarray([1]), jnp.asarray([0]), jnp.asarray([2])), B),
           ValueError, r"`p` must have the length of `a1` \(2: one entry per pair or triplet\); got length 1", "mismatched batch"),
        _c("from_indices", "batch_size=0", lambda: jm.from_indices(INDICES_TUPLE, 0),
           ValueError, r"`batch_size` must be a positive int .*; got 0", "non-positive hyperparameter"),
        # weights: negative or non-finite ones are refused (when concrete)
        _c("bce_loss", "pos_weight=-1.0", lambda: jm.bce_loss(EMB, MH[:, :D], pos_weight=-1.0),
           ValueError, r"`pos_weight` must hold non-negative weights; got .*value -1.0", "negative or non-finite weight"),
        _c("bce_loss", "pos_weight with a NaN", lambda: jm.bce_loss(EMB, MH[:, :D], pos_weight=jnp.ones(D).at[1].set(jnp.nan)),
           ValueError, r"`pos_weight` must hold finite weights; got .*value nan", "negative or non-finite weight"),
        _c("bce_loss", "weight with an inf", lambda: jm.bce_loss(EMB, MH[:, :D], weight=jnp.ones(D).at[0].set(jnp.inf)),
           ValueError, r"`weight` must hold finite weights; got .*value inf", "negative or non-finite weight"),
        _c("bce_loss", "label_mask with 1.5", lambda: jm.bce_loss(EMB, MH[:, :D], label_mask=jnp.ones((B, D)).at[0, 0].set(1.5)),
           ValueError, r"`label_mask` must hold weights in \[0, 1\] \(0 = unknown\); got .*above 1", "negative or non-finite weight"),
        _c("focal_loss", "pos_weight=-1.0", lambda: jm.focal_loss(EMB, MH[:, :D], pos_weight=-1.0),
           ValueError, r"`pos_weight` must hold non-negative weights; got .*value -1.0", "negative or non-finite weight"),
        _c("focal_loss", "weight of shape (3,)", lambda: jm.focal_loss(EMB, MH[:, :D], weight=jnp.ones(3)),
           ValueError, rf"`weight` must have shape \(\) or \({D},\) or \({B}, {D}\) or \({B}, 1\); got shape \(3,\)", "wrong shape"),
        _c("cosface_loss", "sample_weights with an inf", lambda: jm.cosface_loss(EMB, LAB, W, sample_weights=jnp.ones(B).at[2].set(jnp.inf)),
           ValueError, r"`sample_weights` must hold finite weights; got .*value inf", "negative or non-finite weight"),
        _c("class_weighted", "weights with a NaN", lambda: jm.class_weighted(jnp.ones(3).at[0].set(jnp.nan)),
           ValueError, r"`weights` must hold finite weights; got .*value nan", "negative or non-finite weight"),
        _c("metrics.f1_score", "negative sample_weight", lambda: jm.metrics.f1_score(MH[:, :D], MH[:, :D], sample_weight=-jnp.ones(B)),
           ValueError, r"`sample_weight` must hold non-negative weights; got .*value -1.0", "negative or non-finite weight"),
        # a loss / mask combination that can never select a term
        _c("ntxent_loss", "paired_mask(other_pairs='ignore')", lambda: jm.ntxent_loss(EMB, jm.paired_mask(jnp.asarray([1, 0, 1, 1]), other_pairs="ignore")),
           ValueError, r"`labels_or_mask` can never select a term: .* got a PairMask with one_pair_per_anchor=True", "no term can be selected"),
        _c("supcon_loss", "paired_mask(layout='cross', other_pairs='ignore')", lambda: jm.supcon_loss(EMB, jm.paired_mask(jnp.ones(B, jnp.int32), layout="cross", other_pairs="ignore"), ref_emb=EMB),
           ValueError, r"`labels_or_mask` can never select a term: .* got a PairMask with one_pair_per_anchor=True", "no term can be selected"),
        _c("to_pairs", "an array", lambda: jm.to_pairs(LAB), TypeError, r"`mask` must be a PairMask or a TripletMask; got ArrayImpl", "wrong type"),
        _c("threshold", "no bound", lambda: jm.threshold(), ValueError, r"at least one of `low` and `high` must be given", "other"),
        _c("class_weighted", "2-D weights", lambda: jm.class_weighted(jnp.ones((2, 2))), ValueError, r"`weights` must be a 1-D array \[num_classes\]; got shape \(2, 2\)", "wrong rank"),
        _c("divisor", "value=-1", lambda: jm.divisor(-1.0), ValueError, r"`value` must be >= 0; got -1.0", "non-positive hyperparameter"),
        _c("per_anchor", "inner='none'", lambda: jm.per_anchor("none"), ValueError, r"`inner` must reduce to a scalar.*got 'none'", "unknown option"),
        _c("per_anchor", "inner='avg'", lambda: jm.per_anchor("avg"), ValueError, r"`reduction` must be one of .*got 'avg'", "unknown option"),
        _c("init_dynamic_soft_margin_state", "num_bins=0", lambda: jm.init_dynamic_soft_margin_state(0), ValueError, r"`num_bins` must be >= 1; got 0", "non-positive hyperparameter"),
        _c("init_manifold_proxies", "K=0", lambda: jm.init_manifold_proxies(jax.random.PRNGKey(0), 0, D), ValueError, r"`K` must be >= 1; got 0", "non-positive hyperparameter"),
        _c("manifold_meta_classes", "batch_size < K", lambda: jm.manifold_meta_classes(jax.random.PRNGKey(0), 2, 4), ValueError, r"`batch_size` must be >= K=4.*got 2", "other"),
        _c("init_class_weights", "kind='arc_face'", lambda: jm.init_class_weights(jax.random.PRNGKey(0), C, D, kind="arc_face"), ValueError, r"`kind` must be one of .*got 'arc_face'", "unknown option"),
        _c("init_class_weights", "num_classes=0", lambda: jm.init_class_weights(jax.random.PRNGKey(0), 0, D, kind="arcface"), ValueError, r"`num_classes` must be a positive int; got 0", "non-positive hyperparameter"),
        _c("class_logits", "kind='nope'", lambda: jm.class_logits(EMB, W, kind="nope"), ValueError, r"`kind` must be one of .*got 'nope'", "unknown option"),
        _c("dynamic_arcface_margins", "margin_bounds=(0.5, 0.1)", lambda: jm.dynamic_arcface_margins(jnp.ones(3), margin_bounds=(0.5, 0.1)), ValueError, r"`margin_bounds` must satisfy 0 <= low <= high; got \(0.5, 0.1\)", "other"),
        _c("init_clip_params", "temperature=0", lambda: jm.init_clip_params(0.0), ValueError, r"`temperature` must be > 0; got 0.0", "non-positive hyperparameter"),
        _c("init_siglip_params", "non-scalar t_prime", lambda: jm.init_siglip_params(np.zeros(2)), ValueError, r"`t_prime` must be a scalar; got shape \(2,\)", "wrong rank"),
        _c("init_cross_batch_memory", "memory_size=0", lambda: jm.init_cross_batch_memory(0, D), ValueError, r"`memory_size` must be a positive int; got 0", "non-positive hyperparameter"),
        _c("checkify_finite", "fn=None", lambda: jm.checkify_finite(None), TypeError, r"`fn` must be callable; got NoneType", "wrong type"),
        # miners
        _c("batch_easy_hard_miner", "pos_strategy='medium'", lambda: jm.batch_easy_hard_miner(EMB, LAB, pos_strategy="medium"),
           ValueError, r"`pos_strategy` and `neg_strategy` must each be one of .*got pos_strategy='medium'", "unknown option"),
        _c("batch_hard_miner", "allowed_pos_range=(1, 2, 3)", lambda: jm.batch_hard_miner(EMB, LAB, allowed_pos_range=(1, 2, 3)),
           ValueError, r"^batch_hard_miner: `allowed_pos_range`.*got", "wrong shape"),
        _c("triplet_margin_miner", "type_of_triplets='medium'", lambda: jm.triplet_margin_miner(EMB, LAB, type_of_triplets="medium"),
           ValueError, r"`type_of_triplets` must be one of .*got 'medium'", "unknown option"),
        _c("distance_weighted_miner", "no key", lambda: jm.distance_weighted_miner(EMB, LAB),
           ValueError, r"`key` .*is required.*got key=None", "other"),
        _c("uniform_histogram_miner", "num_bins=0", lambda: jm.uniform_histogram_miner(EMB, LAB, num_bins=0, key=jax.random.key(0)),
           ValueError, r"`num_bins` must be .*got 0", "non-positive hyperparameter"),
        _c("hdc_miner", "filter_percentage=1.5", lambda: jm.hdc_miner(EMB, LAB, filter_percentage=1.5),
           ValueError, r"`filter_percentage` must be in .*got 1.5", "other"),
        _c("embeddings_already_packaged_as_triplets", "8 rows (not a multiple of 3)", lambda: jm.embeddings_already_packaged_as_triplets(EMB),
           ValueError, r"`embeddings` must have a multiple of 3 rows.*got .*8", "wrong shape"),
        # multi-label losses and their helpers
        _c("bce_loss", "pos_weight for 3 labels", lambda: jm.bce_loss(EMB, MH[:, :D], pos_weight=jnp.ones(3)),
           ValueError, rf"`pos_weight` must have shape .*\({D},\).*got shape \(3,\)", "wrong shape"),
        _c("bce_loss", "label_mask of another shape", lambda: jm.bce_loss(EMB, MH[:, :D], label_mask=jnp.ones((B, 3), bool)),
           ValueError, rf"`label_mask` must have the shape of `logits` \({B}, {D}\); got shape \({B}, 3\)", "wrong mask shape"),
        _c("asymmetric_loss", "clip=-0.1", lambda: jm.asymmetric_loss(EMB, MH[:, :D], clip=-0.1),
           ValueError, r"`clip` must be >= 0 or None; got -0.1", "non-positive hyperparameter"),
        _c("focal_loss", "gamma=-1", lambda: jm.focal_loss(EMB, MH[:, :D], gamma=-1.0),
           ValueError, r"`gamma` must be >= 0; got -1.0", "non-positive hyperparameter"),
        _c("focal_loss", "alpha=2", lambda: jm.focal_loss(EMB, MH[:, :D], alpha=2.0),
           ValueError, r"`alpha` must be in \[0, 1\] \(None or a negative value disables it\); got 2.0", "other"),
        _c("asymmetric_loss", "gamma_neg=-1", lambda: jm.asymmetric_loss(EMB, MH[:, :D], gamma_neg=-1.0),
           ValueError, r"`gamma_neg` must be >= 0; got -1.0", "non-positive hyperparameter"),
        _c("hill_loss", "gamma=-2", lambda: jm.hill_loss(EMB, MH[:, :D], gamma=-2.0),
           ValueError, r"`gamma` must be >= 0; got -2.0", "non-positive hyperparameter"),
        _c("poly_bce_loss", "gamma=-1", lambda: jm.poly_bce_loss(EMB, MH[:, :D], gamma=-1.0),
           ValueError, r"`gamma` must be >= 0; got -1.0", "non-positive hyperparameter"),
        _c("arcface_loss", "scale='64'", lambda: jm.arcface_loss(EMB, LAB, W, scale="64"),
           TypeError, r"`scale` must be a number; got str '64'", "wrong type"),
        _c("LpDistance", "p=0", lambda: jm.LpDistance(p=0), ValueError, r"`p` must be a number > 0 \(or inf\); got 0", "non-positive hyperparameter"),
        _c("splc_loss", "tau=1.5", lambda: jm.splc_loss(EMB, MH[:, :D], tau=1.5),
           ValueError, r"`tau` \(a probability threshold\) must be in \(0, 1\); got 1.5", "other"),
        _c("splc_targets", "tau=0", lambda: jm.splc_targets(EMB, MH[:, :D], tau=0.0),
           ValueError, r"`tau` \(a probability threshold\) must be in \(0, 1\); got 0.0", "other"),
        _c("splc_targets", "targets of another shape", lambda: jm.splc_targets(EMB, MH[:, :3]),
           ValueError, rf"`targets` must have the shape of `logits` \({B}, {D}\); got shape \({B}, 3\)", "wrong shape"),
        _c("splc_targets", "targets with a 2", lambda: jm.splc_targets(EMB, MH[:, :D].at[0, 0].set(2)),
           ValueError, r"`targets` must hold only 0, 1 or -1 \(unknown\); got .*value 2", "multi-hot outside {0,1}"),
        _c("distribution_balanced_loss", "class_counts for 3 labels", lambda: jm.distribution_balanced_loss(EMB, MH[:, :D], jnp.ones(3), 10.0),
           ValueError, rf"`class_counts` must have shape \({D},\); got shape \(3,\)", "wrong shape"),
        _c("distribution_balanced_loss", "num_samples of shape (2,)", lambda: jm.distribution_balanced_loss(EMB, MH[:, :D], jnp.ones(D), jnp.ones(2)),
           ValueError, r"`num_samples` must be a scalar; got shape \(2,\)", "wrong rank"),
        _c("class_balanced_weights", "2-D counts", lambda: jm.class_balanced_weights(jnp.ones((2, 2))),
           ValueError, r"`class_counts` must be a 1-D array \[num_classes\]; got shape \(2, 2\)", "wrong rank"),
        _c("class_balanced_weights", "beta=1", lambda: jm.class_balanced_weights(jnp.ones(3), beta=1.0),
           ValueError, r"`beta` must be in \[0, 1\); got 1.0", "other"),
        _c("pos_weight_from_counts", "2-D counts", lambda: jm.pos_weight_from_counts(jnp.ones((2, 2)), 10),
           ValueError, r"`pos_counts` must be a 1-D array \[num_classes\]; got shape \(2, 2\)", "wrong rank"),
        _c("pos_weight_from_counts", "num_samples of shape (2,) for 3 labels", lambda: jm.pos_weight_from_counts(jnp.ones(3), jnp.ones(2)),
           ValueError, r"`num_samples` must be a scalar or have shape \(3,\); got shape \(2,\)", "mismatched batch"),
        _c("paired_mask", "pair labels with a 2", lambda: jm.paired_mask(jnp.array([0, 1, 2])),
           ValueError, r"`pair_labels` must hold only 0 and 1; got shape \(3,\) with value 2", "multi-hot outside {0,1}"),
        _c("paired_mask", "other_pairs='x'", lambda: jm.paired_mask(jnp.array([1, 0, 1]), other_pairs="x"),
           ValueError, r"`other_pairs` must be one of .*got 'x'", "unknown option"),
        _c("paired_mask", "layout='x'", lambda: jm.paired_mask(jnp.array([1, 0, 1]), layout="x"),
           ValueError, r"`layout` must be one of .*got 'x'", "unknown option"),
        _c("load_arff", "label_location='middle'", lambda: jm.load_arff(__file__, num_labels=1, label_location="middle"),
           ValueError, r"`label_location` must be 'end' or 'start'; got 'middle'", "unknown option"),
        _c("load_arff", "neither num_labels nor label_names", lambda: jm.load_arff(__file__),
           ValueError, r"give `num_labels` .* or `label_names`.*; got neither", "other"),
        # retrieval metrics (host side)
        _c("evaluation.precision_at_1", "1-D query", lambda: ev.precision_at_1(q[0], ql), ValueError, r"`query` must be a 2-D float array.*\(4,\)", "wrong rank"),
        _c("evaluation.precision_at_1", "labels for 7 rows", lambda: ev.precision_at_1(q, ql[:-1]), ValueError, rf"`query_labels` must be class ids \[{B}\] or multi-hot.*got shape \({B - 1},\)", "mismatched batch"),
        _c("evaluation.precision_at_1", "float class ids", lambda: ev.precision_at_1(q, ql * 1.0), TypeError, r"`query_labels` as class ids must have an integer dtype.*float", "float or negative class ids"),
        _c("evaluation.precision_at_1", "negative class ids", lambda: ev.precision_at_1(q, np.where(ql == 0, -1, ql)), ValueError, r"`query_labels` must be non-negative class ids.*-1", "float or negative class ids"),
        _c("evaluation.recall_at_k", "k=0", lambda: ev.recall_at_k(q, ql, k=0), ValueError, r"`recall_ks` must be a non-empty sequence of ints >= 1; got \(0,\)", "non-positive hyperparameter"),
        _c("evaluation.get_accuracy", "include=('P@1',)", lambda: ev.get_accuracy(q, ql, include=("P@1",)), ValueError, r"`include` must contain only .*got \['P@1'\]", "unknown option"),
        _c("evaluation.get_accuracy", "k=0", lambda: ev.get_accuracy(q, ql, k=0, exclude=("NMI", "AMI")), ValueError, r"`k` must be None, 'max_bin_count' or an int > 0; got 0", "non-positive hyperparameter"),
        _c("evaluation.get_accuracy", "knn_backend='annoy'", lambda: ev.get_accuracy(q, ql, knn_backend="annoy"), ValueError, r"`knn_backend` must be one of .*got 'annoy'", "unknown option"),
        _c("evaluation.retrieval_metrics", "reference of another dim", lambda: ev.retrieval_metrics(q, ql, q[:, :2], ql), ValueError, rf"`reference` must have dim {D} like `query`; got shape \({B}, 2\)", "wrong shape"),
        _c("evaluation.r_precision", "multi-hot with a 2", lambda: ev.r_precision(q, np.asarray(MH.at[0, 0].set(2))), ValueError, r"`query_labels` as multi-hot must hold only 0 and 1.*2", "multi-hot outside {0,1}"),
        _c("evaluation.mean_average_precision_at_r", "3-D query", lambda: ev.mean_average_precision_at_r(q[None], ql), ValueError, r"`query` must be a 2-D float array", "wrong rank"),
        _c("evaluation.mean_average_precision", "integer query", lambda: ev.mean_average_precision(q.astype(np.int32), ql), TypeError, r"`query` must have a floating dtype.*int32", "wrong dtype"),
        _c("evaluation.mean_reciprocal_rank", "labels for 7 rows", lambda: ev.mean_reciprocal_rank(q, ql[:-1]), ValueError, rf"`query_labels` must be class ids \[{B}\] or multi-hot.*got shape \({B - 1},\)", "mismatched batch"),
        _c("evaluation.nmi", "labels for 7 rows", lambda: ev.nmi(q, ql[:-1]), ValueError, rf"`query_labels` must be class ids \[{B}\] or multi-hot.*got shape \({B - 1},\)", "mismatched batch"),
        _c("evaluation.ami", "1-D query", lambda: ev.ami(q[0], ql), ValueError, r"`query` must be a 2-D float array", "wrong rank"),
        _c("evaluation.knn", "k=0", lambda: ev.knn(EMB, EMB, k=0), ValueError, r"`k` must be an int in \[1, 8\].*got 0", "non-positive hyperparameter"),
        _c("samplers.m_per_class_batches", "m=0", lambda: next(iter(jm.samplers.m_per_class_batches(ql, 0, 8))), ValueError, r"`batch_size` must be a positive multiple of `m`; got batch_size=8, m=0", "non-positive hyperparameter"),
        _c("samplers.m_per_label_batches", "multi-hot with a 2", lambda: next(iter(jm.samplers.m_per_label_batches(np.asarray(MH.at[0, 0].set(2)), 2, 8))), ValueError, r"`labels` as multi-hot must hold only 0 and 1; got value 2", "multi-hot outside {0,1}"),
    ]


def all_cases() -> list[Case]:
    cases = [c for e in ENTRIES for c in generic_cases(e)] + specific_cases()
    return cases


def covered_functions() -> set:
    return {c.fn for c in all_cases()}


# ----------------------------------------------------------------------------- docs/errors.md
_HEADER = """# Errors

Every public function validates its inputs while tracing (shapes, dtypes, options; the values
of concrete labels, indices and weights) and raises a `ValueError` (wrong shape or value) or
`TypeError` (wrong type or dtype) whose message names the function, the argument, what was
expected and what came. Nothing is broadcast, dropped or turned into a zero silently. This
page lists the bad inputs the test suite feeds to every public function (`tests/bad_inputs.py`)
and the message each one raises, verbatim. It is generated: run `python tests/bad_inputs.py`
after changing a message; `tests/test_bad_inputs.py` fails while it is out of date.

Class ids are integers `>= 0` (they also index class matrices in the classifier losses);
multi-hot labels hold only 0 and 1. Value checks (ranges, {0, 1}, non-negative weights) run
when the arrays are concrete; under `jit` only shapes and dtypes can be checked (a traced
out-of-range class id of a classifier loss, or a traced out-of-range index given to
`from_indices`, makes the loss NaN).

## Non-finite inputs: a NaN value, and an opt-in located check

A NaN or inf in any floating input of a loss, regularizer or wrapper -- embeddings, logits,
learned parameters and states, `ref_emb`, mask weights, a weight passed as an array -- makes
the returned value NaN, as in PyTorch and optax (a keyword hyperparameter passed as an array:
a NaN does; an infinite one can be a setting, such as `manifold_loss(lambdaC=inf)`). Inside a loss a bad row can
otherwise vanish from the value (a `max`, a `where`, a mask) while its gradient is NaN: the loss
curve would look healthy while the parameters become NaN. Under `axis_name` one device's bad
value makes the value NaN on every device. Finite inputs are unaffected (value and gradient).
Rows padded with `where=False` are inputs too: pad with zeros, not NaN. The range bounds
`lo`/`hi` of a margin-form `TripletMask` may be infinite (open ranges). Miners and metrics
return selections and scores, and leave the rule to the loss.

```python
import jax.numpy as jnp
import jaxmetric as jm

emb = jnp.ones((4, 3)).at[1, 2].set(jnp.nan)
print(jm.circle_loss(emb, jnp.array([0, 0, 1, 1])))  # nan
```

A NaN value says *that* an input was bad; `jaxmetric.checks.checkify_finite` says *where*. It
wraps any loss (or a whole train step) with `jax.experimental.checkify` checks that every
floating input is finite and that traced `from_indices` indices are in range; the error is
returned as a value, so the wrapped loss still runs under `jit`:

```python
import jax
import jax.numpy as jnp
import jaxmetric as jm

checked = jax.jit(jm.checks.checkify_finite(jm.contrastive_loss))
emb = jnp.ones((4, 3)).at[1, 2].set(jnp.nan)
err, loss = checked(emb, jnp.array([0, 0, 1, 1]))
print(err.get())  # contrastive_loss: `embeddings` must be finite (no NaN or inf); got nan at flat index 5 ...
try:
    err.throw()
except Exception as e:
    print(type(e).__name__)
```

## Any array type

Every array argument -- embeddings, labels, masks (the fields of a `PairMask` or
`TripletMask`), index tuples, learned parameters, weights -- may be a JAX array, a NumPy array,
a Python list or a torch CPU tensor (anything exposing `__array__` or `__dlpack__`; jaxmetric
never imports torch), with the value of the same JAX array, eagerly and under `jit`. A torch
tensor that requires grad needs `.detach()`. A list has no dtype: it becomes what `jnp.asarray`
makes of it (float64 floats when `jax_enable_x64` is on).

## PML index tuples

`jaxmetric.from_indices(indices_tuple, batch_size)` turns PML's `(a1, p, a2, n)` or `(a, p, n)`
into a mask. Every index must be in `[0, batch_size)` (positives and negatives: `[0, num_refs)`)
or -1, the padding of a static maximum length; elements that pair up have equal lengths. A
concrete index outside raises a `ValueError` naming the element, the index and the size (for
pairs concatenated as `jnp.concatenate([x1, x2])`, `batch_size` is `2 * len(x1)`). A traced one
(inside `jit`) makes every weight of the mask NaN, so the loss is NaN, never silently smaller;
`checkify_finite` around the function that calls `from_indices` turns it into a located error:

```python
import jax
import jax.numpy as jnp
import jaxmetric as jm

def step(emb, a, p, n):
    return jm.triplet_margin_loss(emb, jm.from_indices((a, p, n), emb.shape[0]))

emb = jnp.ones((4, 3))
a, p, n = jnp.array([0, 1]), jnp.array([1, 9]), jnp.array([2, 3])
print(jax.jit(step)(emb, a, p, n))  # nan: index 9 is out of range for 4 rows
err, loss = jax.jit(jm.checks.checkify_finite(step))(emb, a, p, n)
print(err.get())  # from_indices: `p` must hold indices in [0, 4) or -1 (padding); got 9 at position 1 ...
```

An index tuple where the labels go raises a `TypeError` naming
`jaxmetric.from_indices(indices_tuple, batch_size)`, and a mined mask passed as PML's third
positional argument (`loss(embeddings, labels, indices_tuple)`) one showing
`loss(embeddings, miner(embeddings, labels))`.

## Empty batches and selections that can never hold a term

An empty batch (an array of 0 rows) is a `ValueError` naming the function and the argument,
for every public function: shapes are static, so an empty batch is a bug of the caller, not a
step to skip. An empty *selection* -- every row masked by `where`, no positive pair in this
batch, nothing mined -- gives 0 with a zero gradient, as in PML. A loss and a mask that can
never select a term are refused while tracing: a mask with one pair per anchor by construction
(`paired_mask(..., other_pairs="ignore")`, `PairMask.one_pair_per_anchor`) given to a loss whose
every term compares a positive with a negative of the same anchor (`ntxent_loss`,
`supcon_loss`, `circle_loss`, the triplet, margin, tuplet-margin, AP and histogram losses)
would give 0 for every input.

## Weights

`pos_weight`, `weight` and `label_mask` of the multi-label losses, `sample_weights` of the
classifier losses, `class_weighted` weights, mask weights and the metrics' `sample_weight`
must be finite and non-negative (`label_mask` at most 1); a concrete bad value is refused. A
traced NaN or inf makes the value NaN, and so does a traced negative weight that multiplies the
losses (`pos_weight`, `weight`, `sample_weights`, `class_weighted`).

## The table

"""


def raised(case: Case) -> tuple[str, str]:
    """``(exception type name, first line of its message)`` raised by the case."""
    try:
        case.call()
    except Exception as e:  # noqa: BLE001 -- rendered as is; the test checks the type
        return type(e).__name__, str(e).splitlines()[0]
    return "(none)", "(no error raised)"


def _cell(text: str) -> str:
    text = text.replace("|", "\\|")
    return f"``{text}``" if "`" in text else f"`{text}`"


def render() -> str:
    lines = [_HEADER.rstrip("\n"), "", "| function | bad input | error | message |", "|---|---|---|---|"]
    for case in sorted(all_cases(), key=lambda c: (c.fn, c.category, c.what)):
        exc, msg = raised(case)
        lines.append(f"| `{case.fn}` | {case.what.replace('|', '/')} | `{exc}` | {_cell(msg)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    ERRORS_MD.write_text(render())
    print(f"wrote {ERRORS_MD}")
