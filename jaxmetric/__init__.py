"""jaxmetric: deep-metric-learning and multi-label losses for JAX, as pure functions.

``loss = jaxmetric.circle_loss(embeddings, labels_or_mask)`` inside a ``jax.jit`` train step.
"""
from jaxmetric import distances, evaluation, masks, reduce, samplers
from jaxmetric.distances import (
    BaseDistance,
    CosineSimilarity,
    DotProductSimilarity,
    LpDistance,
    SNRDistance,
)
from jaxmetric.losses import (
    circle_loss,
    contrastive_loss,
    multi_similarity_loss,
    ntxent_loss,
    supcon_loss,
    triplet_margin_loss,
)
from jaxmetric.losses import (
    DynamicSoftMarginState,
    dynamic_soft_margin_loss,
    fast_ap_loss,
    histogram_loss,
    init_dynamic_soft_margin_state,
    init_manifold_proxies,
    manifold_loss,
    manifold_meta_classes,
    pnp_loss,
    smooth_ap_loss,
    vicreg_loss,
)
from jaxmetric.masks import PairMask, TripletMask, from_indices, pair_mask, to_pairs
from jaxmetric.reduce import Reduction, threshold

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
    "circle_loss",
    "contrastive_loss",
    "multi_similarity_loss",
    "ntxent_loss",
    "supcon_loss",
    "triplet_margin_loss",
    "DynamicSoftMarginState",
    "dynamic_soft_margin_loss",
    "fast_ap_loss",
    "histogram_loss",
    "init_dynamic_soft_margin_state",
    "init_manifold_proxies",
    "manifold_loss",
    "manifold_meta_classes",
    "pnp_loss",
    "smooth_ap_loss",
    "vicreg_loss",
    "distances",
    "masks",
    "reduce",
    "evaluation",
    "samplers",
]
