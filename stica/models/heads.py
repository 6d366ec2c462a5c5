"""Projection heads: MLP D -> hidden -> embed (Linear-ReLU-Linear, as GDT), L2-normalised.

No BatchNorm, so an embedding does not depend on which other crops share its batch: the batched
feature-crop path and the one-crop-at-a-time path give the same result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLPHead(nn.Module):
    """Linear-ReLU-Linear projection followed by L2 normalisation.

    Shape:
        (N, in_dim) -> (N, embed_dim), rows of unit norm
    """

    def __init__(self, in_dim: int, hidden: int, embed_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, embed_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1)
