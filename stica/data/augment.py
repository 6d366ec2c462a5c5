"""Clip-consistent visual augmentation, batched on the device of the input (SimCLR protocol).

Every random parameter is drawn per clip from an explicit ``torch.Generator`` and applied to all
frames of that clip (paper sec. 3.2: a crop is a tube, the same box through time). Nothing loops
over clips or frames: the random resized crop and flip of the whole batch is one
``affine_grid`` + ``grid_sample`` call over a (B, T·3, H, W) view of the clips, so a clip's frames
are its channels and share its box by construction; colour jitter is per-clip factors and 3×3
colour matrices; the blur is one grouped separable convolution.

Choices (documented, differing from torchvision's image transforms):
    - crop boxes are continuous (sub-pixel) and resampled bilinearly without antialiasing;
    - colour jitter applies brightness, contrast, saturation, hue in a random order per clip
      (``jitter_order: random``, as torchvision and the released code) or in this fixed order;
      contrast blends with the clip's mean grey level; hue rotates the chroma plane of YIQ (a
      linear approximation of an HSV hue shift); values are clamped to [0, 1] after each op
      (the released code jitters normalised values without clamping: not copied, see
      docs/fidelity.md);
    - the blur kernel is ~10 % of the output size (odd, >= 3), as SimCLR, with reflect padding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from stica.config import AugmentConfig

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale
_GREY = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = (
    (0.299, 0.587, 0.114),
    (0.596, -0.274, -0.322),
    (0.211, -0.523, 0.312),
)
# SimCLR: blur kernel side = 10 % of the image side
_BLUR_KERNEL_FRACTION = 0.1
# torchvision's RandomResizedCrop: tries before falling back to a whole-frame crop
_CROP_ATTEMPTS = 10
_UINT8_MAX = 255.0


def _check_clips(clips: torch.Tensor) -> tuple[int, int, int, int]:
    if not isinstance(clips, torch.Tensor) or clips.dim() != 5 or clips.shape[-1] != 3:
        shape = tuple(clips.shape) if isinstance(clips, torch.Tensor) else type(clips).__name__
        raise ValueError(f"clips must be (B, T, H, W, 3) uint8 frames, got {shape}")
    if clips.dtype != torch.uint8:
        raise ValueError(f"clips must be uint8 (0..255), got {clips.dtype}")
    b, t, h, w, _ = clips.shape
    if min(b, t, h, w) < 1:
        raise ValueError(f"clips must be non-empty, got shape {tuple(clips.shape)}")
    return b, t, h, w


def _uniform(gen: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    """U(low, high) drawn on the generator's device (CPU generator: device-independent values)."""
    return low + (high - low) * torch.rand(shape, generator=gen, device=gen.device)


def _bernoulli(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=gen.device) < p


