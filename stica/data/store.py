"""The preprocessed store: HDF5 shards of JPEG frames and int16 audio, plus a JSON manifest.

Folder layout (``STORE/``)::

    shard-00000.h5 ...   one per fixed chunk of ``videos_per_shard`` sorted inputs
    manifest.jsonl       one row per stored video, sorted by id
    rejected.jsonl       one row per input that holds video but was not stored: {"path", "reason"}
    skipped.jsonl        one row per input that is not a video (text, audio, still image)
    meta.json            written last: its presence marks a finished store
    timing.json          wall time of the last run (for the loader benchmark)
    preprocess.log

A shard holds, for its ``n`` stored videos: ``jpeg`` (all frames' JPEG bytes back to back),
``frame_offsets`` (byte offset of each frame, plus the end), ``video_frames`` (first frame of
each video, plus the end), ``audio`` (int16 samples back to back) and ``video_samples``. Its
manifest rows, rejected inputs and the list of inputs it covers are attributes, so a shard is
self-describing and a rerun can tell a complete shard from a missing one. Shards are written
to a temporary name, fsynced, then renamed: a file with the final name is always complete.

A cluster run (``--num-shards N --shard-index I``) writes the shards of one slice plus a marker
``part-I-of-N.json`` instead of the manifest and ``meta.json``; ``stica merge-stores`` joins the
parts into the same store a one-machine run writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stica.errors import SticaError

FORMAT = "stica-store"
FORMAT_VERSION = 2  # 2: skipped.jsonl, manifest rows carry notes
META = "meta.json"
MANIFEST = "manifest.jsonl"
REJECTED = "rejected.jsonl"
SKIPPED = "skipped.jsonl"
TIMING = "timing.json"
LOG = "preprocess.log"


@dataclass(frozen=True)
class VideoRecord:
    id: str  # unique, stable, derived from the relative source path (no extension)
    path: str  # source path relative to the input root
    label: int  # class index into StoreMeta.classes; -1 if the layout has no label
    label_name: str
    split: str  # "train" | "test" | "" for the first official split/fold
    splits: tuple[str, ...]  # same per official split/fold
    duration: float  # seconds stored
    num_frames: int  # frames stored at meta.fps; 0 for audio-only inputs
    has_audio: bool
    shard: str  # shard file name inside the store folder
    index: int = 0  # position of the video inside its shard
    notes: tuple[str, ...] = ()  # what decoding repaired: "damaged: ...", discontinuities, ...

    def to_row(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        row["splits"] = list(self.splits)
        row["notes"] = list(self.notes)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> VideoRecord:
        return cls(**{**row, "splits": tuple(row["splits"]), "notes": tuple(row.get("notes", ()))})


@dataclass(frozen=True)
class StoreMeta:
    fps: float
    sample_rate: int
    short_side: int
    layout: str
    classes: tuple[str, ...]
    num_splits: int
    params: dict  # the preprocess params used (workers excluded: they do not change the output)
    version: str  # stica version that created the store
    audio_only: bool = False
    shards: tuple[str, ...] = ()


class Store:
    """A finished store folder: metadata, records sorted by id, rejected inputs."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / META
        if not meta_path.is_file():
            raise SticaError(f"not a finished stica store (no {META}): {self.root}")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT:
                raise ValueError("wrong format tag")
            self.meta = StoreMeta(
                fps=float(meta["fps"]),
                sample_rate=int(meta["sample_rate"]),
                short_side=int(meta["short_side"]),
                layout=meta["layout"],
                classes=tuple(meta["classes"]),
                num_splits=int(meta["num_splits"]),
                params=dict(meta["params"]),
                version=meta["version"],
                audio_only=bool(meta["audio_only"]),
                shards=tuple(meta["shards"]),
            )
            lines = (self.root / MANIFEST).read_text(encoding="utf-8").splitlines()
            self.records = [VideoRecord.from_row(json.loads(line)) for line in lines if line]
            self.rejected = _read_reasons(self.root / REJECTED)
            skipped = self.root / SKIPPED  # absent from format 1 stores
            self.skipped = _read_reasons(skipped) if skipped.is_file() else []
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SticaError(f"corrupt stica store {self.root}: {e}") from None
        self._by_id = {r.id: r for r in self.records}

    def manifest_hash(self) -> str:
        return hashlib.sha256((self.root / MANIFEST).read_bytes()).hexdigest()

    def get(self, video_id: str) -> VideoRecord:
        try:
            return self._by_id[video_id]
        except KeyError:
            raise SticaError(f"video id not in store {self.root}: {video_id!r}") from None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def ids(self, split: str | None = None, fold: int = 0) -> list[str]:
        """Ids (sorted) of split ``split`` ("train"/"test") of official split ``fold``."""
        return [r.id for r in self.records if split is None or r.splits[fold] == split]

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.iterdir() if p.is_file())

    def summary(self) -> dict[str, Any]:
        """Counts and settings, as ``stica info`` prints them."""
        recs = self.records
        return {
            "kind": "store",
            "path": str(self.root),
            "layout": self.meta.layout,
            "videos": len(recs),
            "train": sum(r.split == "train" for r in recs),
            "test": sum(r.split == "test" for r in recs),
            "with_audio": sum(r.has_audio for r in recs),
            "classes": len(self.meta.classes),
            "num_splits": self.meta.num_splits,
            "total_duration_s": round(sum(r.duration for r in recs), 3),
            "total_frames": sum(r.num_frames for r in recs),
            "fps": self.meta.fps,
            "short_side": self.meta.short_side,
            "sample_rate": self.meta.sample_rate,
            "audio_only": self.meta.audio_only,
            "shards": len(self.meta.shards),
            "size_bytes": self.size_bytes(),
            "damaged": sum(any(n.startswith("damaged") for n in r.notes) for r in recs),
            "rejected": len(self.rejected),
            "rejected_by_reason": count_reasons(self.rejected),
            "skipped": len(self.skipped),
            "skipped_by_reason": count_reasons(self.skipped),
            "params": self.meta.params,
            "version": self.meta.version,
        }


