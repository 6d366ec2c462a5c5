"""Channel widths of the trunks' last blocks, by trunk kind: the feature sizes D of the model.

No torch here: :class:`stica.config.ModelConfig` reads these to validate its params (the
transformer's heads must divide D) without building a model.
"""

from __future__ import annotations

VIDEO_TRUNK_DIMS = {"r2plus1d_18": 512}  # torchvision's R(2+1)D-18: layer4 has 512 channels
AUDIO_TRUNK_DIMS = {"resnet9": 512}  # GDT's ResNet-9: 64-128-256-512
SMALL_TRUNK_WIDTH_MULTIPLIER = 8  # the small trunks' stages: width, 2w, 4w, 8w channels


def video_dim(trunk: str, width: int) -> int:
    """D, the channels of the video trunk's map (the pooled feature size)."""
    return VIDEO_TRUNK_DIMS.get(trunk, SMALL_TRUNK_WIDTH_MULTIPLIER * width)


def audio_dim(trunk: str, width: int) -> int:
    """Channels of the audio trunk's last map (the pooled audio feature size)."""
    return AUDIO_TRUNK_DIMS.get(trunk, SMALL_TRUNK_WIDTH_MULTIPLIER * width)
