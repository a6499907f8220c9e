"""The registry of every public loss, miner, regularizer and metric, for the property battery
(tests/test_battery.py) and the bad-input table (tests/test_bad_inputs.py).

An :class:`Entry` says how to call a function on a batch: ``build(emb, labels)`` turns an
embedding batch ``[B, D]`` and class ids ``[B]`` into the positional arguments (learned
parameters and state included; they are fixed, made from a seed), and the metadata says which
arguments carry the batch, which are differentiated, and which properties apply. A property
that does not apply is a string saying why (never a silent ``False``).

Adding a function is one entry; the helpers :func:`pair_entry`, :func:`classifier_entry`,
:func:`two_view_entry`, :func:`miner_entry`, :func:`multilabel_entry` and
:func:`metric_entry` cover the common signatures. ``tests/test_registry.py`` fails when a
public function is neither here, nor in :data:`HELPERS` (with a reason), nor in
:data:`PENDING`.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxmetric as jm

B, D = 8, 4  # battery batch and embedding dim (labels are class ids in [0, B))
C = 8  # classes of learned class matrices (C >= B, so "all classes distinct" is possible)
M = 16  # cross-batch memory slots

_PARAMS = np.random.default_rng(1234)


def _param(*shape, scale=1.0):
    return jnp.asarray(_PARAMS.normal(size=shape) * scale, jnp.float32)


def second_view(emb):
    """A second view of each row, computed row by row (so slicing and permuting the batch
    commute with it): zero rows stay zero, duplicates stay duplicates."""
    return 0.8 * emb + 0.3 * jnp.roll(emb, 1, axis=1)


def multi_hot(labels, num=C):
    """Multi-hot rows from class ids: label ``y`` and, for odd ``y``, also ``(y + 1) % num``."""
    y = jnp.asarray(labels) % num
    one = jax.nn.one_hot(y, num, dtype=jnp.int32)
    two = jax.nn.one_hot((y + 1) % num, num, dtype=jnp.int32) * (y % 2 == 1)[:, None].astype(jnp.int32)
    return jnp.maximum(one, two)


def _rows(out, p):
    return jax.tree_util.tree_map(lambda x: x[p], out)


def _pairs(out, p):
    def f(x):
        x = x[p][:, p]
        return x[:, :, p] if x.ndim == 3 else x

    return jax.tree_util.tree_map(f, out)


@dataclasses.dataclass(frozen=True)
class Entry:
    """How the battery calls one public function.

    Attributes:
      name: the public name (``"evaluation.r_precision"`` for a module's function).
      fn: the public callable.
      build: ``(emb [B, D], labels [B] int32) -> tuple`` of positional arguments.
      static: keyword hyperparameters bound for the battery (non-default ones needed).
      call: the callable the battery runs (default: ``fn`` with ``static``); for factories
        (wrappers) the function they return.
      out: which part of the return value is the result (``0`` for ``(loss, state)``).
      out_kind: ``"scalar"`` (a loss), ``"rows"`` (one entry per batch row) or ``"pairs"``
        (a ``[B, B]``/``[B, B, B]`` selection: a PairMask or TripletMask).
      batch: positional arguments whose axis 0 is the batch (vmapped, sliced, permuted).
      diff: positional arguments differentiated (embeddings and learned parameters).
      labels_arg: position of the labels argument (class ids, multi-hot, or a mask), or None.
      label_kind: ``"any"`` (class ids, multi-hot or a mask), ``"ids_or_mask"`` (class ids or a
        mask, not multi-hot), ``"class_ids"`` (class ids only), ``"labels"`` (class
        ids or multi-hot, not a mask), ``"ids"`` (class ids in ``[0, num_classes)`` indexing a class
        matrix), ``"multi_hot"``, or None.
      where: True, or why ``where=`` is not supported.
      sliced: True, or why "masked equals sliced" does not apply although ``where`` does.
      smooth: True, or why ``check_grads`` does not apply.
      perm: True, or why the permutation property does not apply.
      single: True, or why a batch of one sample does not apply.
      lowp: True, or why the bf16/float16 check does not apply.
      lowp_tol: relative tolerance of the low-precision value against float32 on the
        unrounded inputs: ``{"bfloat16": .., "float16": ..}``.
      options: keyword options with a fixed set of values (``reduction``, ``distance``, ...)
        and their valid defaults, for the bad-input table.
      positive: keyword hyperparameters that must be > 0 (bad-input table).
      nonfinite: True (a NaN or inf in any floating argument gives a non-finite value, also
        from one device under ``axis_name``), or why not (selections and metrics).
    """

    name: str
    fn: Callable
    build: Callable[[jax.Array, jax.Array], tuple]
    static: dict = dataclasses.field(default_factory=dict)
    call: Callable | None = None
    out: Any = None
    out_kind: str = "scalar"
    batch: tuple = (0, 1)
    diff: tuple = (0,)
    labels_arg: int | None = 1
    label_kind: str | None = "any"
    where: bool | str = True
    sliced: bool | str = True
    smooth: bool | str = True
    perm: bool | str = True
    single: bool | str = True
    lowp: bool | str = True
    lowp_tol: dict = dataclasses.field(default_factory=lambda: {"bfloat16": 5e-2, "float16": 5e-3})
    options: tuple = ("reduction",)
    positive: tuple = ()
    nonfinite: bool | str = True

    def runner(self) -> Callable:
        """``f(*args, **kw)`` returning the result (``out`` applied)."""
        base = self.call if self.call is not None else (functools.partial(self.fn, **self.static) if self.static else self.fn)
        if self.out is None:
            return base
        sel = self.out

        @functools.wraps(base)
        def run(*args, **kw):
            return base(*args, **kw)[sel]

        return run

    def permute_out(self, out, p):
        if self.out_kind == "scalar":
            return out
        return _rows(out, p) if self.out_kind == "rows" else _pairs(out, p)


# --------------------------------------------------------------------------- entry helpers
def _ids(labels, num=C):
    return jnp.asarray(labels, jnp.int32) % num


def pair_entry(fn, **kw) -> Entry:
    """An embedding loss ``fn(embeddings, labels_or_mask, **static)``."""
    kw.setdefault("options", ("reduction", "distance"))
    return Entry(fn.__name__, fn, lambda e, y: (e, _ids(y)), **kw)


def classifier_entry(fn, weight_shape=(C, D), extra=(), **kw) -> Entry:
    """A proxy / classifier-head loss ``fn(embeddings, labels, weights, *extra)``."""
    w = _param(*weight_shape)
    kw.setdefault("diff", (0, 2))
    kw.setdefault("label_kind", "ids")
    return Entry(fn.__name__, fn, lambda e, y: (e, _ids(y), w, *extra), **kw)


def two_view_entry(fn, params=(), **kw) -> Entry:
    """A two-tower loss ``fn(x, y, *learned_scalars)``; ``y`` is :func:`second_view` of ``x``."""
    params = tuple(jnp.asarray(p, jnp.float32) for p in params)
    kw.setdefault("diff", tuple(range(2 + len(params))))
    kw.setdefault("labels_arg", None)
    kw.setdefault("label_kind", None)
    return Entry(fn.__name__, fn, lambda e, y: (e, second_view(e), *params), **kw)


def regularizer_entry(fn, **kw) -> Entry:
    kw.setdefault("batch", (0,))
    kw.setdefault("labels_arg", None)
    kw.setdefault("label_kind", None)
    return Entry(fn.__name__, fn, lambda e, y: (e,), **kw)


_MINER_GRAD = "a miner's output is a selection computed under stop_gradient: no gradient to check"
_SELECTION_LOWP = "a selection (argmax / thresholds on distances) may legitimately change with bf16 rounding"
_SELECTION_NONFINITE = "returns a selection (bool / count weights), not a value: the loss it feeds reports the NaN"


def miner_entry(fn, **kw) -> Entry:
    """A miner ``fn(embeddings, labels_or_mask, **static) -> PairMask | TripletMask``."""
    kw.setdefault("out_kind", "pairs")
    kw.setdefault("diff", ())
    kw.setdefault("smooth", _MINER_GRAD)
    kw.setdefault("lowp", _SELECTION_LOWP)
    kw.setdefault("options", ("distance",))
    kw.setdefault("nonfinite", _SELECTION_NONFINITE)
    return Entry(fn.__name__, fn, lambda e, y: (e, _ids(y)), **kw)


def multilabel_entry(fn, **kw) -> Entry:
    """A multi-label classification loss ``fn(logits [B, D], targets [B, D] multi-hot)``."""
    kw.setdefault("label_kind", "multi_hot")
    return Entry(fn.__name__, fn, lambda e, y: (e, multi_hot(y, D)), **kw)


def metric_entry(fn, name=None, scores=True, **kw) -> Entry:
    """A multi-label metric ``fn(y_true [B, D], y_score or y_pred [B, D])``."""
    kw.setdefault("diff", ())
    kw.setdefault("smooth", "a ranking/threshold metric: piecewise constant, no gradient")
    kw.setdefault("where", "metrics take sample_weight, not where")
    kw.setdefault("labels_arg", 0)
    kw.setdefault("label_kind", "multi_hot")
    kw.setdefault("options", ())
    kw.setdefault("lowp", "a ranking/threshold metric: bf16 rounding can change ranks and thresholds")
    kw.setdefault("nonfinite", "an evaluation metric on ranks and thresholds, not a loss (sklearn's behaviour)")
    pred = (lambda e: e) if scores else (lambda e: (e > 0).astype(jnp.int32))
    return Entry(name or f"metrics.{fn.__name__}", fn, lambda e, y: (multi_hot(y, D), pred(e)), **kw)


# --------------------------------------------------------------------------- the registry
_STOPGRAD = "stop_gradient inside by design ({}): the analytic gradient is not the numerical derivative"
_PROXIES = _param(C, D)
_SUBCENTERS = _param(C, 3, D)
_DSML_STATE = jm.DynamicSoftMarginState(jnp.asarray(np.full(10, 0.1), jnp.float32))
_XBM = jm.init_cross_batch_memory(M, D)
_TEMPERATURE = ("temperature",)
_ORDER = "order-dependent by definition, as in PML ({})"
_DRAW = "a random draw with a fixed key: which pairs are drawn depends on the row order and B ({})"
_DB_COUNTS = jnp.asarray([40.0, 25.0, 10.0, 3.0], jnp.float32)  # per-label positives of D = 4 labels


def _packaged_triplets(embeddings, where=None):
    """:func:`jaxmetric.embeddings_already_packaged_as_triplets` on the first 6 of the 8 rows
    (its batch must be a multiple of 3)."""
    if where is not None and jnp.shape(where) == (B,):  # a wrongly shaped `where` goes through, to be rejected
        where = where[:6]
    return jm.embeddings_already_packaged_as_triplets(embeddings[:6], where=where)

ENTRIES: list[Entry] = [
    # --- pair- and triplet-based embedding losses (embeddings, labels_or_mask)
    pair_entry(jm.contrastive_loss),
    pair_entry(jm.triplet_margin_loss),
    pair_entry(jm.multi_similarity_loss, positive=("alpha", "beta")),
    pair_entry(jm.circle_loss, smooth=_STOPGRAD.format("the circle weights, as the paper and PML"), positive=("gamma",)),
    pair_entry(jm.ntxent_loss, positive=_TEMPERATURE),
    pair_entry(jm.supcon_loss, positive=_TEMPERATURE),
    pair_entry(jm.angular_loss, positive=("alpha",)),
    pair_entry(jm.lifted_structure_loss),
    pair_entry(jm.generalized_lifted_structure_loss),
    pair_entry(jm.npairs_loss, label_kind="ids_or_mask", perm=_ORDER.format("one positive pair per class: the first in row order")),
    pair_entry(jm.instance_loss, label_kind="class_ids", positive=("gamma",),
               perm=_ORDER.format("the target column is the rank of the class among the batch's first occurrences")),
    pair_entry(jm.intra_pair_variance_loss),
    pair_entry(jm.snr_contrastive_loss),
    pair_entry(jm.tuplet_margin_loss, positive=("scale",)),
    pair_entry(jm.nca_loss, positive=("softmax_scale",)),
    pair_entry(jm.threshold_consistent_margin_loss),
    pair_entry(jm.ranked_list_loss, static=dict(margin=0.4, Tn=2.0)),
    Entry("margin_loss", jm.margin_loss, lambda e, y: (e, _ids(y), jnp.asarray(1.2, jnp.float32)), diff=(0, 2),
          options=("reduction", "distance", "triplets_per_anchor")),
    pair_entry(jm.fast_ap_loss, options=("reduction", "distance")),
    pair_entry(jm.smooth_ap_loss, positive=_TEMPERATURE),
    pair_entry(jm.pnp_loss, options=("reduction", "distance", "variant"), positive=("anneal",)),
    pair_entry(jm.histogram_loss),
    Entry("dynamic_soft_margin_loss", jm.dynamic_soft_margin_loss, lambda e, y: (e, _ids(y), _DSML_STATE), out=0,
          smooth=_STOPGRAD.format("the histogram update, a documented difference from PML"),
          options=("reduction", "distance")),
    pair_entry(jm.multi_supcon_loss, label_kind="labels", positive=_TEMPERATURE),
    Entry("manifold_loss", jm.manifold_loss, lambda e, y: (e, _ids(y), _PROXIES), diff=(0, 2), label_kind="ids",
          options=("reduction", "distance")),
    # --- proxy and classifier-head losses (embeddings, labels, weights)
    classifier_entry(jm.proxy_anchor_loss, positive=("alpha",), options=("reduction", "distance")),
    classifier_entry(jm.proxy_nca_loss, positive=("softmax_scale",), options=("reduction", "distance")),
    classifier_entry(jm.soft_triple_loss, (C, 2, D), positive=("la", "gamma"), options=("reduction", "distance")),
    classifier_entry(jm.normalized_softmax_loss, positive=_TEMPERATURE, options=("reduction", "distance")),
    classifier_entry(jm.arcface_loss, positive=("scale",)),
    classifier_entry(jm.cosface_loss, positive=("scale",)),
    classifier_entry(jm.subcenter_arcface_loss, (C, 3, D), positive=("scale",)),
    classifier_entry(jm.dynamic_arcface_loss, (C, 3, D), extra=(jnp.arange(1, C + 1) * 5,), positive=("scale",)),
    classifier_entry(jm.large_margin_softmax_loss, positive=("scale",)),
    classifier_entry(jm.sphereface_loss, positive=("scale",)),
    classifier_entry(jm.p2sgrad_loss, smooth=_STOPGRAD.format("straight-through renormalised weights, as PML's in-place renorm")),
    # --- two-view and image-text losses (x, y, learned scalars)
    two_view_entry(jm.vicreg_loss, positive=("eps",)),
    two_view_entry(jm.barlow_twins_loss, positive=("eps",), options=()),
    two_view_entry(jm.dcl_loss, positive=_TEMPERATURE),
    two_view_entry(jm.dclw_loss, positive=("temperature", "sigma")),
    two_view_entry(jm.clip_loss, params=(np.log(0.07),), positive=("max_logit_scale",)),
    two_view_entry(jm.siglip_loss, params=(np.log(10.0), -10.0)),
    # --- regularizers (x [N, D])
    regularizer_entry(jm.lp_regularizer, positive=("p",)),
    regularizer_entry(jm.zero_mean_regularizer),
    regularizer_entry(jm.center_invariant_regularizer),
    regularizer_entry(jm.regular_face_regularizer),
    regularizer_entry(
        jm.sparse_centers_regularizer, static=dict(num_classes=B // 2, centers_per_class=2),
        perm="rows are class-major centers (row index = class * K + center): permuting them changes the classes",
        sliced="rows are class-major centers: a slice of 5 rows is not num_classes * centers_per_class",
        single="needs num_classes * centers_per_class rows with centers_per_class > 1",
    ),
    # --- wrappers (their factories / loss_fn argument bound to a jaxmetric loss)
    Entry("with_embedding_regularizer", jm.with_embedding_regularizer, lambda e, y: (e, _ids(y)),
          call=jm.with_embedding_regularizer(jm.contrastive_loss, jm.lp_regularizer, 0.1), options=()),
    Entry("multiple_losses", jm.multiple_losses, lambda e, y: (e, _ids(y)),
          call=jm.multiple_losses([jm.contrastive_loss, jm.triplet_margin_loss], [1.0, 0.5]), options=()),
    Entry("self_supervised_loss", jm.self_supervised_loss, lambda e, y: (e, second_view(e)), diff=(0, 1),
          call=functools.partial(jm.self_supervised_loss, jm.ntxent_loss), labels_arg=None, label_kind=None, options=()),
    Entry("multi_view_loss", jm.multi_view_loss, lambda e, y: ([e, second_view(e)],), batch=(0,),
          call=functools.partial(jm.multi_view_loss, jm.ntxent_loss), labels_arg=None, label_kind=None, options=()),
    Entry("cross_batch_memory_loss", jm.cross_batch_memory_loss, lambda e, y: (e, _ids(y), _XBM), out=0,
          call=functools.partial(jm.cross_batch_memory_loss, jm.contrastive_loss), options=(), label_kind="labels",
          smooth=_STOPGRAD.format("the memory holds detached copies of the batch, as PML")),
    # --- miners (embeddings, labels_or_mask) -> PairMask | TripletMask
    miner_entry(jm.batch_hard_miner),
    miner_entry(jm.batch_easy_hard_miner),
    miner_entry(jm.triplet_margin_miner, options=("distance", "type_of_triplets")),
    miner_entry(jm.multi_similarity_miner),
    miner_entry(jm.pair_margin_miner),
    miner_entry(jm.angular_miner),
    miner_entry(jm.hdc_miner, perm=_ORDER.format("the pairs (a, b) and (b, a) tie in distance: which copy the top-k keeps follows the row order")),
    miner_entry(jm.distance_weighted_miner, static=dict(key=jax.random.key(0)),
                perm=_DRAW.format("one uniform draw per anchor"), sliced=_DRAW.format("the draw's shape is [B, B]")),
    miner_entry(jm.uniform_histogram_miner, static=dict(key=jax.random.key(0), num_bins=4, pos_per_bin=2, neg_per_bin=2),
                perm=_DRAW.format("draws indexed by pair rank"), sliced=_DRAW.format("the pairs drawn per bin depend on B")),
    Entry("embeddings_already_packaged_as_triplets", jm.embeddings_already_packaged_as_triplets, lambda e, y: (e,),
          call=_packaged_triplets, out_kind="pairs", batch=(0,), diff=(), labels_arg=None, label_kind=None,
          smooth=_MINER_GRAD, lowp=_SELECTION_LOWP, options=(), nonfinite=_SELECTION_NONFINITE,
          perm=_ORDER.format("rows (3i, 3i+1, 3i+2) are a triplet"),
          sliced="the batch size must be a multiple of 3 (5 real rows are not)",
          single="the batch size must be a multiple of 3"),
    # --- multi-label classification losses (logits [B, L], targets [B, L] multi-hot)
    multilabel_entry(jm.bce_loss),
    multilabel_entry(jm.focal_loss),
    multilabel_entry(jm.asymmetric_loss, smooth="`clip` shifts the negative probabilities with a hinge (max(p - clip, 0))"),
    multilabel_entry(jm.zlpr_loss),
    multilabel_entry(jm.two_way_loss, positive=("Tp", "Tn")),
    multilabel_entry(jm.hill_loss),
    multilabel_entry(jm.splc_loss, static=dict(epoch=2),
                     smooth=_STOPGRAD.format("the pseudo-labels are thresholded probabilities")),
    multilabel_entry(jm.poly_bce_loss),
    Entry("distribution_balanced_loss", jm.distribution_balanced_loss,
          lambda e, y: (e, multi_hot(y, D), _DB_COUNTS, jnp.asarray(100.0, jnp.float32)), label_kind="multi_hot"),
    # --- multi-label metrics (y_true [B, L], y_score or y_pred [B, L])
    metric_entry(jm.metrics.average_precision),
    metric_entry(jm.metrics.mean_average_precision, name="metrics.mean_average_precision"),
    metric_entry(jm.metrics.label_ranking_average_precision),
    metric_entry(jm.metrics.coverage_error),
    metric_entry(jm.metrics.label_ranking_loss),
    metric_entry(jm.metrics.one_error),
    metric_entry(jm.metrics.f1_score, scores=False),
    metric_entry(jm.metrics.f1, name="metrics.f1", scores=False),
    metric_entry(jm.metrics.hamming_loss, scores=False),
    metric_entry(jm.metrics.subset_accuracy, scores=False),
    # --- selections returned by losses' helpers
    Entry("subcenter_arcface_outliers", jm.subcenter_arcface_outliers, lambda e, y: (e, _ids(y), _SUBCENTERS),
          out=0, out_kind="rows", diff=(), label_kind="ids", smooth="returns a bool outlier mask: no gradient",
          lowp=_SELECTION_LOWP, options=(), nonfinite=_SELECTION_NONFINITE),
]

REGISTRY: dict[str, Entry] = {e.name: e for e in ENTRIES}
assert len(REGISTRY) == len(ENTRIES), "duplicate registry names"

# Host-side retrieval metrics (jaxmetric.evaluation): NumPy/Python-float results computed
# outside any trace, by design (PML's AccuracyCalculator). jit, vmap, gradients, where and
# mixed precision do not apply; the battery checks finite values on adversarial inputs and
# invariance under a permutation of the query set, and the bad-input table covers them.
HOST_METRICS = {
    "evaluation.precision_at_1": jm.evaluation.precision_at_1,
    "evaluation.r_precision": jm.evaluation.r_precision,
    "evaluation.mean_average_precision_at_r": jm.evaluation.mean_average_precision_at_r,
    "evaluation.mean_average_precision": jm.evaluation.mean_average_precision,
    "evaluation.mean_reciprocal_rank": jm.evaluation.mean_reciprocal_rank,
    "evaluation.recall_at_k": jm.evaluation.recall_at_k,
    "evaluation.retrieval_metrics": jm.evaluation.retrieval_metrics,
    "evaluation.get_accuracy": functools.partial(jm.evaluation.get_accuracy, exclude=("NMI", "AMI")),
    "evaluation.nmi": jm.evaluation.nmi,
    "evaluation.ami": jm.evaluation.ami,
}

# Public callables that are not losses, miners or metrics: constructors, initialisers,
# reducer factories and utilities. Each has its own tests; the bad-input table covers the
# ones that take user arrays.
HELPERS = {
    "pair_mask": "builds a PairMask from labels (tests/test_masks.py)",
    "from_indices": "converts a PML indices tuple to a mask (tests/test_masks.py)",
    "to_pairs": "converts a TripletMask to pairs (tests/test_masks.py)",
    "threshold": "reduction factory (tests/test_reduce.py)",
    "class_weighted": "reduction factory (tests/test_reducers_context.py)",
    "divisor": "reduction factory (tests/test_reducers_context.py)",
    "per_anchor": "reduction factory (tests/test_reducers_context.py)",
    "init_dynamic_soft_margin_state": "state initialiser",
    "init_manifold_proxies": "parameter initialiser",
    "manifold_meta_classes": "random meta-class assignment (PRNG key -> ids)",
    "init_class_weights": "parameter initialiser",
    "class_logits": "logits of a class-matrix head (tests/test_proxy_properties.py)",
    "dynamic_arcface_margins": "per-class margins from class counts",
    "init_clip_params": "parameter initialiser",
    "init_siglip_params": "parameter initialiser",
    "init_cross_batch_memory": "state initialiser",
    "checkify_finite": "wraps a loss with opt-in checkify checks of finite inputs (tests/test_checks.py)",
    "evaluation.knn": "exact k-nearest-neighbour search used by the metrics (tests/test_evaluation.py)",
    "class_balanced_weights": "per-class weights from counts (tests/test_multilabel_losses.py)",
    "pos_weight_from_counts": "per-class BCE positive weights from counts (tests/test_multilabel_losses.py)",
    "splc_targets": "SPLC's pseudo-labels, a thresholded selection (tests/test_multilabel_losses.py)",
    "paired_mask": "builds a PairMask from pair ids (tests/test_pair_rules.py)",
    "load_arff": "reads an ARFF file from disk (tests/test_datasets.py)",
}

# Names announced by branches that have not merged yet: they may be missing from the registry
# (the completeness test prints them). Empty on main: every public function is registered.
PENDING: set = set()

# Submodules whose public functions are metrics or miners (scanned as "<module>.<name>").
METRIC_MODULES = ("evaluation", "metrics", "miners")
LOSS_LIKE_SUFFIXES = ("_loss", "_miner", "_regularizer")


def public_functions() -> dict[str, Callable]:
    """Every public function: ``jaxmetric.__all__`` and the metric/miner submodules."""
    import inspect

    out = {}
    for name in jm.__all__:
        obj = getattr(jm, name)
        if callable(obj) and not inspect.isclass(obj) and not inspect.ismodule(obj):
            out[name] = obj
    for mod_name in METRIC_MODULES:
        mod = getattr(jm, mod_name, None)
        if mod is None:
            continue
        names = getattr(mod, "__all__", [n for n in vars(mod) if not n.startswith("_")])
        for name in names:
            obj = getattr(mod, name)
            routine = inspect.isroutine(obj) or hasattr(obj, "__wrapped__")  # jitted functions too
            if routine and getattr(obj, "__module__", "").startswith("jaxmetric"):
                # functions re-exported at the top level are known by their top-level name
                if not any(obj is getattr(jm, n, None) for n in jm.__all__):
                    out[f"{mod_name}.{name}"] = obj
    return out


def known_names() -> set:
    return set(REGISTRY) | set(HOST_METRICS) | set(HELPERS)
