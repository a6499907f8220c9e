"""The PML -> jaxmetric name table of the porting guide (rendered by ``docs/conf.py``).

Each row: PML name, candidate jaxmetric names (first = the name the design contract gives;
a dotted name is looked up under ``jaxmetric``; a plain name at the top level and in every
public submodule), and a note. The status column ("available" / "planned") is computed at
build time, so the table follows what is merged.
"""
from __future__ import annotations

import re
import types


def snake(name: str) -> str:
    """``ContrastiveLoss`` -> ``contrastive_loss`` (the contract's renaming rule)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def resolve_name(package, candidates) -> str | None:
    modules = [package] + [
        getattr(package, n) for n in getattr(package, "__all__", []) if isinstance(getattr(package, n, None), types.ModuleType)
    ]
    for cand in candidates:
        if "." in cand:
            obj = package
            for part in cand.split("."):
                obj = getattr(obj, part, None)
                if obj is None:
                    break
            if obj is not None:
                return f"{package.__name__}.{cand}"
            continue
        for mod in modules:
            if hasattr(mod, cand):
                return f"{mod.__name__}.{cand}"
    return None


_LOSSES = [
    ("AngularLoss", []),
    ("ArcFaceLoss", ["arcface_loss"]),
    ("CircleLoss", []),
    ("ContrastiveLoss", []),
    ("CosFaceLoss", ["cosface_loss"]),
    ("DynamicSoftMarginLoss", []),
    ("FastAPLoss", ["fast_ap_loss", "fastap_loss"]),
    ("GeneralizedLiftedStructureLoss", []),
    ("HistogramLoss", []),
    ("InstanceLoss", []),
    ("IntraPairVarianceLoss", []),
    ("LargeMarginSoftmaxLoss", []),
    ("LiftedStructureLoss", []),
    ("ManifoldLoss", []),
    ("MarginLoss", []),
    ("MultiSimilarityLoss", []),
    ("NCALoss", ["nca_loss"]),
    ("NormalizedSoftmaxLoss", []),
    ("NPairsLoss", ["n_pairs_loss", "npairs_loss"]),
    ("NTXentLoss", ["ntxent_loss"]),
    ("P2SGradLoss", ["p2s_grad_loss", "p2sgrad_loss"]),
    ("PNPLoss", ["pnp_loss"]),
    ("ProxyAnchorLoss", []),
    ("ProxyNCALoss", ["proxy_nca_loss"]),
    ("RankedListLoss", []),
    ("SignalToNoiseRatioContrastiveLoss", ["snr_contrastive_loss"]),
    ("SmoothAPLoss", ["smooth_ap_loss"]),
    ("SoftTripleLoss", []),
    ("SphereFaceLoss", ["sphereface_loss"]),
    ("SubCenterArcFaceLoss", ["sub_center_arcface_loss", "subcenter_arcface_loss"]),
    ("SupConLoss", ["supcon_loss"]),
    ("ThresholdConsistentMarginLoss", []),
    ("TripletMarginLoss", []),
    ("TupletMarginLoss", []),
    ("VICRegLoss", ["vicreg_loss"]),
]

_MINERS = [
    ("AngularMiner", []),
    ("BatchEasyHardMiner", []),
    ("BatchHardMiner", []),
    ("DistanceWeightedMiner", []),
    ("HDCMiner", ["hdc_miner"]),
    ("MultiSimilarityMiner", []),
    ("PairMarginMiner", []),
    ("TripletMarginMiner", []),
    ("UniformHistogramMiner", []),
]

_REGULARIZERS = [
    ("LpRegularizer", []),
    ("ZeroMeanRegularizer", []),
    ("CenterInvariantRegularizer", []),
    ("RegularFaceRegularizer", []),
    ("SparseCentersRegularizer", []),
]

PORTING_ROWS: list[tuple[str, list[str], str]] = []
for _name, _cands in _LOSSES:
    PORTING_ROWS.append((_name, _cands or [snake(_name)], "same hyperparameter names and defaults"))
for _name, _cands in _MINERS:
    PORTING_ROWS.append((_name, _cands or [snake(_name)], "returns a `PairMask` / `TripletMask`"))
for _name, _cands in _REGULARIZERS:
    PORTING_ROWS.append((_name, _cands or [snake(_name)], "a function; add its value to the loss"))
PORTING_ROWS += [
    ("LpDistance", ["LpDistance"], "frozen dataclass, same arguments"),
    ("CosineSimilarity", ["CosineSimilarity"], ""),
    ("DotProductSimilarity", ["DotProductSimilarity"], "normalises by default, as PML"),
    ("SNRDistance", ["SNRDistance"], ""),
    ("BatchedDistance", [], "losses and `evaluation` work in blocks themselves"),
    ("MeanReducer", [], '`reduction="mean"`'),
    ("SumReducer", [], '`reduction="sum"`'),
    ("AvgNonZeroReducer", [], '`reduction="avg_nonzero"`'),
    ("ThresholdReducer", ["threshold"], "`reduction=jm.threshold(low, high)`"),
    ("DoNothingReducer", [], '`reduction="none"`'),
    ("MultipleReducers / ClassWeightedReducer / PerAnchorReducer", [], '`reduction="none"` then reduce yourself, or a callable'),
    ("indices_tuple", ["from_indices"], "`jm.from_indices(indices_tuple, batch_size)` gives the mask"),
    ("lmu.get_all_pairs_indices", ["pair_mask"], "masks, not index tuples"),
    ("lmu.convert_to_pairs", ["to_pairs"], ""),
    ("MPerClassSampler", ["samplers.MPerClassSampler"], "plus `m_per_class_batches` (every class each epoch)"),
    ("HierarchicalSampler", ["samplers.HierarchicalSampler"], "`short_batches` keeps the batch size fixed"),
    ("FixedSetOfTriplets", ["samplers.FixedSetOfTriplets"], "`indices_tuple()` + `from_indices` give the mask"),
    ("TuplesToWeightsSampler", [], "not ported: mine offline with a miner, then sample with NumPy weights"),
    ("AccuracyCalculator", ["evaluation.AccuracyCalculator"], "or the function `evaluation.get_accuracy`"),
    ("CustomKNN / FaissKNN", ["evaluation.knn"], 'exact blockwise kNN in JAX; `knn_backend="faiss"` if installed'),
    ("DistributedLossWrapper", [], "`axis_name=` on the loss inside `shard_map` / `pmap`, then `pmean` the gradients"),
    ("CrossBatchMemory", ["cross_batch_memory"], "explicit state, passed in and returned"),
]
