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
    angular_loss,
    generalized_lifted_structure_loss,
    instance_loss,
    intra_pair_variance_loss,
    lifted_structure_loss,
    margin_loss,
    nca_loss,
    npairs_loss,
    ranked_list_loss,
    snr_contrastive_loss,
    threshold_consistent_margin_loss,
    tuplet_margin_loss,
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
    "angular_loss",
    "generalized_lifted_structure_loss",
    "instance_loss",
    "intra_pair_variance_loss",
    "lifted_structure_loss",
    "margin_loss",
    "nca_loss",
    "npairs_loss",
    "ranked_list_loss",
    "snr_contrastive_loss",
    "threshold_consistent_margin_loss",
    "tuplet_margin_loss",
    "distances",
    "masks",
    "reduce",
]
