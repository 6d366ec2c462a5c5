"""Clip-consistent visual augmentation, batched on the device of the input (SimCLR protocol).

Every random parameter is drawn per clip from an explicit ``torch.Generator`` and applied to all
frames of that clip (paper sec. 3.2: a crop is a tube, the same box through time). Nothing loops
over clips or frames: the random resized crop and flip of the whole batch is one
``affine_grid`` + ``grid_sample`` call over a (B, 3·T, H, W) view of the clips, so a clip's frames
are its channels and share its box by construction; the blur is one grouped separable convolution.

Colour work is a few passes over the batch, not a few per op: every colour op is a per-clip
affine map of the RGB vector of each pixel (brightness, saturation and hue a 3×3 matrix, contrast
a matrix and an offset from the clip's mean grey), so each of the four jitter positions is ONE
batched ``baddbmm`` (each clip its own op's matrix, the identity for clips without one) and one
clamp; the 1/255 of the uint8 frames folds into the first, and grey + normalisation into one final
map, applied after the blur (the blur filters every plane of a clip alike, so it commutes with a
clip's colour maps). The planes are channel-major from the start, so the result is already the
trunks' (B, 3, T, S, S) layout. The augmentation runs in float32 with autocast off.

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

from stica import perf
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


def _float_planes(clips: torch.Tensor) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> float (B, 3·T, H, W) of 0..255 values, in one pass.

    Channel-major planes: a clip's frames share its crop box as grid_sample's channels, and the
    crop is already the trunks' (B, 3, T, S, S) layout. The 1/255 is left to the colour maps after
    the crop, which touch fewer pixels.
    """
    b, t, h, w, c = clips.shape
    x = torch.empty((b, c, t, h, w), dtype=torch.float32, device=clips.device)
    return x.copy_(clips.permute(0, 4, 1, 2, 3)).view(b, c * t, h, w)


