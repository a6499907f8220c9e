"""Loss functions, one module per family."""
from jaxmetric.losses.pair_based import (
    circle_loss,
    contrastive_loss,
    multi_similarity_loss,
    ntxent_loss,
    supcon_loss,
)
from jaxmetric.losses.triplet_based import triplet_margin_loss
from jaxmetric.losses.angle_based import angular_loss, tuplet_margin_loss
from jaxmetric.losses.lifted import generalized_lifted_structure_loss, lifted_structure_loss
from jaxmetric.losses.margin_based import margin_loss, ranked_list_loss
from jaxmetric.losses.pair_margin import (
    intra_pair_variance_loss,
    snr_contrastive_loss,
    threshold_consistent_margin_loss,
)
from jaxmetric.losses.softmax_based import instance_loss, nca_loss, npairs_loss

__all__ = [
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
]
