"""axis_name for the two-view losses (VICReg, CLIP, SigLIP, multi-view SupCon, DCL, Barlow Twins):
shard_map steps (and for some cases pmap and vmap(axis_name) steps) with ``grads =
pmean(grads)`` equal the single-device step on the concatenated batch (value and gradient w.r.t.
a shared linear layer and the loss's own learned parameters; states too). The step check and the
data are tests/distributed_steps.py's.
"""
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from tests import distributed_steps as ds


def _vicreg_case():
    def f(p, x, x2, wh, axis_name=None):
        return jm.vicreg_loss(ds.emb(p, x), ds.emb(p, x2), where=wh, axis_name=axis_name)
    return f, ds.with_params(), ("x", "x2", "where")


def _multi_supcon_case():
    def f(p, x, m, wh, axis_name=None):
        return jm.multi_supcon_loss(ds.emb(p, x), m, where=wh, axis_name=axis_name, temperature=0.5)
    return f, ds.with_params(), ("x", "multi", "where")


CASES = {
    "vicreg": lambda: _vicreg_case(),
    "clip": lambda: ds.two_view_case(jm.clip_loss, {"lt": jnp.asarray(np.log(0.3))}),
    "clip-blocks": lambda: ds.two_view_case(jm.clip_loss, {"lt": jnp.asarray(np.log(0.3))}, block_size=3),
    "siglip": lambda: ds.two_view_case(jm.siglip_loss, {"tp": jnp.asarray(0.5), "bias": jnp.asarray(-1.0)}),
    "siglip-blocks": lambda: ds.two_view_case(jm.siglip_loss, {"tp": jnp.asarray(0.5), "bias": jnp.asarray(-1.0)}, block_size=3),
    "multi_supcon": lambda: _multi_supcon_case(),
    "dcl": lambda: ds.two_view_case(jm.dcl_loss, temperature=0.5),
    "dclw": lambda: ds.two_view_case(jm.dclw_loss, temperature=0.5),
    "barlow_twins": lambda: ds.two_view_case(jm.barlow_twins_loss, lambd=0.1),
}
# Every case runs under shard_map (whose typed collectives are the strict test of the
# psum-of-shares contract); these run under pmap and vmap(axis_name) too (compile time).
ALL_TRANSFORMS = {"vicreg", "clip", "siglip-blocks", "dclw"}


@pytest.mark.parametrize("name", list(CASES))
def test_axis_name_steps_equal_single_device(name):
    ds.check_steps(CASES[name](), aux=False, all_transforms=name in ALL_TRANSFORMS)


def test_errors_with_axis_name():
    with pytest.raises(ValueError, match="callable `reduction` cannot be combined with `axis_name`"):
        ds.run_mapped(lambda a, b: jm.vicreg_loss(a, a + 1.0, reduction=lambda l, w: l.sum(), axis_name="d"))
