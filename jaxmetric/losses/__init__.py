"""Loss functions, one module per family."""
from jaxmetric.losses.pair_based import (
    circle_loss,
    contrastive_loss,
    multi_similarity_loss,
    ntxent_loss,
    supcon_loss,
)
from jaxmetric.losses.triplet_based import triplet_margin_loss
from jaxmetric.losses.proxy import proxy_anchor_loss, proxy_nca_loss, soft_triple_loss
from jaxmetric.losses.classifier import (
    arcface_loss,
    cosface_loss,
    dynamic_arcface_loss,
    dynamic_arcface_margins,
    large_margin_softmax_loss,
    normalized_softmax_loss,
    p2sgrad_loss,
    sphereface_loss,
    subcenter_arcface_loss,
    subcenter_arcface_outliers,
)
from jaxmetric.losses.class_weights import class_logits, init_class_weights

__all__ = [
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
]
