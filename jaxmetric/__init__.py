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
from jaxmetric.masks import PairMask, TripletMask, from_indices, pair_mask, to_pairs
from jaxmetric import miners
from jaxmetric.miners import (
    angular_miner,
    batch_easy_hard_miner,
    batch_hard_miner,
    distance_weighted_miner,
    embeddings_already_packaged_as_triplets,
    hdc_miner,
    multi_similarity_miner,
    pair_margin_miner,
    triplet_margin_miner,
    uniform_histogram_miner,
)
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
    "distances",
    "masks",
    "reduce",
    "miners",
    "angular_miner",
    "batch_easy_hard_miner",
    "batch_hard_miner",
    "distance_weighted_miner",
    "embeddings_already_packaged_as_triplets",
    "hdc_miner",
    "multi_similarity_miner",
    "pair_margin_miner",
    "triplet_margin_miner",
    "uniform_histogram_miner",
]
