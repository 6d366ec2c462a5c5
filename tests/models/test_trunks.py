"""Trunk geometry and interfaces: torchvision R(2+1)D-18, the small demo trunk, ResNet-9 audio."""

import torch
from torch import nn

from stica.config import ModelConfig
from stica.models.audio import build_audio_trunk
from stica.models.stica import SticaModel
from stica.models.video import build_video_trunk, video_map_shape

PAPER = ModelConfig(
    video_trunk="r2plus1d_18", audio_trunk="resnet9", head_hidden=512, embed_dim=256
)


def test_r2plus1d_18_map_is_512x4x7x7_for_30x112x112():
    # Built on the meta device: the real geometry of torchvision's module, no memory or FLOPs.
    with torch.device("meta"):
        model = SticaModel(PAPER)
        fmap = model.video_map(torch.empty(2, 3, 30, 112, 112))
    assert tuple(fmap.shape) == (2, 512, 4, 7, 7)
    assert model.video_map_shape(30, 112, 112) == (512, 4, 7, 7)
    assert model.video_map_shape(60, 112, 112) == (512, 8, 7, 7)


def test_r2plus1d_18_trunk_is_torchvision_without_pool_and_fc():
    with torch.device("meta"):
        trunk = build_video_trunk("r2plus1d_18", 0)
    names = [n for n, _ in trunk.named_children()]
    assert len(names) == 5  # stem + 4 residual stages
    assert not any(isinstance(m, nn.Linear | nn.AdaptiveAvgPool3d) for m in trunk.modules())
    assert trunk.out_dim == 512


def test_small_trunk_on_demo_input_gives_4x4x4_map():
    torch.manual_seed(0)
    trunk = build_video_trunk("small", 8)
    fmap = trunk(torch.randn(2, 3, 16, 64, 64))
    assert tuple(fmap.shape) == (2, 64, 4, 4, 4)
    assert video_map_shape("small", 8, 16, 64, 64) == (64, 4, 4, 4)
    # Fewer temporal than spatial downsamplings: a longer clip keeps more time steps.
    assert video_map_shape("small", 8, 32, 64, 64) == (64, 8, 4, 4)


def test_resnet9_audio_trunk_on_257x100_log_mel():
    torch.manual_seed(0)
    trunk = build_audio_trunk("resnet9", 0)
    spec = torch.randn(2, 1, 257, 100)
    amap = trunk.feature_map(spec)
    assert amap.shape[:2] == (2, 512) and amap.shape[2] > 1 and amap.shape[3] > 1
    pooled = trunk(spec)
    assert pooled.shape == (2, 512)
    torch.testing.assert_close(pooled, amap.mean(dim=(2, 3)))
    # ResNet-9: stem conv + 4 BasicBlocks of 2 convs (1x1 shortcut projections aside).
    convs = [m for m in trunk.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert len(convs) == 9
    assert convs[0].in_channels == 1


def test_small_audio_trunk_is_narrower_with_same_interface():
    trunk = build_audio_trunk("small", 16)
    amap = trunk.feature_map(torch.randn(2, 1, 257, 100))
    assert amap.shape[1] == 128 == trunk.out_dim