def _to_float_planes(clips: torch.Tensor) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> float (B, T·3, H, W) in [0, 1]: frames become channels."""
    b, t, h, w, c = clips.shape
    x = clips.permute(0, 1, 4, 2, 3).reshape(b, t * c, h, w)
    return x.float() / _UINT8_MAX


def crop_resize(
    x: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None
) -> torch.Tensor:
    """Crop one box per clip (all its frames) and resize it to ``size``², optionally mirrored.

    Boxes are (x0, y0, w, h) in input pixels (continuous); sampling is bilinear.

    Shape:
        - x: (B, C, H, W) with C = T·3
        - boxes: (B, 4)
        - flip: (B,) bool or None
        - output: (B, C, size, size)
    """
    b, c, h, w = x.shape
    # non_blocking: a blocking copy to a GPU is a stream sync
    x0, y0, bw, bh = boxes.to(x.device, torch.float32, non_blocking=True).unbind(dim=1)
    sx = bw / w
    if flip is not None:
        sx = torch.where(flip.to(x.device, non_blocking=True), -sx, sx)
    # output coordinate u in [-1, 1] samples input (2·x0 + bw)/W − 1 + (bw/W)·u (align_corners=False)
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = (2 * x0 + bw) / w - 1
    theta[:, 1, 1] = bh / h
    theta[:, 1, 2] = (2 * y0 + bh) / h - 1
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def sample_boxes(
    gen: torch.Generator,
    n: int,
    height: int | Sequence[int],
    width: int | Sequence[int],
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> torch.Tensor:
    """Random-resized-crop boxes (torchvision's rule, vectorised over clips and attempts).

    Area fraction ~ U(scale), log aspect ratio ~ U(log ratio); the first of several attempts that
    fits the frame is kept, else the largest centred box within the ratio range. ``height`` and
    ``width`` are the frame's, or each clip's (a batch of padded clips of several sizes).

    Shape:
        - output: (n, 4) as (x0, y0, w, h) in pixels, on the generator's device
    """
    heights = [height] * n if isinstance(height, int) else [int(v) for v in height]
    widths = [width] * n if isinstance(width, int) else [int(v) for v in width]
    dev = gen.device
    h = torch.tensor(heights, dtype=torch.float32, device=dev)  # (n,)
    w = torch.tensor(widths, dtype=torch.float32, device=dev)
    area = (h * w)[:, None]  # (n, 1)
    s = _uniform(gen, (n, _CROP_ATTEMPTS), *scale)
    log_r = _uniform(gen, (n, _CROP_ATTEMPTS), math.log(ratio[0]), math.log(ratio[1]))
    r = torch.exp(log_r)
    bw = torch.sqrt(area * s * r)
    bh = torch.sqrt(area * s / r)
    fits = (bw <= w[:, None]) & (bh <= h[:, None])
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)  # first fitting attempt
    bw = bw.gather(1, first).squeeze(1)
    bh = bh.gather(1, first).squeeze(1)
    fallback = [_fallback_box(hh, ww, ratio) for hh, ww in zip(heights, widths, strict=True)]
    fb_w, fb_h = torch.tensor(fallback, dtype=torch.float32, device=dev).unbind(dim=1)
    ok = fits.any(dim=1)
    bw = torch.where(ok, bw, fb_w)
    bh = torch.where(ok, bh, fb_h)
    pos = torch.rand(n, 2, generator=gen, device=gen.device)
    x0 = pos[:, 0] * (w - bw)
    y0 = pos[:, 1] * (h - bh)
    return torch.stack([x0, y0, bw, bh], dim=1)


def _fallback_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[float, float]:
    """(w, h) of the largest centred box within the ratio range."""
    frame_ratio = width / height
    if frame_ratio < ratio[0]:
        return float(width), width / ratio[0]
    if frame_ratio > ratio[1]:
        return height * ratio[1], float(height)
    return float(width), float(height)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Luma of (B, T, 3, H, W) -> (B, T, 1, H, W)."""
    w = x.new_tensor(_GREY).view(1, 1, 3, 1, 1)
    return (x * w).sum(dim=2, keepdim=True)


def _hue_matrices(angle: torch.Tensor) -> torch.Tensor:
    """RGB -> RGB matrices rotating the YIQ chroma plane by ``angle`` radians. (B,) -> (B, 3, 3)."""
    to_yiq = angle.new_tensor(_RGB_TO_YIQ)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(angle.shape[0], 3, 3, device=angle.device, dtype=angle.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    return torch.linalg.inv(to_yiq) @ rot @ to_yiq


def _blur(x: torch.Tensor, sigma: torch.Tensor, apply: torch.Tensor, size: int) -> torch.Tensor:
    """Per-clip separable Gaussian blur; clips with ``apply`` False are returned unchanged.

    Shape:
        - x: (B, C, H, W); sigma, apply: (B,)
        - output: (B, C, H, W)
    """
    b, c, h, w = x.shape
    k = max(3, int(_BLUR_KERNEL_FRACTION * size) | 1)
    offsets = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None] ** 2))  # (B, k)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    identity = (offsets == 0).to(x.dtype).expand(b, k)
    kernel = torch.where(apply[:, None], kernel, identity)
    weight = kernel.repeat_interleave(c, dim=0)  # (B·C, k): the clip's kernel on all its planes
    planes = x.reshape(1, b * c, h, w)
    pad = k // 2
    planes = F.pad(planes, (0, 0, pad, pad), mode="reflect")
    planes = F.conv2d(planes, weight.view(b * c, 1, k, 1), groups=b * c)
    planes = F.pad(planes, (pad, pad, 0, 0), mode="reflect")
    planes = F.conv2d(planes, weight.view(b * c, 1, 1, k), groups=b * c)
    return planes.view(b, c, h, w)


def _brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Scale intensities. x (B, T, 3, H, W) in [0, 1], f (B, 1, 1, 1, 1)."""
    return (x * f).clamp(0, 1)


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend with the clip's mean grey level."""
    clip_mean = _grey(x).mean(dim=(1, 2, 3, 4), keepdim=True)  # (B, 1, 1, 1, 1)
    return (f * x + (1 - f) * clip_mean).clamp(0, 1)


def _saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend with the grey image."""
    return (f * x + (1 - f) * _grey(x)).clamp(0, 1)


def _hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Rotate the YIQ chroma plane by ``f`` turns."""
    hue_m = _hue_matrices(2 * math.pi * f.flatten())  # (B, 3, 3)
    return torch.einsum("bij,btjhw->btihw", hue_m, x).clamp(0, 1)


