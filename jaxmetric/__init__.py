"""jaxmetric: deep-metric-learning and multi-label losses for JAX, as pure functions.

``loss = jaxmetric.circle_loss(embeddings, labels_or_mask)`` inside a ``jax.jit`` train step.
"""
from jaxmetric import checks, distances, evaluation, masks, reduce, samplers
from jaxmetric.checks import checkify_finite
from jaxmetric import losses as _losses
from jaxmetric.losses import *  # noqa: F403 -- every loss is re-exported flat; its list lives in losses/__init__.py
from jaxmetric.distances import (
    BaseDistance,
    CosineSimilarity,
    DotProductSimilarity,
    LpDistance,
    SNRDistance,
)
from jaxmetric.masks import PairMask, TripletMask, from_indices, pair_mask, to_pairs
from jaxmetric import miners
from jaxmetric.miners import *  # noqa: F403 -- every miner is re-exported flat; its list lives in miners.py
from jaxmetric.reduce import Reduction, threshold
from jaxmetric import regularizers, wrappers
from jaxmetric.reduce import class_weighted, divisor, per_anchor
from jaxmetric.regularizers import (
    center_invariant_regularizer,
    lp_regularizer,
    regular_face_regularizer,
    sparse_centers_regularizer,
    with_embedding_regularizer,
    zero_mean_regularizer,
)
from jaxmetric.wrappers import (
    CrossBatchMemoryState,
    cross_batch_memory_loss,
    init_cross_batch_memory,
    multi_view_loss,
    multiple_losses,
    self_supervised_loss,
)
from jaxmetric import datasets, metrics
from jaxmetric.masks import paired_mask
from jaxmetric.datasets import load_arff

__version__ = "0.1.0"

__all__ = [
    "BaseDistance",
    "CosineSimilarity",
    "DotProductSimilarity",
    "LpDistance",
    "SNRDistance",
    "PairMask",
    "TripletMask",
    "pair_mask",
    "from_indices",
    "to_pairs",
    "Reduction",
    "threshold",
    "distances",
    "masks",
    "reduce",
    "evaluation",
    "samplers",
    "regularizers",
    "wrappers",
    "class_weighted",
    "divisor",
    "per_anchor",
    "center_invariant_regularizer",
    "lp_regularizer",
    "regular_face_regularizer",
    "sparse_centers_regularizer",
    "with_embedding_regularizer",
    "zero_mean_regularizer",
    "CrossBatchMemoryState",
    "cross_batch_memory_loss",
    "init_cross_batch_memory",
    "multi_view_loss",
    "multiple_losses",
    "self_supervised_loss",
    "paired_mask",
    "load_arff",
    "datasets",
    "metrics",
    "miners",
    *miners.__all__,
    *_losses.__all__,
    "checks",
    "checkify_finite",
]
