"""Pooling of a video feature map (N, D, t, h, w) to one D vector per map (paper eq. 4, sec. 3.3).

``avg``: spatial then temporal average (P_t o P_s).
``transformer``: spatial average -> (N, t, D) tokens + a learned ABSOLUTE temporal position
embedding -> a small ``nn.TransformerEncoder`` over time -> mean over the t output tokens.

Choice: the mean of the output tokens rather than a CLS token. It keeps ``transformer`` a drop-in
for ``avg`` (same reduction, contextualised tokens) and needs no extra position for the CLS slot.

Temporal feature crops pass ``time_offset`` (the crop's first time step in the full map), so each
token keeps the position embedding of its absolute time: a temporal crop is then the same as the
full map with attention masked to the crop's time steps, as the paper describes.
"""

from __future__ import annotations

import torch
from torch import nn

from stica.errors import SticaError

POSITION_INIT_STD = 0.02  # ViT/BERT-style; non-zero so that token order matters from step 0


class AvgPool(nn.Module):
    """Average over space, then time.

    Shape:
        (N, D, t, h, w) -> (N, D)
    """

    def forward(self, fmap: torch.Tensor, time_offset: torch.Tensor | None = None) -> torch.Tensor:
        return fmap.mean(dim=(3, 4)).mean(dim=2)


class TransformerPool(nn.Module):
    """Spatial average, then a temporal transformer with absolute position embeddings.

    The feed-forward width equals ``dim`` (the paper's "hidden dimension 512"); pre-norm layers
    with a final LayerNorm train stably under large-lr SGD.

    Shape:
        fmap (N, D, t, h, w), time_offset (N,) long or None (= 0) -> (N, D)
    """

    def __init__(
        self, dim: int, layers: int, heads: int, max_time: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.max_time = max_time
        self.position = nn.Parameter(torch.randn(max_time, dim) * POSITION_INIT_STD)  # (Tmax, D)
        layer = nn.TransformerEncoderLayer(
            d_model=dim,
            nhead=heads,
            dim_feedforward=dim,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers=layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False
        )

    def forward(self, fmap: torch.Tensor, time_offset: torch.Tensor | None = None) -> torch.Tensor:
        n, _, t = fmap.shape[:3]
        if t > self.max_time:
            raise SticaError(
                f"param 'pretrain.model.max_time' = {self.max_time} is shorter than the "
                f"{t} time steps of the video feature map (use more, or fewer frames)"
            )
        # Contiguous tokens: the encoder's linear layers are much slower on the transposed view.
        tokens = fmap.mean(dim=(3, 4)).transpose(1, 2).contiguous()  # (N, t, D)
        steps = torch.arange(t, device=fmap.device)  # (t,)
        if time_offset is None:
            pos = self.position[steps].unsqueeze(0)  # (1, t, D)
        else:
            pos = self.position[time_offset.to(fmap.device).view(n, 1) + steps]  # (N, t, D)
        out = self.encoder(tokens + pos.to(tokens.dtype))  # (N, t, D)
        return out.mean(dim=1)


def build_pooling(
    kind: str, dim: int, layers: int, heads: int, max_time: int, dropout: float = 0.0
) -> nn.Module:
    """Pooling module ``kind`` ("avg" | "transformer") called as ``pool(fmap, time_offset=None)``."""
    if kind == "avg":
        return AvgPool()
    if kind == "transformer":
        return TransformerPool(dim, layers, heads, max_time, dropout)
    raise ValueError(f"unknown pooling {kind!r}")