def crop_resize(
    x: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None
) -> torch.Tensor:
    """Crop one box per clip (all its frames) and resize it to ``size``², optionally mirrored.

    Boxes are (x0, y0, w, h) in input pixels (continuous); sampling is bilinear.

    Shape:
        - x: (B, C, H, W) with C = 3·T
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


def _hue_matrices(angle: torch.Tensor) -> torch.Tensor:
    """RGB -> RGB matrices rotating the YIQ chroma plane by ``angle`` radians. (B,) -> (B, 3, 3)."""
    to_yiq = angle.new_tensor(_RGB_TO_YIQ)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(angle.shape[0], 3, 3, device=angle.device, dtype=angle.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    return torch.linalg.inv(to_yiq) @ rot @ to_yiq


def _to_grey_matrix(n: int) -> torch.Tensor:
    """(n, 3, 3): every channel becomes the luma."""
    return torch.tensor(_GREY).expand(n, 3, 3).clone()


def _scaled_identity(f: torch.Tensor) -> torch.Tensor:
    """(n,) -> (n, 3, 3) f·I."""
    return f.view(-1, 1, 1) * torch.eye(3)


def _jitter_matrix(op: str, f: torch.Tensor) -> torch.Tensor:
    """The 3×3 RGB map of a colour-jitter op with factors ``f``, (n,) -> (n, 3, 3).

    brightness scales; contrast scales (its offset, (1 − f)·the clip's mean grey, needs the
    pixels: :meth:`VideoAugment._colour_position`); saturation blends with the luma; hue rotates
    the YIQ chroma plane by ``f`` turns.
    """
    if op in ("brightness", "contrast"):
        return _scaled_identity(f)
    if op == "saturation":
        return _scaled_identity(f) + (1 - f).view(-1, 1, 1) * _to_grey_matrix(len(f))
    if op == "hue":
        return _hue_matrices(2 * math.pi * f)
    raise ValueError(f"unknown colour op {op!r}")


_JITTER_OPS = ("brightness", "contrast", "saturation", "hue")  # the "fixed" order


def _colour_map(
    x: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor | None = None
) -> torch.Tensor:
    """``offset + matrix @ rgb`` at every pixel, one pass. Callers run it with autocast off, so
    it stays float32 (autocast would run ``bmm`` in bf16).

    Shape:
        - x: (B, 3, N) float32
        - matrix: (B, 3, 3), any device (copied without a sync)
        - offset: (B, 3) or None
        - output: (B, 3, N)
    """
    # non_blocking: a blocking copy to a GPU is a stream sync
    matrix = matrix.to(x.device, torch.float32, non_blocking=True)
    if offset is None:
        return torch.bmm(matrix, x)
    offset = offset.to(x.device, torch.float32, non_blocking=True)
    return torch.baddbmm(offset.unsqueeze(-1), matrix, x)


def _normalising_map(mean: tuple, std: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, 3) matrix and (3,) offset of (x − mean) / std."""
    m, s = torch.tensor(mean), torch.tensor(std)
    return torch.diag(1 / s), -m / s


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

        # the choices are made where the parameters were drawn (a CPU generator: no device sync)
        factors = {
            op: f.cpu() for op, f in zip(_JITTER_OPS, (bright, contrast, sat, hue), strict=True)
        }
        jitter, order = jitter.cpu(), order.cpu()
        takes = {op: jitter & (order == k).T for k, op in enumerate(_JITTER_OPS)}
        if cfg.hue == 0:  # a zero rotation: skipped, not rounded through YIQ and back
            takes["hue"] = torch.zeros_like(takes["hue"])
        with perf.autocast(dev, enabled=False):
            x = crop_resize(_float_planes(clips), boxes, size, flip)  # (B, 3·T, S, S), 0..255
            x = x.view(b, 3, t * size * size)
            to_unit = 1 / _UINT8_MAX  # folded into the first map that runs
            for position in range(len(_JITTER_OPS)):
                at = {op: rows[position] for op, rows in takes.items()}  # (B,) per op
                if any(bool(rows.any()) for rows in at.values()):
                    x = self._colour_position(x, at, factors, to_unit)
                    to_unit = 1.0
            if bool(blur.cpu().any()):  # the identity kernel of the others changes nothing
                sigma, blur = sigma.to(dev, non_blocking=True), blur.to(dev, non_blocking=True)
                x = _blur(x.view(b, 3 * t, size, size), sigma, blur, size).view(b, 3, -1)
            # grey, then (x − mean) / std: one map (the blur commutes with both)
            colour = torch.eye(3).repeat(b, 1, 1)
            grey = grey.cpu()
            colour[grey] = _to_grey_matrix(int(grey.sum()))
            normalise, offset = _normalising_map(cfg.mean, cfg.std)
            x = _colour_map(x, normalise @ colour * to_unit, offset.expand(b, 3))
        return x.view(b, 3, t, size, size)

    @staticmethod
    def _colour_position(
        x: torch.Tensor,
        at: dict[str, torch.Tensor],
        factors: dict[str, torch.Tensor],
        to_unit: float,
    ) -> torch.Tensor:
        """One jitter position: each clip's op there (the identity for clips without one), then
        the clamp to [0, 1]; ``to_unit`` scales the input first (1/255 before the first).

        Shape:
            - x: (B, 3, N) on the device; at, factors: {op: (B,)} on the CPU
            - output: (B, 3, N)
        """
        b = x.shape[0]
        matrix = torch.eye(3).repeat(b, 1, 1)
        for op, rows in at.items():
            if bool(rows.any()):
                matrix[rows] = _jitter_matrix(op, factors[op][rows])
        offset = None
        if bool(at["contrast"].any()):
            # contrast's offset: (1 − f)·the clip's mean grey, read from the pixels
            keep = torch.where(at["contrast"], 1 - factors["contrast"], 0.0)  # (B,)
            weight = keep[:, None] * torch.tensor(_GREY) * to_unit  # (B, 3), built on the CPU
            weight = weight.to(x.device, non_blocking=True)
            offset = (weight * x.mean(dim=2)).sum(dim=1, keepdim=True).expand(b, 3)
        return _colour_map(x, matrix * to_unit, offset).clamp_(0, 1)

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


