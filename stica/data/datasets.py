"""PyTorch datasets over a store: random clips for training, uniformly spaced clips for evaluation.

Randomness is a pure function of ``(seed, epoch, index)``: the same sample gets the same clip in any
DataLoader worker, on any rank, and after ``--resume``, which is what makes resuming exact.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from stica.data.clips import Clip, ClipReader, EncodedClips
from stica.data.store import Store, VideoRecord
from stica.errors import SticaError


def uniform_starts(duration: float, clip_seconds: float, count: int) -> list[float]:
    """``count`` clip start times evenly spread so the clips cover the video from start to end."""
    last = max(0.0, duration - clip_seconds)
    if count == 1:
        return [last / 2]
    return [last * i / (count - 1) for i in range(count)]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch) * 1_000_033 + index


def pad_frames(frames: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack clips (or images) whose frames may differ in size (a store of videos with several
    aspect ratios): each is padded at the bottom and right to the largest by repeating its edge
    pixels, so bilinear sampling at a clip's border sees its own edge, as
    ``padding_mode="border"`` does. The augmentation and evaluation crops place their boxes inside
    each clip's own size. Works on any device and dtype.

    Shape:
        frames[i] (T, H_i, W_i, C) or (C, H_i, W_i): height and width are dims 1 and 2
        -> frames (B, ...) of the largest H, W, and sizes (B, 2) int64 on the CPU as (H_i, W_i)
    """
    sizes = torch.tensor([tuple(f.shape[1:3]) for f in frames], dtype=torch.int64)
    if bool((sizes == sizes[0]).all()):
        return torch.stack(list(frames)), sizes
    height, width = (int(v) for v in sizes.max(dim=0).values)
    return torch.stack([_pad_edges(f, height, width) for f in frames]), sizes


