"""Random access to clips of a store: frames and the audio of exactly the same time span.

Short-video rule: a clip of ``T`` frames lasts ``L = T / fps`` seconds. The requested start is
clamped to ``[0, max(0, duration - L)]`` and snapped to the nearest stored frame. A video with
fewer than ``T`` frames starts at 0 and repeats its last frame up to ``T``; its audio is
zero-padded at the end. Audio always has ``round(L * sample_rate)`` samples starting at the
clip's first frame; videos without audio give zeros (check ``VideoRecord.has_audio``).
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from stica.data.store import Store, VideoRecord
from stica.errors import SticaError

_JPEG = ("JPEG",)
_NO_FRAMES = np.empty((0, 0, 0, 3), np.uint8)


@dataclass
class Clip:
    frames: np.ndarray  # (T, H, W, 3) uint8
    audio: np.ndarray  # (S,) int16, S == round(T / fps * sample_rate)
    start: float  # seconds, after the short-video rule


@dataclass
class EncodedClips:
    """Clips of one video with undecoded frames (:meth:`ClipReader.read_many_encoded`)."""

    jpeg: list[np.ndarray]  # the stored JPEG file of each frame of the clips' union, in order
    rows: list[np.ndarray]  # per clip, (T,) int64 rows of ``jpeg`` (repeats: short videos)
    clips: list[Clip]  # audio and start of each clip; frames empty


class _Shard:
    """An open shard with its small index arrays in memory."""

    def __init__(self, path: Path):
        self.file = h5py.File(path, "r")
        self.jpeg = self.file["jpeg"]
        self.audio = self.file["audio"]
        self.frame_offsets = self.file["frame_offsets"][()]  # (F + 1,)
        self.video_frames = self.file["video_frames"][()]  # (N + 1,)
        self.video_samples = self.file["video_samples"][()]  # (N + 1,)

    def encoded(self, index: int, frame_ids: np.ndarray) -> list[np.ndarray]:
        """The stored JPEG files of frames ``frame_ids`` (sorted, unique) of video ``index``,
        undecoded: views into one contiguous read of the span they cover.

        Shape:
            returns len(frame_ids) arrays (n_bytes_i,) uint8
        """
        first = self.video_frames[index]
        lo, hi = int(frame_ids.min()), int(frame_ids.max()) + 1
        b0, b1 = self.frame_offsets[first + lo], self.frame_offsets[first + hi]
        blob = self.jpeg[b0:b1]  # (b1 - b0,) uint8: one read for the whole span
        offsets = self.frame_offsets[first + lo : first + hi + 1] - b0
        return [blob[offsets[k] : offsets[k + 1]] for k in (frame_ids - lo).tolist()]

    def frames(self, index: int, frame_ids: np.ndarray) -> np.ndarray:
        """Decode stored frames ``frame_ids`` (sorted, may repeat) of video ``index``.

        Shape:
            returns (len(frame_ids), H, W, 3) uint8
        """
        unique, rows = np.unique(frame_ids, return_inverse=True)
        out = None
        for k, data in enumerate(self.encoded(index, unique)):
            # formats=JPEG skips PIL's probing of every other image plugin (half the time)
            image = Image.open(io.BytesIO(data), formats=_JPEG)
            if image.mode != "RGB":
                image = image.convert("RGB")
            pixels = np.asarray(image)  # (H, W, 3)
            if out is None:
                out = np.empty((len(unique), *pixels.shape), np.uint8)
            out[k] = pixels
        return out if len(unique) == len(frame_ids) else out[rows]  # short videos repeat

    def samples(self, index: int, start: int, count: int) -> np.ndarray:
        """``count`` int16 samples from ``start`` (zero-padded past the end).

        Shape:
            returns (count,) int16
        """
        a0, a1 = self.video_samples[index], self.video_samples[index + 1]
        out = np.zeros(count, np.int16)
        lo = a0 + max(start, 0)
        hi = min(a0 + start + count, a1)
        if hi > lo:
            out[lo - a0 - start : hi - a0 - start] = self.audio[lo:hi]
        return out

    def close(self) -> None:
        self.file.close()


class ClipReader:
    """Reads clips from a store. Picklable: HDF5 handles are opened lazily in the process that
    reads (and reopened after a fork), so it is safe in DataLoader workers.

    Short videos follow the module's rule: start clamped to [0, duration - clip length],
    last frame repeated and audio zero-padded when the video is shorter than the clip.
    """

    def __init__(self, store: Store | str | Path):
        self.store = store if isinstance(store, Store) else Store(store)
        self.fps = self.store.meta.fps
        self.sample_rate = self.store.meta.sample_rate
        self._shards: dict[str, _Shard] = {}
        self._pid = os.getpid()

    def __getstate__(self):
        return {"store": self.store}

    def __setstate__(self, state):
        self.__init__(state["store"])

    def _shard(self, name: str) -> _Shard:
        if self._pid != os.getpid():  # inherited through fork: never share HDF5 handles
            self._shards, self._pid = {}, os.getpid()
        shard = self._shards.get(name)
        if shard is None:
            path = self.store.root / name
            try:
                shard = _Shard(path)
            except OSError as e:
                raise SticaError(f"cannot open shard {path}: {e}") from None
            self._shards[name] = shard
        return shard

    def clip_start(self, video_id: str, start: float, num_frames: int) -> int:
        """First stored frame of the clip after the short-video rule."""
        rec = self.store.get(video_id)
        first = int(round(max(start, 0.0) * self.fps))
        return max(0, min(first, rec.num_frames - num_frames))

    def read(self, video_id: str, start: float, num_frames: int) -> Clip:
        """``num_frames`` frames from ``start`` seconds and the audio of the same span.

        Shape:
            frames (num_frames, H, W, 3) uint8; audio (round(num_frames / fps * sr),) int16
        """
        return self.read_many(video_id, [start], num_frames)[0]

    def read_many(self, video_id: str, starts: list[float], num_frames: int) -> list[Clip]:
        """One clip per start, as :meth:`read` gives them, decoding every stored frame once:
        evaluation's uniformly spaced clips overlap (10 clips of 30 frames in a 3 s video at
        30 fps are 300 frames from 90), so this decodes up to ``len(starts)`` times fewer JPEGs.

        Shape:
            each clip: frames (num_frames, H, W, 3) uint8; audio (round(num_frames / fps * sr),)
        """
        rec, union, rows, clips = self._plan(video_id, starts, num_frames)
        decoded = self._shard(rec.shard).frames(rec.index, union)  # (len(union), H, W, 3)
        for clip, clip_rows in zip(clips, rows, strict=True):
            # a clip that is the union itself (one clip, no repeats) needs no copy
            clip.frames = decoded if len(clip_rows) == len(union) else decoded[clip_rows]
        return clips

    def read_many_encoded(
        self, video_id: str, starts: list[float], num_frames: int
    ) -> EncodedClips:
        """The clips of :meth:`read_many` with their frames left as the stored JPEG files, for
        decoding elsewhere (in batches on a GPU): each frame of the union once, and per clip the
        rows of the union it shows. ``Clip.frames`` of the clips is empty.

        Shape:
            jpeg: U arrays (n_bytes,) uint8; rows: one (num_frames,) int64 per clip, into jpeg
        """
        rec, union, rows, clips = self._plan(video_id, starts, num_frames)
        return EncodedClips(self._shard(rec.shard).encoded(rec.index, union), rows, clips)

    def _plan(
        self, video_id: str, starts: list[float], num_frames: int
    ) -> tuple[VideoRecord, np.ndarray, list[np.ndarray], list[Clip]]:
        """The stored frames the clips need (their sorted union), each clip's rows of it, and the
        clips with their audio read (frames not yet)."""
        rec = self.store.get(video_id)
        if rec.num_frames == 0:
            raise SticaError(f"{video_id}: audio-only record, use read_audio()")
        if num_frames < 1:
            raise ValueError("num_frames must be >= 1")
        firsts = [self.clip_start(video_id, start, num_frames) for start in starts]
        # short videos repeat their last frame
        ids = [np.minimum(np.arange(f, f + num_frames), rec.num_frames - 1) for f in firsts]
        union = np.unique(np.concatenate(ids))
        shard = self._shard(rec.shard)
        n_samples = round(num_frames / self.fps * self.sample_rate)
        clips = []
        for first in firsts:
            a0 = round(first / self.fps * self.sample_rate)
            if rec.has_audio:
                audio = shard.samples(rec.index, a0, n_samples)
            else:
                audio = np.zeros(n_samples, np.int16)
            clips.append(Clip(frames=_NO_FRAMES, audio=audio, start=first / self.fps))
        return rec, union, [np.searchsorted(union, frame_ids) for frame_ids in ids], clips

    def read_audio(self, video_id: str, start: float, seconds: float) -> np.ndarray:
        """``seconds`` of audio from ``start`` (same clamping rule; zero-padded when shorter).

        Shape:
            returns (round(seconds * sample_rate),) int16
        """
        rec = self.store.get(video_id)
        n_samples = round(seconds * self.sample_rate)
        if not rec.has_audio:
            return np.zeros(n_samples, np.int16)
        start = min(max(start, 0.0), max(0.0, rec.duration - seconds))
        a0 = round(start * self.sample_rate)
        return self._shard(rec.shard).samples(rec.index, a0, n_samples)

    def close(self) -> None:
        for shard in self._shards.values():
            shard.close()
        self._shards = {}

    def __del__(self):
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()
