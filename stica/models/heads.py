"""Projection heads: Dropout-Linear-BN-ReLU-Dropout-Linear (GDT's ``MLP``), L2-normalised.

The layout is the released code's, module for module (so GDT checkpoints' heads map onto it):
``mlp = [Dropout(p), Linear(D, hidden, bias=False), BatchNorm1d(hidden), ReLU, Dropout(p),
Linear(hidden, E)]``; the first Linear has no bias because the BatchNorm after it removes any.
Paper profile: p = 0.3, hidden 512, E = 256.

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
    """Projection MLP followed by L2 normalisation.

    Shape:
        (N, in_dim) -> (N, embed_dim), rows of unit norm
    """

    def __init__(self, in_dim: int, hidden: int, embed_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(in_dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, embed_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1)
