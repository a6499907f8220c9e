"""Loss functions, one module per family."""
from jaxmetric.losses.pair_based import (
    circle_loss,
    contrastive_loss,
    multi_similarity_loss,
    ntxent_loss,
    supcon_loss,
)
from jaxmetric.losses.triplet_based import triplet_margin_loss

__all__ = [
    "circle_loss",
    "contrastive_loss",
    "multi_similarity_loss",
    "ntxent_loss",
    "supcon_loss",
    "triplet_margin_loss",
]
