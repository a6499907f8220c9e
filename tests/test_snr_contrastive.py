"""SNR contrastive loss: PML 2.9 parity (float64, value and gradients)."""
import pytest

import jaxmetric as jm
from loss_parity import parity_labels_defaults_and_settings, parity_miner_mask_with_ref, parity_miner_masks, parity_ref_emb
from pml_utils import pml_losses, pml_reducers


pytestmark = pytest.mark.pml

# name -> (jaxmetric loss, PML class, [(jaxmetric kwargs, PML kwargs), ...] non-default settings)
LOSSES = {
    "snr": (jm.snr_contrastive_loss, pml_losses.SignalToNoiseRatioContrastiveLoss,
            [(dict(pos_margin=0.3, neg_margin=0.8, reduction="mean"),
              dict(pos_margin=0.3, neg_margin=0.8, reducer=pml_reducers.MeanReducer()))]),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_parity_labels_defaults_and_settings(name):
    parity_labels_defaults_and_settings(*LOSSES[name])


@pytest.mark.parametrize("name", ["snr"])
def test_parity_ref_emb(name):
    parity_ref_emb(*LOSSES[name][:2])


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("miner", ["ms", "triplet"])
def test_parity_miner_masks(name, miner):
    parity_miner_masks(*LOSSES[name][:2], miner)


@pytest.mark.parametrize("name", ["snr"])
def test_parity_miner_mask_with_ref(name):
    parity_miner_mask_with_ref(*LOSSES[name][:2])
