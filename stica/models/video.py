"""Video trunks Ψ: a clip (B, 3, T, H, W) to a feature map (B, D, T1, H1, W1), no pooling.

``r2plus1d_18`` is torchvision's R(2+1)D-18 (random init) without its pooling and classifier: a
30x112x112 clip gives a 512x4x7x7 map. ``small`` is a narrow R(2+1)D-style trunk for the CPU demo
with one BasicBlock per stage, a max-pooled stem and less temporal downsampling (T/4, H/16: 16x64x64 gives Dx4x4x4).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import lru_cache

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchvision.models.video import r2plus1d_18

from stica.models.dims import SMALL_TRUNK_WIDTH_MULTIPLIER

# Small trunk geometry, (temporal, spatial) strides: the stem's conv and max-pool each halve
# space (as a 2D ResNet's stem: the first stage then runs at 1/4 resolution, 3x cheaper on CPU
# than R(2+1)D's 1/2), stages 2-3 halve time and space, so T1 = T/4 and H1 = H/16.
SMALL_STEM_STRIDE = (1, 2)
SMALL_STEM_POOL = (1, 2)
SMALL_STAGE_STRIDES = ((1, 1), (2, 2), (2, 2), (1, 1))
SMALL_STEM_KERNEL = (3, 7)  # (temporal, spatial), factorised like R(2+1)D's stem


def _midplanes(in_planes: int, out_planes: int, kt: int, ks: int) -> int:
    """R(2+1)D's intermediate width: as many parameters as the full kt x ks x ks 3D conv."""
    return (in_planes * out_planes * kt * ks * ks) // (in_planes * ks * ks + kt * out_planes)


class Conv2Plus1d(nn.Sequential):
    """A (kt, ks, ks) 3D conv factorised into a spatial (1, ks, ks) and a temporal (kt, 1, 1) conv.

    Shape:
        (B, C_in, T, H, W) -> (B, C_out, T / stride_t, H / stride_s, W / stride_s)
    """

    def __init__(
        self, in_planes: int, out_planes: int, stride: tuple[int, int] = (1, 1), kernel=(3, 3)
    ) -> None:
        kt, ks = kernel
        st, ss = stride
        mid = _midplanes(in_planes, out_planes, kt, ks)
        super().__init__(
            nn.Conv3d(in_planes, mid, (1, ks, ks), (1, ss, ss), (0, ks // 2, ks // 2), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, out_planes, (kt, 1, 1), (st, 1, 1), (kt // 2, 0, 0), bias=False),
        )


class Block2Plus1d(nn.Module):
    """Residual BasicBlock of two (2+1)D convs with separate temporal and spatial strides.

    Shape:
        (B, C_in, T, H, W) -> (B, C_out, T / stride[0], H / stride[1], W / stride[1])
    """

    def __init__(self, in_planes: int, out_planes: int, stride: tuple[int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            Conv2Plus1d(in_planes, out_planes, stride), nn.BatchNorm3d(out_planes), nn.ReLU(True)
        )
        self.conv2 = nn.Sequential(Conv2Plus1d(out_planes, out_planes), nn.BatchNorm3d(out_planes))
        self.downsample = None
        if stride != (1, 1) or in_planes != out_planes:
            st, ss = stride
            self.downsample = nn.Sequential(
                nn.Conv3d(in_planes, out_planes, 1, (st, ss, ss), bias=False),
                nn.BatchNorm3d(out_planes),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + identity)


class VideoTrunk(nn.Sequential):
    """A trunk as a sequence of stages, with the run-time switches of :mod:`stica.perf`.

    ``channels_last``: the clip is fed as channels_last_3d (the weights are converted by
    :func:`stica.perf.set_channels_last`). ``activation_checkpointing``: in training with
    gradients, each stage keeps only its input and recomputes its activations in the backward
    (less memory for larger batches, one more forward of the trunk). Neither changes the
    parameters or the state dict; the map always comes out in the default (contiguous) layout.
    """

    channels_last = False
    activation_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (B, 3, T, H, W) -> (B, D, T1, H1, W1)"""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for stage in self:
            if not recompute:
                x = stage(x)
            else:
                x = checkpoint(
                    stage,
                    x,
                    use_reentrant=False,
                    context_fn=lambda stage=stage: (nullcontext(), _frozen_batchnorm_stats(stage)),
                )
        return x.contiguous()


@contextmanager
def _frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """While a checkpointed stage is recomputed: BatchNorm normalises with the batch statistics
    as in the forward, but leaves its running statistics and batch counter as they are (they
    were updated once, in the forward). Momentum 0 keeps the running statistics bit for bit
    ((1 - 0) * r + 0 * batch == r) while the kernel saves the same tensors as in the forward,
    which checkpointing checks."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        (m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
        for m in norms
    ]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


class SmallVideoTrunk(VideoTrunk):
    """Narrow R(2+1)D-style trunk: factorised stem + max-pool, one BasicBlock per stage (w..8w).

    Shape:
        (B, 3, T, H, W) -> (B, 8 * width, T / 4, H / 16, W / 16)   (rounded up)
    """

    def __init__(self, width: int) -> None:
        widths = [width * 2**i for i in range(4)]
        assert widths[-1] == SMALL_TRUNK_WIDTH_MULTIPLIER * width
        stem = nn.Sequential(
            Conv2Plus1d(3, width, SMALL_STEM_STRIDE, SMALL_STEM_KERNEL),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(
                (1, 3, 3), (SMALL_STEM_POOL[0], *[SMALL_STEM_POOL[1]] * 2), padding=(0, 1, 1)
            ),
        )
        stages, in_planes = [], width
        for planes, stride in zip(widths, SMALL_STAGE_STRIDES, strict=True):
            stages.append(Block2Plus1d(in_planes, planes, stride))
            in_planes = planes
        super().__init__(stem, *stages)
        self.out_dim = widths[-1]


class R2Plus1d18Trunk(VideoTrunk):
    """torchvision ``r2plus1d_18`` (random init) up to its last residual stage.

    Shape:
        (B, 3, T, H, W) -> (B, 512, T1, H1, W1); 30x112x112 -> 512x4x7x7
    """

    def __init__(self) -> None:
        net = r2plus1d_18(weights=None)
        super().__init__(net.stem, net.layer1, net.layer2, net.layer3, net.layer4)
        self.out_dim = net.fc.in_features


def build_video_trunk(kind: str, width: int) -> nn.Module:
    """The video trunk named ``kind`` ("small" | "r2plus1d_18"); it has an ``out_dim`` attribute."""
    if kind == "r2plus1d_18":
        return R2Plus1d18Trunk()
    if kind == "small":
        return SmallVideoTrunk(width)
    raise ValueError(f"unknown video trunk {kind!r}")


@lru_cache(maxsize=64)
def video_map_shape(
    kind: str, width: int, num_frames: int, height: int, width_px: int
) -> tuple[int, int, int, int]:
    """(D, T1, H1, W1) of trunk ``kind``'s map for a clip of ``num_frames`` x ``height`` x ``width_px``.

    Computed by running a copy of the trunk on the meta device: no memory, no arithmetic, and
    always in step with the module's real strides and paddings.
    """
    with torch.device("meta"):
        trunk = build_video_trunk(kind, width).eval()
        out = trunk(torch.empty(1, 3, num_frames, height, width_px))
    _, d, t1, h1, w1 = out.shape
    return int(d), int(t1), int(h1), int(w1)
