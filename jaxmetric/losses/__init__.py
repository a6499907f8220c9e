"""Loss functions, one module per family."""
from jaxmetric.losses.pair_based import (
    circle_loss,
    contrastive_loss,
    multi_similarity_loss,
    ntxent_loss,
    supcon_loss,
)
from jaxmetric.losses.triplet_based import triplet_margin_loss
from jaxmetric.losses.contrastive import (
    barlow_twins_loss,
    clip_loss,
    dcl_loss,
    dclw_loss,
    init_clip_params,
    init_siglip_params,
    multi_supcon_loss,
    siglip_loss,
)

__all__ = [
    "circle_loss",
    "contrastive_loss",
    "multi_similarity_loss",
    "ntxent_loss",
    "supcon_loss",
    "triplet_margin_loss",
    "barlow_twins_loss",
    "clip_loss",
    "dcl_loss",
    "dclw_loss",
    "init_clip_params",
    "init_siglip_params",
    "multi_supcon_loss",
    "siglip_loss",
]
