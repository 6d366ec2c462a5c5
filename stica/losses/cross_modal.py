"""Cross-modal loss L_va (paper sec. 3.4, eq. 7)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from stica.losses.info_nce import check_pair, check_temperature, gather_keys, nce_from_normalised


def cross_modal_loss(
    v1: torch.Tensor,
    v2: torch.Tensor | None,
    a: torch.Tensor,
    temperature: float = 0.1,
    *,
    reduction: Literal["mean", "sum"] = "mean",
    detach_keys: bool = True,
) -> torch.Tensor:
    """Cross-modal NCE between the visual views and the audio view.

    Directions, with two RGB crops: ``L(v_L1, a), L(a, v_L1), L(v_L2, a), L(a, v_L2)``; with
    ``v2=None`` (the "default" single-crop baseline): ``L(v, a), L(a, v)``. ``reduction="mean"``
    averages the directions, as the released code (``0.5 * (gdt(v1, a) + gdt(v2, a))`` with each
    ``gdt`` the mean of its two directions: ¼ of the 4); ``"sum"`` adds them as eq. (7) writes it.
    Each direction is :func:`~stica.losses.info_nce`; every embedding is gathered once under DDP.

    Args:
        v1: embeddings of RGB crop L1.
        v2: embeddings of RGB crop L2, or None for the single-crop variant.
        a: audio embeddings of the same samples.
        temperature: τ (paper: 0.1).
        reduction: ``"mean"`` (released code) or ``"sum"`` (eq. 7's text) over the directions.
        detach_keys: keys (local and gathered) under a stop-gradient, as the released code.

    Shape:
        - v1, v2, a: (B, E)
        - output: () scalar

    Raises:
        ValueError: shapes differ, are not 2-D, the batch is empty, τ <= 0, or a bad reduction.
    """
    check_pair(v1, a)
    if v2 is not None:
        check_pair(v2, a)
    check_temperature(temperature)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    tau = float(temperature)
    a_n = F.normalize(a, dim=1)
    a_keys = gather_keys(a_n, detach_keys)  # (W*B, E)
    videos = (v1,) if v2 is None else (v1, v2)
    loss = a.new_zeros(())
    for v in videos:
        v_n = F.normalize(v, dim=1)
        loss = loss + nce_from_normalised(v_n, a_keys, tau)
        loss = loss + nce_from_normalised(a_n, gather_keys(v_n, detach_keys), tau)
    if reduction == "mean":
        loss = loss / (2 * len(videos))
    return loss
