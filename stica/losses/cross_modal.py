"""Cross-modal loss L_va (paper sec. 3.4, eq. 7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stica import dist
from stica.losses.info_nce import check_pair, check_temperature, nce_from_normalised


def cross_modal_loss(
    v1: torch.Tensor,
    v2: torch.Tensor | None,
    a: torch.Tensor,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Cross-modal NCE between the visual views and the audio view.

    With two RGB crops: ``L_va = L(v_L1, a) + L(v_L2, a) + L(a, v_L1) + L(a, v_L2)`` (eq. 7).
    With ``v2=None`` (the "default" single-crop baseline): ``L(v, a) + L(a, v)``.
    Each term is :func:`~stica.losses.info_nce`; every embedding is gathered once under DDP.

    Args:
        v1: embeddings of RGB crop L1.
        v2: embeddings of RGB crop L2, or None for the single-crop variant.
        a: audio embeddings of the same samples.
        temperature: τ (paper: 0.1).

    Shape:
        - v1, v2, a: (B, E)
        - output: () scalar, a sum of 4 (or 2) batch means

    Raises:
        ValueError: shapes differ, are not 2-D, the batch is empty, or τ <= 0.
    """
    check_pair(v1, a)
    if v2 is not None:
        check_pair(v2, a)
    check_temperature(temperature)
    tau = float(temperature)
    a_n = F.normalize(a, dim=1)
    a_all = dist.gather_with_grad(a_n)  # (W*B, E)
    loss = a.new_zeros(())
    for v in (v1,) if v2 is None else (v1, v2):
        v_n = F.normalize(v, dim=1)
        loss = loss + nce_from_normalised(v_n, a_all, tau)
        loss = loss + nce_from_normalised(a_n, dist.gather_with_grad(v_n), tau)
    return loss
