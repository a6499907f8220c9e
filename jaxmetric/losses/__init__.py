"""Loss functions, one module per family."""
from jaxmetric.losses.contrastive import (
    contrastive_loss,
    dcl_loss,
    dclw_loss,
    multi_supcon_loss,
    ntxent_loss,
    snr_contrastive_loss,
    supcon_loss,
)
from jaxmetric.losses.pair_based import (
    circle_loss,
    intra_pair_variance_loss,
    multi_similarity_loss,
    threshold_consistent_margin_loss,
)
from jaxmetric.losses.triplet_based import triplet_margin_loss
from jaxmetric.losses.angular import angular_loss
from jaxmetric.losses.tuplet_margin import tuplet_margin_loss
from jaxmetric.losses.margin_based import margin_loss, ranked_list_loss
from jaxmetric.losses.lifted import generalized_lifted_structure_loss, lifted_structure_loss
from jaxmetric.losses.histogram import (
    DynamicSoftMarginState,
    dynamic_soft_margin_loss,
    histogram_loss,
    init_dynamic_soft_margin_state,
)
from jaxmetric.losses.listwise import fast_ap_loss, pnp_loss, smooth_ap_loss
from jaxmetric.losses.manifold import init_manifold_proxies, manifold_loss, manifold_meta_classes
from jaxmetric.losses.softmax_based import instance_loss, nca_loss, npairs_loss
from jaxmetric.losses.clip import clip_loss, init_clip_params, init_siglip_params, siglip_loss
from jaxmetric.losses.self_supervised import barlow_twins_loss, vicreg_loss
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
from jaxmetric.losses.multilabel import (
    asymmetric_loss,
    bce_loss,
    class_balanced_weights,
    distribution_balanced_loss,
    focal_loss,
    hill_loss,
    poly_bce_loss,
    pos_weight_from_counts,
    splc_loss,
    splc_targets,
    two_way_loss,
    zlpr_loss,
)

__all__ = [
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
    "barlow_twins_loss",
    "clip_loss",
    "dcl_loss",
    "dclw_loss",
    "init_clip_params",
    "init_siglip_params",
    "multi_supcon_loss",
    "siglip_loss",
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
    "asymmetric_loss",
    "bce_loss",
    "class_balanced_weights",
    "distribution_balanced_loss",
    "focal_loss",
    "hill_loss",
    "poly_bce_loss",
    "pos_weight_from_counts",
    "splc_loss",
    "splc_targets",
    "two_way_loss",
    "zlpr_loss",
]
