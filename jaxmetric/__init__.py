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
from jaxmetric import regularizers, wrappers
from jaxmetric.losses import (
    barlow_twins_loss,
    clip_loss,
    dcl_loss,
    dclw_loss,
    init_clip_params,
    init_siglip_params,
    multi_supcon_loss,
    siglip_loss,
)
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
    "regularizers",
    "wrappers",
    "barlow_twins_loss",
    "clip_loss",
    "dcl_loss",
    "dclw_loss",
    "init_clip_params",
    "init_siglip_params",
    "multi_supcon_loss",
    "siglip_loss",
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
]