def _pad_edges(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad dims 1 and 2 to ``height x width`` by repeating the last row and column (any dtype,
    unlike ``F.pad``'s replicate mode)."""
    h, w = frames.shape[1:3]
    if (h, w) == (height, width):
        return frames
    rows = torch.arange(height, device=frames.device).clamp_(max=h - 1)
    cols = torch.arange(width, device=frames.device).clamp_(max=w - 1)
    return frames[:, rows][:, :, cols]


def collate_clips(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The DataLoader's batch of clip samples: ``frames`` through :func:`pad_frames` (plus their
    ``sizes``), everything else stacked as usual."""
    frames, sizes = pad_frames([s["frames"] for s in samples])
    rest = torch.utils.data.default_collate(
        [{k: v for k, v in s.items() if k != "frames"} for s in samples]
    )
    return {**rest, "frames": frames, "sizes": sizes}


class RandomClips(torch.utils.data.Dataset):
    """One random clip (frames + the audio of the same span) per record; items are ``(epoch, index)``.

    ``encoded=True`` leaves the frames undecoded, as :class:`UniformClips` does: the same clip,
    its frames as ``jpeg`` (the stored files) and ``rows``.
    """

    def __init__(
        self,
        store: Store,
        records: Sequence[VideoRecord],
        num_frames: int,
        seed: int = 0,
        with_labels: bool = False,
        encoded: bool = False,
    ) -> None:
        if not records:
            raise SticaError(f"{store.root}: no videos to train on (after filtering)")
        self.reader = ClipReader(store)
        self.records = list(records)
        self.num_frames = num_frames
        self.clip_seconds = num_frames / store.meta.fps
        self.seed = seed
        self.with_labels = with_labels
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Any]:
        epoch, index = item
        record = self.records[index]
        rng = random.Random(sample_seed(self.seed, epoch, index))
        start = rng.uniform(0.0, max(0.0, record.duration - self.clip_seconds))
        if self.encoded:
            clips = self.reader.read_many_encoded(record.id, [start], self.num_frames)
            clip = clips.clips[0]
            frames = {"jpeg": clips.jpeg, "rows": torch.from_numpy(clips.rows[0])}
        else:
            clip = self.reader.read(record.id, start, self.num_frames)
            # (T, H, W, 3) uint8
            frames = {"frames": torch.from_numpy(np.ascontiguousarray(clip.frames))}
        sample = {
            **frames,
            "audio": torch.from_numpy(clip.audio.astype(np.float32) / 32768.0),  # (S,)
            "index": torch.tensor(index),
        }
        if self.with_labels:
            sample["label"] = torch.tensor(record.label)
        return sample


class UniformClips(torch.utils.data.Dataset):
    """``clips_per_video`` evenly spaced clips of every record; item ``i`` is clip ``i % clips`` of
    video ``i // clips``.

    The clips of a video are decoded together (:meth:`ClipReader.read_many`: each stored frame
    once) and kept until another video is asked for, so reading the items in order, as
    evaluation's batches do, decodes every frame of a video once however much its clips overlap.

    ``encoded=True`` leaves the frames undecoded: items hold ``jpeg`` (the JPEG files of the
    frames the video's clips cover) and ``rows`` instead of ``frames``, batched by
    :func:`~stica.data.jpeg.collate_encoded_clips` and decoded where the model runs.
    """

    def __init__(
        self,
        store: Store,
        records: Sequence[VideoRecord],
        num_frames: int,
        clips_per_video: int,
        encoded: bool = False,
    ) -> None:
        self.reader = ClipReader(store)
        self.records = list(records)
        self.num_frames = num_frames
        self.clips_per_video = clips_per_video
        self.clip_seconds = num_frames / store.meta.fps
        self.encoded = encoded
        self._video_clips: tuple[int, list[Clip] | EncodedClips] | None = None  # the last video

    def __len__(self) -> int:
        return len(self.records) * self.clips_per_video

    def clips_of(self, video: int) -> list[Clip] | EncodedClips:
        if self._video_clips is None or self._video_clips[0] != video:
            record = self.records[video]
            starts = uniform_starts(record.duration, self.clip_seconds, self.clips_per_video)
            read = self.reader.read_many_encoded if self.encoded else self.reader.read_many
            self._video_clips = (video, read(record.id, starts, self.num_frames))
        return self._video_clips[1]

    def __getitem__(self, item: int) -> dict[str, Any]:
        video, clip_index = divmod(item, self.clips_per_video)
        record = self.records[video]
        clips = self.clips_of(video)
        if self.encoded:
            clip = clips.clips[clip_index]
            frames = {"jpeg": clips.jpeg, "rows": torch.from_numpy(clips.rows[clip_index])}
        else:
            clip = clips[clip_index]
            frames = {"frames": torch.from_numpy(np.ascontiguousarray(clip.frames))}
        return {
            **frames,
            "audio": torch.from_numpy(clip.audio.astype(np.float32) / 32768.0),
            "video": torch.tensor(video),
            "label": torch.tensor(record.label),
        }


class EpochBatchSampler(torch.utils.data.Sampler):
    """Global batches of a seeded permutation, split across ranks; yields lists of (epoch, index).

    Rank ``r`` of ``W`` takes rows ``[r*B, (r+1)*B)`` of every global batch of ``W*B``, so W processes
    see exactly the batch one process would see with ``W*B``. Incomplete batches are dropped.
    ``start_batch`` skips batches already done in this epoch (resume).
    """

    def __init__(
        self,
        size: int,
        batch_per_rank: int,
        epoch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ) -> None:
        self.size = size
        self.batch = batch_per_rank
        self.epoch = epoch
        self.seed = seed
        self.rank = rank
        self.world = world_size
        self.start_batch = start_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Point the sampler at another epoch (a loader whose workers persist keeps its sampler:
        it is iterated in the main process at the start of every pass)."""
        self.epoch = epoch
        self.start_batch = start_batch

    @staticmethod
    def batches_per_epoch(size: int, global_batch: int) -> int:
        return size // global_batch

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch(self.size, self.batch * self.world) - self.start_batch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        gen = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1) % (2**63))
        order = torch.randperm(self.size, generator=gen).tolist()
        global_batch = self.batch * self.world
        for b in range(self.start_batch, self.batches_per_epoch(self.size, global_batch)):
            rows = order[b * global_batch : (b + 1) * global_batch]
            mine = rows[self.rank * self.batch : (self.rank + 1) * self.batch]
            yield [(self.epoch, i) for i in mine]
