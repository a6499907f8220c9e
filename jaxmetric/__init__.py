"""jaxmetric: deep-metric-learning and multi-label losses for JAX, as pure functions.

``loss = jaxmetric.circle_loss(embeddings, labels_or_mask)`` inside a ``jax.jit`` train step.
"""
from jaxmetric import distances, masks, reduce
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
    arcface_loss,
    class_logits,
    cosface_loss,
    dynamic_arcface_loss,
    dynamic_arcface_margins,
    init_class_weights,
    large_margin_softmax_loss,
    normalized_softmax_loss,
    p2sgrad_loss,
    proxy_anchor_loss,
    proxy_nca_loss,
    soft_triple_loss,
    sphereface_loss,
    subcenter_arcface_loss,
    subcenter_arcface_outliers,
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
    "proxy_anchor_loss",
    "proxy_nca_loss",
    "soft_triple_loss",
    "arcface_loss",
    "cosface_loss",
    "dynamic_arcface_loss",
    "dynamic_arcface_margins",
    "large_margin_softmax_loss",
    "normalized_softmax_loss",
    "p2sgrad_loss",
    "sphereface_loss",
    "subcenter_arcface_loss",
    "subcenter_arcface_outliers",
    "class_logits",
    "init_class_weights",
    "distances",
    "masks",
    "reduce",
]