def _pixel_crops(clips: torch.Tensor, corners: list[tuple[int, int]], size: int) -> torch.Tensor:
    """Cut a ``size``² box at whole pixels from each clip's frames (``corners`` its (x0, y0)), as
    float 0..255 channel-major planes: one slice when every clip has the same box, else one
    gather.

    Shape:
        - clips: (B, T, H, W, 3) uint8
        - output: (B, 3, T·size·size) float32
    """
    b, t, _, _, c = clips.shape
    if len(set(corners)) == 1:
        x0, y0 = corners[0]
        crops = clips[:, :, y0 : y0 + size, x0 : x0 + size].permute(0, 4, 1, 2, 3)
    else:
        # (B, 2, S): each clip's columns and rows; non_blocking: a blocking copy to a GPU syncs
        at = torch.tensor(corners)[:, :, None] + torch.arange(size)
        cols, rows = at.to(clips.device, non_blocking=True).unbind(dim=1)
        item = torch.arange(b, device=clips.device)[:, None, None]
        # indices split by the time slice: their dims come first, (B, S, S, T, 3)
        crops = clips[item, :, rows[:, :, None], cols[:, None, :]].permute(0, 4, 3, 1, 2)
    out = torch.empty((b, c, t, size, size), dtype=torch.float32, device=clips.device)
    return out.copy_(crops).view(b, c, t * size * size)


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

    def corners(self, height: int, width: int, n_crops: int) -> tuple[list[tuple[int, int]], float]:
        """Where the crops start, (x0, y0) in whole pixels of the frame resized to the short side:
        centre (1) or start/centre/end (3) along the long side (left/centre/right or
        top/centre/bottom), as the released code's test crops (``uniform_crop`` after
        ``random_short_side_scale_jitter``: the long side floored, the centre offset rounded up);
        and the input pixels per resized pixel (1.0: the frame is cut, not resampled).
        """
        s = self.crop_size
        scale = min(height, width) / self.short_side
        if scale == 1:
            rh, rw = height, width
        elif width >= height:
            rh, rw = self.short_side, math.floor(width / height * self.short_side)
        else:
            rh, rw = math.floor(height / width * self.short_side), self.short_side
        cx, cy = math.ceil((rw - s) / 2), math.ceil((rh - s) / 2)
        if n_crops == 1:
            return [(cx, cy)], scale
        if width >= height:
            return [(0, cy), (cx, cy), (rw - s, cy)], scale
        return [(cx, 0), (cx, cy), (cx, rh - s)], scale

    def boxes(self, height: int, width: int, n_crops: int) -> list[tuple[float, ...]]:
        """The crops of :meth:`corners` as boxes (x0, y0, w, h) in input pixels."""
        corners, scale = self.corners(height, width, n_crops)
        return [self._box(corner, scale) for corner in corners]

    def _box(self, corner: tuple[int, int], scale: float) -> tuple[float, ...]:
        side = self.crop_size * scale
        return (corner[0] * scale, corner[1] * scale, side, side)

    def _crops(
        self, clips: torch.Tensor, n_crops: int, sizes: torch.Tensor | None
    ) -> list[torch.Tensor]:
        b, t, h, w = _check_clips(clips)
        frame_sizes = [(h, w)] * b if sizes is None else sizes.tolist()
        placed = [self.corners(int(hh), int(ww), n_crops) for hh, ww in frame_sizes]
        # frames stored at the evaluation's short side need no resizing: their crops are slices
        cut = all(scale == 1 for _, scale in placed)
        normalise, offset = _normalising_map(self.mean, self.std)
        normalise, offset = (normalise / _UINT8_MAX).expand(b, 3, 3), offset.expand(b, 3)
        s = self.crop_size
        out = []
        with perf.autocast(clips.device, enabled=False):
            planes = None if cut else _float_planes(clips)  # (B, 3·T, H, W), 0..255
            for i in range(n_crops):  # 1 or 3 positions, each batched over clips
                if cut:
                    y = _pixel_crops(clips, [corners[i] for corners, _ in placed], s)
                else:
                    boxes = torch.tensor([self._box(corners[i], f) for corners, f in placed])
                    y = crop_resize(planes, boxes, s).view(b, 3, t * s * s)
                out.append(_colour_map(y, normalise, offset).view(b, 3, t, s, s))
        return out

    def __call__(self, clips: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
        return self._crops(clips, 1, sizes)[0]

    def three_crop(self, clips: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
        return torch.stack(self._crops(clips, 3, sizes), dim=1)
