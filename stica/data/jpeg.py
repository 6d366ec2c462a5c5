"""Batches of clips whose frames travel as the stored JPEG files and are decoded where the model
runs: ``torchvision.io.decode_jpeg`` on a list of files, on the GPU (nvJPEG) or on the CPU.

A loader worker that ships decoded clips moves ``T`` frames of ``H x W x 3`` bytes per clip
through shared and pinned memory (and evaluation's clips of a video overlap: 10 clips of 30
frames from a 90-frame video), while the JPEG files of the frames they cover are some kilobytes
each, once per video. The decoded frames are assembled into the same ``(B, T, H, W, 3)`` uint8
batch as :func:`~stica.data.datasets.collate_clips` gives, padded the same way when the videos
differ in size. Every stage's loop takes its frames through :func:`batch_frames`, whichever way
its loader shipped them (``jpeg_decode`` of the pretrain, features and finetune sections).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg

from stica.config import JpegDecode
from stica.data.datasets import collate_clips, pad_frames
from stica.errors import SticaError


def decode_on_device(setting: JpegDecode, device: torch.device | str) -> bool:
    """A section's ``jpeg_decode`` on ``device``: ``auto`` decodes on the model's device when it is
    a GPU, in the loader workers (PIL) otherwise; ``device`` decodes in the main process on the
    model's device whatever it is (on the CPU too: tests)."""
    if setting == "auto":
        return torch.device(device).type == "cuda"
    return setting == "device"


def clip_collate(on_device: bool) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    """The loader's ``collate_fn`` for clip samples: encoded (``on_device``, from a dataset built
    with ``encoded=True``) or decoded."""
    return collate_encoded_clips if on_device else collate_clips


def batch_frames(
    batch: dict[str, torch.Tensor], device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's frames on ``device``: decoded there if the loader shipped JPEG files
    (:func:`collate_encoded_clips`), copied there (asynchronously from pinned memory) if it
    shipped decoded frames (:func:`~stica.data.datasets.collate_clips`).

    Shape:
        -> frames (B, T, H, W, 3) uint8 on ``device``, sizes (B, 2) int64 on the CPU as (H_i, W_i)
    """
    if "jpeg" in batch:
        return decode_clips(batch, device)
    return batch["frames"].to(device, non_blocking=True), batch["sizes"]


def collate_encoded_clips(samples: list[dict]) -> dict[str, torch.Tensor]:
    """The DataLoader's batch of samples holding ``jpeg`` (the JPEG files of their video's frames,
    the same list for every clip of a video) and ``rows`` ((T,) rows of that list): the files of
    each video once, concatenated, and each clip's frames as indices into them. Samples are of
    one video when their ``video`` keys match; samples without one (random training clips, one
    per video in a batch) keep their own files.

    Shape:
        -> jpeg (n_bytes,) uint8, jpeg_offsets (U + 1,) int64, frame_index (B, T) int64 into
        the U files, and the other keys stacked as ``default_collate`` does
    """
    files: list[np.ndarray] = []
    base: dict[int, int] = {}  # video -> its first file in ``files``
    index = []
    for k, s in enumerate(samples):
        video = int(s["video"]) if "video" in s else -1 - k
        if video not in base:
            base[video] = len(files)
            files.extend(s["jpeg"])
        index.append(s["rows"] + base[video])
    offsets = np.zeros(len(files) + 1, np.int64)
    np.cumsum([len(f) for f in files], out=offsets[1:])
    rest = torch.utils.data.default_collate(
        [{k: v for k, v in s.items() if k not in ("jpeg", "rows")} for s in samples]
    )
    return {
        **rest,
        "jpeg": torch.from_numpy(np.concatenate(files)),
        "jpeg_offsets": torch.from_numpy(offsets),
        "frame_index": torch.stack(index),
    }


def decode_clips(
    batch: dict[str, torch.Tensor], device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a batch of :func:`collate_encoded_clips` on ``device`` and assemble its clips.

    Frames of different sizes (a store of several aspect ratios) are padded by
    :func:`~stica.data.datasets.pad_frames`, as batches of decoded clips are; ``sizes`` holds each
    clip's own size.

    Shape:
        -> frames (B, T, H, W, 3) uint8 on ``device`` (a channels-first tensor's view),
        sizes (B, 2) int64 on the CPU as (H_i, W_i)
    """
    data, offsets = batch["jpeg"], batch["jpeg_offsets"].tolist()
    files = [data[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    try:
        images = decode_jpeg(files, mode=ImageReadMode.RGB, device=device)  # U x (3, H_u, W_u)
    except RuntimeError as e:
        # evaluation's samples name their video, training's their dataset item
        key, what = ("video", "videos") if "video" in batch else ("index", "dataset items")
        ids = sorted(set(batch[key].tolist()))
        raise SticaError(f"cannot decode the stored JPEG frames of {what} {ids}: {e}") from None
    stacked, frame_sizes = pad_frames(images)  # (U, 3, H, W), (U, 2)
    index = batch["frame_index"]  # (B, T)
    frames = stacked[index.to(stacked.device, non_blocking=True)]  # (B, T, 3, H, W)
    return frames.permute(0, 1, 3, 4, 2), frame_sizes[index[:, 0]]
