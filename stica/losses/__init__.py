"""Contrastive losses of STiCA: eq. (1) NCE, cross-modal L_va, within-modal L_vv (the released
code's feature-crop pairs, or eq. 6 over all pairs), total (eq. 7)."""

from stica.losses.cross_modal import cross_modal_loss
from stica.losses.feature_crops import official_crop_loss, official_terms
from stica.losses.info_nce import info_nce
from stica.losses.total import MODES, multi_crop_loss, stica_loss
from stica.losses.within_modal import default_is_small, within_modal_loss

__all__ = [
    "MODES",
    "cross_modal_loss",
    "default_is_small",
    "info_nce",
    "multi_crop_loss",
    "official_crop_loss",
    "official_terms",
    "stica_loss",
    "within_modal_loss",
]
