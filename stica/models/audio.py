"""Audio trunk: a ResNet-9 on a 1-channel log-mel spectrogram (as GDT / the paper).

ResNet-9 = a torchvision-style ResNet stem (7x7/2 conv, 3x3/2 max-pool) and one BasicBlock per
stage (64, 128, 256, 512 channels), i.e. 9 weighted 3x3/7x7 layers. The ``small`` trunk has the same
layout with ``width`` base channels for the CPU demo. Audio is always average-pooled (paper, 6.1).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from stica.models.dims import SMALL_TRUNK_WIDTH_MULTIPLIER

RESNET9_WIDTH = 64  # base channels of the paper's ResNet-9 (64-128-256-512)
STAGE_STRIDES = (1, 2, 2, 2)


class AudioResNet(nn.Module):
    """ResNet with one BasicBlock per stage on (B, 1, n_mels, frames) spectrograms.

    Shape:
        ``feature_map``: (B, 1, F, T) -> (B, 8 * width, F', T') with F' ~ F / 32, T' ~ T / 32
        ``forward``:     (B, 1, F, T) -> (B, 8 * width)   (global average pool)
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(4)]
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        stages, in_planes = [], width
        for planes, stride in zip(widths, STAGE_STRIDES, strict=True):
            downsample = None
            if stride != 1 or in_planes != planes:
                downsample = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
                )
            stages.append(BasicBlock(in_planes, planes, stride, downsample))
            in_planes = planes
        self.stages = nn.Sequential(*stages)
        self.out_dim = widths[-1]
        assert self.out_dim == SMALL_TRUNK_WIDTH_MULTIPLIER * width
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def feature_map(self, spec: torch.Tensor) -> torch.Tensor:
        """Last conv activations (audio-eval max-pools these).

        Shape:
            (B, 1, F, T) -> (B, D, F', T')
        """
        return self.stages(self.stem(spec))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """Global average pooled features.

        Shape:
            (B, 1, F, T) -> (B, D)
        """
        return self.feature_map(spec).mean(dim=(2, 3))


def build_audio_trunk(kind: str, width: int) -> AudioResNet:
    """The audio trunk named ``kind`` ("small" | "resnet9")."""
    if kind == "resnet9":
        return AudioResNet(RESNET9_WIDTH)
    if kind == "small":
        return AudioResNet(width)
    raise ValueError(f"unknown audio trunk {kind!r}")
