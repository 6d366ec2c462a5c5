"""The finetuning classifier (paper sec. 4.3, Table 1c): the pretrained video trunk with the SAME
pooling it was pretrained with (average or the temporal transformer, its weights kept), dropout and
a new linear classifier on the pooled D-dim feature; the pretraining MLP heads and the audio branch
are dropped."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stica.models.stica import SticaModel, build_model


class FinetuneModel(nn.Module):
    """Video trunk + its pretraining pooling + dropout + linear classifier.

    Shape:
        (B, 3, T, H, W) -> (B, num_classes) logits
    """

    def __init__(self, encoder: SticaModel, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.model_config = encoder.config
        self.trunk = encoder.video_trunk
        self.pool = encoder.video_pool
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.video_dim, num_classes)

    def features(self, video: torch.Tensor) -> torch.Tensor:
        """Shape: (B, 3, T, H, W) -> (B, D)"""
        return self.pool(self.trunk(video))

    def param_groups(self, lr: float, backbone_lr_scale: float) -> list[dict[str, Any]]:
        """SGD groups: the classifier at ``lr``, the trunk and its pooling at ``lr * scale``."""
        backbone = [*self.trunk.parameters(), *self.pool.parameters()]
        return [
            {"params": list(self.classifier.parameters()), "lr": lr},
            {"params": backbone, "lr": lr * backbone_lr_scale},
        ]

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(video)))


def build_finetune_model(
    model_config: dict[str, Any], num_classes: int, dropout: float
) -> FinetuneModel:
    """An untrained finetune model of the architecture ``model_config`` (a checkpoint's dict)."""
    return FinetuneModel(build_model(model_config), num_classes, dropout)
