"""axis_name for the ranking losses (FastAP, Smooth-AP, PNP) and the histogram and dynamic soft
margin losses: shard_map steps (and for some cases pmap and vmap(axis_name) steps) with ``grads
= pmean(grads)`` equal the single-device step on the concatenated batch (value and gradient
w.r.t. a shared linear layer and the loss's own learned parameters; states too). The step check
and the data are tests/distributed_steps.py's.
"""
import jax.numpy as jnp
import pytest

import jaxmetric as jm
from tests import distributed_steps as ds


def _dsm_case(**kw):
    state = jm.init_dynamic_soft_margin_state(10)

    def f(p, x, y, axis_name=None):
        loss, new = jm.dynamic_soft_margin_loss(ds.emb(p, x), y, state, axis_name=axis_name, **kw)
        return loss, new.hist
    return f, ds.with_params(), ("x", "y")


def _dsm_pairs_case():
    state = jm.DynamicSoftMarginState(jnp.full((10,), 0.1))

    def f(p, x, x2, wh, axis_name=None):
        loss, new = jm.dynamic_soft_margin_loss(ds.emb(p, x), None, state, ref_emb=ds.emb(p, x2), where=wh, axis_name=axis_name)
        return loss, new.hist
    return f, ds.with_params(), ("x", "x2", "where")


CASES = {
    "fast_ap": lambda: ds.labels_case(jm.fast_ap_loss, num_bins=6),
    "fast_ap-miner_output": lambda: ds.miner_output_case(jm.fast_ap_loss),
    "smooth_ap": lambda: ds.labels_where_case(jm.smooth_ap_loss, temperature=0.1),
    "smooth_ap-mask": lambda: ds.mask_case(jm.smooth_ap_loss, temperature=0.1),
    "pnp": lambda: ds.labels_where_case(jm.pnp_loss, anneal=0.1),
    "pnp-Ds": lambda: ds.labels_case(jm.pnp_loss, anneal=0.1, variant="Ds"),
    "histogram": lambda: ds.labels_where_case(jm.histogram_loss, n_bins=8),
    "histogram-mask": lambda: ds.mask_case(jm.histogram_loss, n_bins=8),
    "dynamic_soft_margin": lambda: _dsm_case(),
    "dynamic_soft_margin-blocks": lambda: _dsm_case(block_size=3),
    "dynamic_soft_margin-pairs": lambda: _dsm_pairs_case(),
}
# Every case runs under shard_map (whose typed collectives are the strict test of the
# psum-of-shares contract); these run under pmap and vmap(axis_name) too (compile time).
ALL_TRANSFORMS = {"smooth_ap", "histogram-mask", "dynamic_soft_margin"}
WITH_STATE = {"dynamic_soft_margin", "dynamic_soft_margin-blocks", "dynamic_soft_margin-pairs"}  # f returns (loss, new state)


@pytest.mark.parametrize("name", list(CASES))
def test_axis_name_steps_equal_single_device(name):
    ds.check_steps(CASES[name](), aux=name in WITH_STATE, all_transforms=name in ALL_TRANSFORMS)


def test_errors_with_axis_name():
    with pytest.raises(ValueError, match="callable `reduction` cannot be combined with `axis_name`"):
        ds.run_mapped(lambda a, b: jm.smooth_ap_loss(a, b, reduction=lambda l, w: l.sum(), axis_name="d"))
    state = jm.init_dynamic_soft_margin_state(10)
    with pytest.raises(ValueError, match="as many rows as `embeddings`"):
        ds.run_mapped(lambda a, b: jm.dynamic_soft_margin_loss(a, None, state, ref_emb=a[:2], axis_name="d")[0])
