"""The overall objective L = λ_vv·L_vv + λ_va·L_va (eq. 7) for every Table 1 ablation mode."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch

from stica.losses.cross_modal import cross_modal_loss
from stica.losses.feature_crops import official_crop_loss
from stica.losses.info_nce import info_nce
from stica.losses.within_modal import Views, default_is_small, within_modal_loss

Mode = Literal["default", "two_crops", "multi_crops", "feature_crops"]
MODES: tuple[str, ...] = ("default", "two_crops", "multi_crops", "feature_crops")


def multi_crop_loss(
    v1: torch.Tensor,
    v2: torch.Tensor,
    small: Sequence[torch.Tensor],
    temperature: float,
    *,
    detach_keys: bool = False,
) -> tuple[torch.Tensor, int]:
    """SwAV-style multi-crop within-modal loss (paper sec. 3.2, "Naïve multiple spatial cropping").

    ``L(L1, L2) + L(L2, L1) + Σ_S [L(L1, S) + L(L2, S)]`` over the small RGB crops S.

    Shape:
        - v1, v2, each small crop: (B, E)
        - output: (() scalar, number of terms = 2 + 2·len(small))
    """
    kw = {"detach_key": detach_keys}
    loss = info_nce(v1, v2, temperature, **kw) + info_nce(v2, v1, temperature, **kw)
    for s in small:
        loss = loss + info_nce(v1, s, temperature, **kw) + info_nce(v2, s, temperature, **kw)
    return loss, 2 + 2 * len(small)


def _with_full(full: torch.Tensor, crops: Views | None) -> Views:
    """T_i = {L_i} ∪ crops_i; a mapping that already has a "full" group is used as is."""
    if crops is None:
        return {"full": full}
    if isinstance(crops, Mapping):
        return crops if "full" in crops else {"full": full, **crops}
    return [(False, full), *crops]


def stica_loss(
    mode: Mode,
    a: torch.Tensor,
    v1: torch.Tensor,
    v2: torch.Tensor | None = None,
    *,
    crops1: Views | None = None,
    crops2: Views | None = None,
    small_rgb: Sequence[torch.Tensor] = (),
    lambda_va: float = 0.5,
    lambda_vv: float = 0.5,
    temperature_va: float = 0.1,
    temperature_vv: float = 0.5,
    vv_pairs: Literal["official", "all"] = "official",
    vv_reduction: Literal["sum", "mean"] = "mean",
    va_reduction: Literal["sum", "mean"] = "mean",
    stop_grad_keys: bool = True,
    is_small: Callable[[str], bool] = default_is_small,
) -> dict[str, torch.Tensor | int]:
    """Total loss of one step, with its components for logging.

    Modes (Table 1 ablations):
        - ``default``: one RGB crop, cross-modal only: ``λ_va L_va(v, a)``.
        - ``two_crops``: L_va over L1, L2 plus ``L_vv`` = L(L1, L2) and L(L2, L1).
        - ``multi_crops``: L_va over L1, L2 plus the SwAV-style :func:`multi_crop_loss` with the
          small RGB crops ``small_rgb``.
        - ``feature_crops``: L_va over L1, L2 plus the within-modal loss of the feature crops:
          ``vv_pairs="official"``, the released code's pairs
          (:func:`~stica.losses.feature_crops.official_crop_loss`, 12 terms for the paper-best
          crops); ``"all"``, eq. (6) over T_i = {L_i} ∪ ``crops_i`` (a "full" group in the crops
          stands for L_i itself).

    Args:
        mode: one of :data:`MODES`.
        a: audio embeddings.
        v1, v2: embeddings of the RGB crops L1, L2 (``v2`` unused in ``default``).
        crops1, crops2: feature-crop views of L1, L2 by group name (``"space_medium"``, ...).
        small_rgb: small RGB crop embeddings for ``multi_crops``.
        lambda_va, lambda_vv: mixing weights (paper: 0.5, 0.5).
        temperature_va, temperature_vv: τ of the cross- and within-modal terms (0.1, 0.5).
        vv_pairs: ``"official"`` or ``"all"`` (feature_crops mode).
        vv_reduction: ``"mean"`` over the within-modal terms (released code) or ``"sum"``
            (eq. 6's text).
        va_reduction: ``"mean"`` over the cross-modal directions (released code: ¼ of the 4) or
            ``"sum"`` (eq. 7's text).
        stop_grad_keys: every key under a stop-gradient, as the released code.

    Shape:
        - a, v1, v2, each small RGB crop: (B, E); crop groups: (K, B, E)

    Returns:
        ``{"loss", "loss_va", "loss_vv"}`` scalar tensors (``loss`` carries the graph;
        ``loss_va``/``loss_vv`` are after their reduction) and ``"n_vv_terms"`` (int, 0 in
        ``default``).

    Raises:
        ValueError: unknown mode or option, or inputs missing / malformed for the mode.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    for name, value, choices in (
        ("vv_pairs", vv_pairs, ("official", "all")),
        ("vv_reduction", vv_reduction, ("sum", "mean")),
        ("va_reduction", va_reduction, ("sum", "mean")),
    ):
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    va_kw = {"reduction": va_reduction, "detach_keys": stop_grad_keys}
    if mode == "default":
        loss_va = cross_modal_loss(v1, None, a, temperature_va, **va_kw)
        loss_vv, n_vv = loss_va.new_zeros(()), 0
    else:
        if v2 is None:
            raise ValueError(f"mode {mode!r} needs the second RGB crop's embeddings v2")
        loss_va = cross_modal_loss(v1, v2, a, temperature_va, **va_kw)
        if mode == "two_crops":
            loss_vv, n_vv = within_modal_loss(
                {"full": v1},
                {"full": v2},
                temperature_vv,
                is_small=is_small,
                detach_keys=stop_grad_keys,
            )
        elif mode == "multi_crops":
            if len(small_rgb) == 0:
                raise ValueError("mode 'multi_crops' needs at least one small RGB crop (small_rgb)")
            loss_vv, n_vv = multi_crop_loss(
                v1, v2, small_rgb, temperature_vv, detach_keys=stop_grad_keys
            )
        else:
            if crops1 is None or crops2 is None:
                raise ValueError("mode 'feature_crops' needs the feature-crop views crops1, crops2")
            if vv_pairs == "official":
                loss_vv, n_vv = official_crop_loss(
                    crops1, crops2, temperature_vv, detach_keys=stop_grad_keys
                )
            else:
                loss_vv, n_vv = within_modal_loss(
                    _with_full(v1, crops1),
                    _with_full(v2, crops2),
                    temperature_vv,
                    is_small=is_small,
                    detach_keys=stop_grad_keys,
                )
    if vv_reduction == "mean" and n_vv:
        loss_vv = loss_vv / n_vv
    loss = lambda_va * loss_va + lambda_vv * loss_vv
    return {
        "loss": loss,
        "loss_va": loss_va.detach(),
        "loss_vv": loss_vv.detach(),
        "n_vv_terms": n_vv,
    }