# colour jitter ops, in the "fixed" order
_JITTER = {
    "brightness": _brightness,
    "contrast": _contrast,
    "saturation": _saturation,
    "hue": _hue,
}
_JITTER_OPS = tuple(_JITTER)


def _normalise(x: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    """(B, T, 3, S, S) in [0, 1] -> normalised (B, 3, T, S, S), the video trunks' layout."""
    m = x.new_tensor(mean).view(1, 1, 3, 1, 1)
    s = x.new_tensor(std).view(1, 1, 3, 1, 1)
    return ((x - m) / s).permute(0, 2, 1, 3, 4).contiguous()


class VideoAugment:
    """Training augmentation: random resized crop, flip, colour jitter, grayscale, blur.

    Args:
        config: crop sizes, probabilities and ranges (see :class:`stica.config.AugmentConfig`).

    Shape:
        - clips: (B, T, H, W, 3) uint8, any device
        - sizes: (B, 2) each clip's own (height, width) when clips of several sizes were padded
          to one (:func:`stica.data.datasets.collate_clips`), else None
        - output: (B, 3, T, S, S) float32 on the clips' device, normalised by ``config.mean/std``
    """

    def __init__(self, config: AugmentConfig | None = None) -> None:
        self.config = config or AugmentConfig()

    def __call__(
        self,
        clips: torch.Tensor,
        generator: torch.Generator,
        size: int | None = None,
        scale: tuple[float, float] | None = None,
        sizes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One augmented view of every clip (``size``/``scale`` default to the large crop's)."""
        cfg = self.config
        size = size or cfg.crop_size
        scale = scale or cfg.scale
        b, t, h, w = _check_clips(clips)
        dev = clips.device
        gen = generator
        # every parameter is drawn up front, in a fixed order, so a seed fixes the whole view
        heights, widths = (h, w) if sizes is None else sizes.cpu().unbind(dim=1)
        boxes = sample_boxes(gen, b, heights, widths, scale, cfg.ratio)
        flip = _bernoulli(gen, b, cfg.flip_p)
        jitter = _bernoulli(gen, b, cfg.jitter_p)
        bright = _uniform(gen, (b,), 1 - cfg.brightness, 1 + cfg.brightness)
        contrast = _uniform(gen, (b,), 1 - cfg.contrast, 1 + cfg.contrast)
        sat = _uniform(gen, (b,), 1 - cfg.saturation, 1 + cfg.saturation)
        hue = _uniform(gen, (b,), -cfg.hue, cfg.hue)
        grey = _bernoulli(gen, b, cfg.grayscale_p)
        blur = _bernoulli(gen, b, cfg.blur_p)
        sigma = _uniform(gen, (b,), *cfg.blur_sigma)
        if cfg.jitter_order == "random":  # (B, 4): the clip's order of the 4 jitter ops
            order = torch.rand(b, len(_JITTER_OPS), generator=gen, device=gen.device).argsort(1)
        else:
            order = torch.arange(len(_JITTER_OPS), device=gen.device).expand(b, -1)

        def per_clip(v: torch.Tensor) -> torch.Tensor:
            return v.to(dev, non_blocking=True).view(b, 1, 1, 1, 1)

        x = crop_resize(_to_float_planes(clips), boxes, size, flip)  # (B, T·3, S, S)
        x = x.view(b, t, 3, size, size)
        factors = {"brightness": bright, "contrast": contrast, "saturation": sat, "hue": hue}
        active = [op for op in _JITTER_OPS if op != "hue" or cfg.hue > 0]
        # Each op runs on the clips that take it at this position only (every op is per clip):
        # four ops per jittered clip instead of every op on the whole batch, and the choices
        # are made where the parameters were drawn (a CPU generator: no device sync).
        jitter, order = jitter.cpu(), order.cpu()
        for position in range(len(_JITTER_OPS)):
            for k, op in enumerate(_JITTER_OPS):
                rows = torch.nonzero(jitter & (order[:, position] == k)).flatten()
                if op in active and len(rows):
                    factor = factors[op].cpu()[rows].to(dev, non_blocking=True)
                    factor = factor.view(-1, 1, 1, 1, 1)
                    rows = rows.to(dev, non_blocking=True)
                    x[rows] = _JITTER[op](x[rows], factor)
        grey = grey.cpu()
        if bool(grey.any()):
            x = torch.where(per_clip(grey), _grey(x).expand_as(x), x)
        if bool(blur.cpu().any()):  # the identity kernel of the others changes nothing
            sigma, blur = sigma.to(dev, non_blocking=True), blur.to(dev, non_blocking=True)
            x = _blur(x.reshape(b, t * 3, size, size), sigma, blur, size)
        return _normalise(x.view(b, t, 3, size, size), cfg.mean, cfg.std)

    def two_views(
        self, clips: torch.Tensor, generator: torch.Generator, sizes: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two large RGB crops L1, L2 of the same clips (independent parameters).

        Shape:
            - clips: (B, T, H, W, 3) uint8
            - output: two (B, 3, T, crop_size, crop_size)
        """
        return self(clips, generator, sizes=sizes), self(clips, generator, sizes=sizes)

    def multi_crop(
        self,
        clips: torch.Tensor,
        generator: torch.Generator,
        n_small: int,
        sizes: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """SwAV-style multi-crop: L1, L2 at ``crop_size`` then ``n_small`` small crops.

        Shape:
            - clips: (B, T, H, W, 3) uint8
            - output: [L1, L2, S_1, ..., S_k]; L: (B, 3, T, crop_size, crop_size),
              S: (B, 3, T, small_crop_size, small_crop_size)
        """
        if n_small < 0:
            raise ValueError(f"n_small must be >= 0, got {n_small}")
        cfg = self.config
        views = list(self.two_views(clips, generator, sizes))
        for _ in range(n_small):  # a few crops, each batched over the clips
            views.append(self(clips, generator, cfg.small_crop_size, cfg.small_scale, sizes))
        return views


class EvalTransform:
    """Deterministic evaluation crops: resize the short side, then centre or 3 crops.

    Args:
        crop_size: output side S (default: the demo profile's ``augment.crop_size``).
        short_side: the frame's short side is (virtually) resized to this before cropping
            (default: the demo profile's ``augment.eval_short_side``). Frames stored larger are
            downsampled; stores with smaller frames are refused before evaluation
            (:meth:`stica.train.checkpoint.Pretrained.check_store`).
        mean, std: per-channel normalisation.

    Shape:
        - clips: (B, T, H, W, 3) uint8, any device
        - sizes: (B, 2) each clip's own (height, width) in padded batches, else None
        - ``__call__`` output: (B, 3, T, S, S); ``three_crop`` output: (B, 3 crops, 3, T, S, S)
    """

    def __init__(
        self,
        crop_size: int = AugmentConfig.crop_size,
        short_side: int = AugmentConfig.eval_short_side,
        mean: tuple[float, float, float] = AugmentConfig.mean,
        std: tuple[float, float, float] = AugmentConfig.std,
    ) -> None:
        if short_side < crop_size:
            raise ValueError(f"short_side ({short_side}) must be >= crop_size ({crop_size})")
        self.crop_size, self.short_side = crop_size, short_side
        self.mean, self.std = mean, std

    @classmethod
    def from_config(cls, config: AugmentConfig) -> EvalTransform:
        return cls(config.crop_size, config.eval_short_side, config.mean, config.std)

    def boxes(self, height: int, width: int, n_crops: int) -> list[tuple[float, ...]]:
        """Crop boxes (x0, y0, w, h) in input pixels: centre (1) or start/centre/end (3)
        along the long side (left/centre/right or top/centre/bottom)."""
        side = self.crop_size * min(height, width) / self.short_side  # S output px in input px
        cx, cy = (width - side) / 2, (height - side) / 2
        if n_crops == 1:
            return [(cx, cy, side, side)]
        if width >= height:
            return [(x, cy, side, side) for x in (0.0, cx, width - side)]
        return [(cx, y, side, side) for y in (0.0, cy, height - side)]

    def _crops(
        self, clips: torch.Tensor, n_crops: int, sizes: torch.Tensor | None
    ) -> list[torch.Tensor]:
        b, t, h, w = _check_clips(clips)
        x = _to_float_planes(clips)  # (B, T·3, H, W)
        if sizes is None:
            per_clip = [self.boxes(h, w, n_crops)] * b
        else:
            per_clip = [self.boxes(int(hh), int(ww), n_crops) for hh, ww in sizes.tolist()]
        out = []
        for i in range(n_crops):  # 1 or 3 positions, each batched over clips
            boxes = torch.tensor([clip[i] for clip in per_clip], device=x.device)  # (B, 4)
            y = crop_resize(x, boxes, self.crop_size).view(b, t, 3, self.crop_size, self.crop_size)
            out.append(_normalise(y, self.mean, self.std))
        return out

    def __call__(self, clips: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
        return self._crops(clips, 1, sizes)[0]

    def three_crop(self, clips: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
        return torch.stack(self._crops(clips, 3, sizes), dim=1)
