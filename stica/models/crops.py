"""Feature crops (paper sec. 3.2, eq. 5): cheap extra views cut from the video trunk's map.

Ψ runs once per RGB crop; from each map we cut spatial crops (square, full time) and temporal
crops (full space), each its own view. Geometry comes from the map's shape and
:class:`~stica.config.FeatureCropConfig`; offsets are drawn uniformly with an explicit
``torch.Generator``, independently per crop and per sample.

Efficiency is the point of the method: :func:`embed_crops` gathers all crops of one shape with
one row lookup (:func:`~stica.determinism.take_rows`, whose backward is deterministic) into one
(K*B, D, t, h, w) batch and pools + projects them in ONE call per shape.
:func:`embed_crops_loop` is the naive reference (one crop of one sample at a time), used by the
tests and the benchmark.

Views come back by group, ``{"space_medium": (K, B, E), "space_small": ..., "time_medium": ...,
"time_small": ...}`` (groups without crops are absent), so the within-modal loss can pick its
pairs by group (:mod:`stica.losses.feature_crops`) or drop small x small pairs by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from stica.config import FeatureCropConfig
from stica.determinism import take_rows

# (group name, scale, spatial?)
GROUPS = (
    ("space_medium", "medium", True),
    ("space_small", "small", True),
    ("time_medium", "medium", False),
    ("time_small", "small", False),
)

EmbedFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class CropGroup:
    """K crops of one shape for each of B samples.

    ``offsets`` (K, B, 3) long holds each crop's (t0, y0, x0) in the full map; ``size`` is (t, h, w).
    """

    name: str
    scale: str
    size: tuple[int, int, int]
    offsets: torch.Tensor  # (K, B, 3)

    @property
    def count(self) -> int:
        return int(self.offsets.shape[0])


def crop_sizes(
    config: FeatureCropConfig, map_shape: Sequence[int]
) -> list[tuple[str, str, int, tuple[int, int, int]]]:
    """(name, scale, count, (t, h, w)) of each non-empty crop group for a map ending in (T1, H1, W1).

    Raises :class:`~stica.config.ConfigError` when a crop is larger than the map.
    """
    config.validate(map_shape)
    t1, h1, w1 = (int(s) for s in map_shape[-3:])
    out = []
    for name, scale, spatial in GROUPS:
        count, size = getattr(config, name), getattr(config, f"{name}_size")
        if count == 0:
            continue
        shape = (t1, size, size) if spatial else (size, h1, w1)
        out.append((name, scale, count, shape))
    return out


def sample_crops(
    config: FeatureCropConfig,
    map_shape: Sequence[int],
    batch: int,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> list[CropGroup]:
    """Draw every crop's offsets uniformly over the positions where it fits inside the map.

    ``map_shape`` ends with (T1, H1, W1) (e.g. ``model.video_map_shape(...)`` or ``fmap.shape``).
    Offsets are drawn on the generator's device, then moved to ``device``.
    """
    t1, h1, w1 = (int(s) for s in map_shape[-3:])
    groups = []
    for name, scale, count, (t, h, w) in crop_sizes(config, map_shape):
        gen_device = generator.device
        starts = [
            torch.randint(0, limit + 1, (count, batch), generator=generator, device=gen_device)
            for limit in (t1 - t, h1 - h, w1 - w)
        ]
        offsets = torch.stack(starts, dim=-1).to(device)  # (K, B, 3)
        groups.append(CropGroup(name, scale, (t, h, w), offsets))
    return groups


def gather_crops(fmap: torch.Tensor, group: CropGroup) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut all K crops of every sample out of ``fmap`` in one gather (no Python loop).

    Shape:
        fmap (B, D, T1, H1, W1) -> crops (K * B, D, t, h, w), time_offset (K * B,) long;
        row k * B + b is crop k of sample b.
    """
    k, b = group.offsets.shape[:2]
    t, h, w = group.size
    dev = fmap.device
    off = group.offsets.to(dev)
    t0, y0, x0 = (off[..., i].view(k, b, 1, 1, 1) for i in range(3))  # each (K, B, 1, 1, 1)
    ti = t0 + torch.arange(t, device=dev).view(1, 1, t, 1, 1)  # (K, B, t, 1, 1)
    yi = y0 + torch.arange(h, device=dev).view(1, 1, 1, h, 1)  # (K, B, 1, h, 1)
    xi = x0 + torch.arange(w, device=dev).view(1, 1, 1, 1, w)  # (K, B, 1, 1, w)
    bi = torch.arange(b, device=dev).view(1, b, 1, 1, 1)  # (1, B, 1, 1, 1)
    _, d, t1, h1, w1 = fmap.shape
    rows = ((bi * t1 + ti) * h1 + yi) * w1 + xi  # (K, B, t, h, w): row of the flattened map
    positions = fmap.permute(0, 2, 3, 4, 1).reshape(-1, d)  # (B*T1*H1*W1, D)
    # not positions[rows]: the backward of advanced indexing is order-nondeterministic on CPU
    crops = take_rows(positions, rows)  # (K, B, t, h, w, D)
    crops = crops.reshape(k * b, t, h, w, d).permute(0, 4, 1, 2, 3)  # (K*B, D, t, h, w)
    return crops, off[..., 0].reshape(k * b)


def embed_crops(
    embed_fn: EmbedFn, fmap: torch.Tensor, groups: Sequence[CropGroup]
) -> dict[str, torch.Tensor]:
    """Embed every crop group with ONE ``embed_fn`` call per group (batched path).

    ``embed_fn(crops, time_offset)`` maps (N, D, t, h, w) and (N,) to (N, E), e.g.
    ``model.embed_video_map``. Groups without crops are absent from the result.

    Shape:
        fmap (B, D, T1, H1, W1) -> {group name: (K, B, E)}
    """
    b = fmap.shape[0]
    views = {}
    for group in groups:
        crops, time_offset = gather_crops(fmap, group)  # (K*B, D, t, h, w), (K*B,)
        z = embed_fn(crops, time_offset)  # (K*B, E)
        views[group.name] = z.view(group.count, b, -1)
    return views


def embed_crops_loop(
    embed_fn: EmbedFn, fmap: torch.Tensor, groups: Sequence[CropGroup]
) -> dict[str, torch.Tensor]:
    """Reference path: slice and embed one crop of one sample at a time (slow; tests, benchmark).

    Shape:
        fmap (B, D, T1, H1, W1) -> {group name: (K, B, E)}
    """
    b = fmap.shape[0]
    views = {}
    for group in groups:
        t, h, w = group.size
        rows = []
        for k, per_sample in enumerate(group.offsets.tolist()):
            for i, (t0, y0, x0) in enumerate(per_sample):
                crop = fmap[i : i + 1, :, t0 : t0 + t, y0 : y0 + h, x0 : x0 + w]
                offset = torch.tensor([t0], device=fmap.device)
                rows.append(embed_fn(crop, offset))  # (1, E)
            assert len(rows) == (k + 1) * b
        views[group.name] = torch.cat(rows).view(group.count, b, -1)
    return views
