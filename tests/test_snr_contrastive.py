"""SNR contrastive loss: PML 2.9 parity (float64, value and gradients)."""
import pytest

import jaxmetric as jm
from loss_parity import parity_tests
from pml_utils import pml_losses, pml_reducers


pytestmark = pytest.mark.pml

# name -> (jaxmetric loss, PML class, [(jaxmetric kwargs, PML kwargs), ...] non-default settings)
LOSSES = {
    "snr": (jm.snr_contrastive_loss, pml_losses.SignalToNoiseRatioContrastiveLoss,
            [(dict(pos_margin=0.3, neg_margin=0.8, reduction="mean"),
              dict(pos_margin=0.3, neg_margin=0.8, reducer=pml_reducers.MeanReducer()))]),
}


(
    test_parity_labels_defaults_and_settings, test_parity_ref_emb,
    test_parity_miner_masks, test_parity_miner_mask_with_ref,
) = parity_tests(LOSSES, ref_emb=["snr"], miner_mask_with_ref=["snr"])