def _read_reasons(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(r["path"], r["reason"]) for r in map(json.loads, lines) if r]


def reason_key(reason: str) -> str:
    """The kind of a one-line reason, for counting: the text before its first ': ' or ' ('
    ("too short (0.20 s < ...)" -> "too short")."""
    return re.split(r": | \(", reason, maxsplit=1)[0].strip()


def count_reasons(entries: list[tuple[str, str]]) -> dict[str, int]:
    """{reason kind: count}, most frequent first (ties by name)."""
    counts = Counter(reason_key(reason) for _, reason in entries)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


# ------------------------------------------------------------------------------------------------
# Shard files
# ------------------------------------------------------------------------------------------------


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.h5"


def write_shard(
    path: Path,
    videos: list[tuple[list[bytes], np.ndarray]],
    attrs: dict[str, Any],
) -> None:
    """Write one shard atomically: temp file, fsync, rename. ``videos`` are (jpeg frames,
    int16 audio) in manifest order; ``attrs`` values are stored as JSON strings."""
    jpegs = [j for frames, _ in videos for j in frames]
    frame_offsets = np.zeros(len(jpegs) + 1, np.int64)
    frame_offsets[1:] = np.cumsum([len(j) for j in jpegs], dtype=np.int64)
    video_frames = np.zeros(len(videos) + 1, np.int64)
    video_frames[1:] = np.cumsum([len(f) for f, _ in videos], dtype=np.int64)
    video_samples = np.zeros(len(videos) + 1, np.int64)
    video_samples[1:] = np.cumsum([a.size for _, a in videos], dtype=np.int64)
    jpeg = np.frombuffer(b"".join(jpegs), np.uint8)
    audio = np.concatenate([a for _, a in videos]) if videos else np.zeros(0, np.int16)
    # a per-process temp name: an orphaned writer of a killed run never clobbers a rerun's file
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with h5py.File(tmp, "w", track_order=False, libver="latest") as f:
        for name, data in (
            ("jpeg", jpeg),
            ("frame_offsets", frame_offsets),
            ("video_frames", video_frames),
            ("audio", audio.astype(np.int16, copy=False)),
            ("video_samples", video_samples),
        ):
            # contiguous (unchunked) layout: a clip is one read per dataset
            f.create_dataset(name, data=data, track_times=False)
        for key, value in attrs.items():
            f.attrs[key] = json.dumps(value, ensure_ascii=False, sort_keys=True)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_shard_attrs(path: Path) -> dict[str, Any] | None:
    """A shard's attributes, or None when the file is absent or unreadable (rebuild it)."""
    try:
        with h5py.File(path, "r") as f:
            return {k: json.loads(v) for k, v in f.attrs.items()}
    except (OSError, ValueError):
        return None


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
