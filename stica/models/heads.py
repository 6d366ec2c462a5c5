"""Projection heads: MLP D -> hidden -> embed (Linear-BN-ReLU-Linear, as GDT), L2-normalised.

The BatchNorm matters: without it the audio head collapsed to a constant embedding within a few
dozen SGD steps on the demo (the trunk's pooled features share a large common component, and the
head learned to output only that). In training mode an embedding therefore depends on the other
rows of its batch (all crops of one shape are one batch); in eval mode it does not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLPHead(nn.Module):
    """Linear-BatchNorm-ReLU-Linear projection followed by L2 normalisation.

    Shape:
        (N, in_dim) -> (N, embed_dim), rows of unit norm
    """

    def __init__(self, in_dim: int, hidden: int, embed_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, embed_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1)
