"""Feature crops (paper sec. 3.2, eq. 5): cheap extra views cut from the video trunk's map.

Ψ runs once per RGB crop; from each map we cut spatial crops (square, full time) and temporal
crops (full space), each its own view. Geometry comes from the map's shape and
:class:`~stica.config.FeatureCropConfig`; offsets are drawn uniformly with an explicit
``torch.Generator``, independently per crop and per sample.

Efficiency is the point of the method. Every pooling starts with the spatial average, so a crop is
never cut out: :func:`crop_tokens` averages every placement of every crop window with one small
matmul and picks every crop's time steps with one row lookup (:func:`~stica.determinism.take_rows`,
whose backward is deterministic), and :func:`embed_crops` pools the crops of all shapes, with the
whole maps, in one transformer call and projects each shape with its own head call (BatchNorm
statistics per shape). On a GPU the number of kernels it launches does not grow with the crops
(the step is launch-bound at small batches). :func:`embed_crops_loop` is the naive reference (one
crop of one sample at a time), used by the tests and the benchmark.

Views come back by group, ``{"space_medium": (K, B, E), "space_small": ..., "time_medium": ...,
"time_small": ...}`` (groups without crops are absent), so the within-modal loss can pick its
pairs by group (:mod:`stica.losses.feature_crops`) or drop small x small pairs by name.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import torch

from stica import perf
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
TokensEmbedFn = Callable[[list[tuple[torch.Tensor, torch.Tensor | None]]], list[torch.Tensor]]


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
) -> list[CropGroup]:
    """Draw every crop's offsets uniformly over the positions where it fits inside the map.

    ``map_shape`` ends with (T1, H1, W1) (e.g. ``model.video_map_shape(...)`` or ``fmap.shape``).
    Offsets stay on the generator's device (training: the CPU, where :func:`crop_tokens` turns
    them into row indices without a kernel launch or a device sync).
    """
    t1, h1, w1 = (int(s) for s in map_shape[-3:])
    groups = []
    for name, scale, count, (t, h, w) in crop_sizes(config, map_shape):
        gen_device = generator.device
        starts = [
            torch.randint(0, limit + 1, (count, batch), generator=generator, device=gen_device)
            for limit in (t1 - t, h1 - h, w1 - w)
        ]
        offsets = torch.stack(starts, dim=-1)  # (K, B, 3)
        groups.append(CropGroup(name, scale, (t, h, w), offsets))
    return groups


@functools.lru_cache(maxsize=16)
def _window_boxes(
    windows: tuple[tuple[int, int], ...], h1: int, w1: int, device: torch.device
) -> tuple[torch.Tensor, dict[tuple[int, int], int]]:
    """Averaging weights of every placement of every window size on an (H1, W1) grid, built once
    per device (not copied there every step).

    Shape: -> boxes (P, H1 * W1) float32, one row per placement; and the first row of each
    (h, w) (its placements follow row-major: row ``first + y0 * (W1 - w + 1) + x0``).
    """
    rows, first = [], {}
    for h, w in windows:
        first[(h, w)] = len(rows)
        for y0 in range(h1 - h + 1):
            for x0 in range(w1 - w + 1):
                box = torch.zeros(h1, w1)
                box[y0 : y0 + h, x0 : x0 + w] = 1.0 / (h * w)
                rows.append(box.flatten())
    return torch.stack(rows).to(device, non_blocking=True), first  # no stream sync


def crop_tokens(
    fmap: torch.Tensor, groups: Sequence[CropGroup], full: bool = False
) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """The spatial mean of every time step of every crop: all a pooling reads of a crop
    (:class:`~stica.models.pooling.SequencePool`), without cutting the crops out.

    One small matmul averages every placement of every crop's window at every time step of the
    map (a (P, H1·W1) box matrix, in float32 whatever the autocast), then ONE row lookup
    (:func:`~stica.determinism.take_rows`, deterministic backward) picks each crop's steps. The
    row indices are computed where the offsets live (the CPU generator's device in training) and
    copied once. ``full`` also returns the tokens of the whole map of every sample.

    Shape:
        fmap (N, D, T1, H1, W1), groups of K crops of B <= N samples (the first B rows of fmap)
        -> full tokens (N, T1, D) or None, {group name: (K * B, t, D)}; row k * B + b of a group
        is crop k of sample b.
    """
    n, d, t1, h1, w1 = fmap.shape
    windows = [(g.size[1], g.size[2]) for g in groups] + ([(h1, w1)] if full else [])
    boxes, first = _window_boxes(tuple(dict.fromkeys(windows)), h1, w1, fmap.device)
    placements = boxes.shape[0]
    index_parts, lengths = [], []
    if full:
        steps = torch.arange(n * t1).view(n, t1)  # (N, T1): sample-major (b * T1 + s)
        index_parts.append(steps * placements + first[(h1, w1)])
        lengths.append((n, t1))
    for group in groups:
        k, b = group.offsets.shape[:2]
        t, h, w = group.size
        off = group.offsets.cpu()
        t0, y0, x0 = (off[..., i].view(k, b, 1) for i in range(3))  # each (K, B, 1)
        steps = torch.arange(b).view(1, b, 1) * t1 + t0 + torch.arange(t)  # (K, B, t)
        place = first[(h, w)] + y0 * (w1 - w + 1) + x0  # (K, B, 1)
        index_parts.append(steps * placements + place)
        lengths.append((k * b, t))
    # non_blocking: a blocking copy to a GPU waits for all queued work (a stream sync)
    index = torch.cat([part.flatten() for part in index_parts]).to(fmap.device, non_blocking=True)
    with perf.autocast(fmap.device, enabled=False):  # float32 window means
        x = fmap.permute(0, 2, 3, 4, 1).reshape(n * t1, h1 * w1, d).float()  # (N*T1, H1*W1, D)
        table = torch.matmul(boxes, x)  # (N*T1, P, D): every window's mean
        rows = take_rows(table.reshape(-1, d), index)  # (R, D)
    parts = [
        part.view(count, t, d)
        for part, (count, t) in zip(rows.split([c * t for c, t in lengths]), lengths, strict=True)
    ]
    full_tokens = parts.pop(0) if full else None
    return full_tokens, {g.name: part for g, part in zip(groups, parts, strict=True)}


def embed_crops(
    embed_fn: TokensEmbedFn, fmap: torch.Tensor, groups: Sequence[CropGroup], full: bool = False
) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """Embed every crop group (and with ``full``, every whole map) in one ``embed_fn`` call.

    ``embed_fn(token_sets)`` maps [(tokens (N_i, t_i, D), time_offset (N_i,) or None)] to
    [(N_i, E)], e.g. ``model.embed_video_tokens`` with the full map's ``tokens``: one pooling
    call for every set whose token count matches, one head call per set. Groups without crops
    are absent from the result.

    Shape:
        fmap (N, D, T1, H1, W1) -> whole maps (N, E) or None, {group name: (K, B, E)}
    """
    full_tokens, tokens = crop_tokens(fmap, groups, full)
    sets = [(full_tokens, None)] if full else []
    for group in groups:
        time_offset = group.offsets[..., 0].reshape(-1).to(fmap.device, non_blocking=True)
        sets.append((tokens[group.name], time_offset))
    embedded = embed_fn(sets)
    z_full = embedded.pop(0) if full else None
    views = {
        g.name: z.view(g.count, g.offsets.shape[1], -1)
        for g, z in zip(groups, embedded, strict=True)
    }
    return z_full, views


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
