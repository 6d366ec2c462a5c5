"""The features file: one HDF5 file of per-video embeddings, written by ``extract-features``.

Layout (SPEC "Evaluation protocols"):

- ``features``        (N, D) float32, rows L2-normalised
- ``labels``          (N,) int64
- ``split``           (N,) str, "train" or "test"
- ``video_ids``       (N,) str
- ``audio_features``  (N, Da) float32, optional, with ``has_audio`` (N,) bool: rows of videos
  without an audio track are zeros and must be ignored
- ``clip_features``   (N, C, D) float16, optional: every clip's own feature (L2-normalised), for
  clip-level probes; ``features`` is their normalised mean
- attrs: ``manifest_hash``, ``store`` (path), ``checkpoint`` (path or "random"),
  ``model_config`` (JSON), ``versions`` (JSON), ``class_names`` (JSON list, may be empty)

Writing is atomic (a temp file in the same folder, renamed at the end), so a crash never leaves a
half-written file that later reads as good.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stica.errors import SticaError

SPLITS = ("train", "test")
REQUIRED_DATASETS = ("features", "labels", "split", "video_ids")
REQUIRED_ATTRS = ("manifest_hash", "store", "checkpoint", "model_config", "versions")
# Rows are checked to be L2-normalised within this tolerance (float32 rounding, not sloppiness).
NORM_TOLERANCE = 1e-3


@dataclasses.dataclass(frozen=True)
class FeatureSet:
    """The content of a features file; arrays are numpy, attrs are plain Python values.

    Shape:
        features: (N, D) float32; labels: (N,) int64; split, video_ids: (N,) str (object arrays);
        audio_features: (N, Da) float32 or None; has_audio: (N,) bool or None.
    """

    features: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    video_ids: np.ndarray
    manifest_hash: str
    store: str
    checkpoint: str
    model_config: dict[str, Any]
    versions: dict[str, Any]
    class_names: tuple[str, ...] = ()
    audio_features: np.ndarray | None = None
    has_audio: np.ndarray | None = None
    clip_features: np.ndarray | None = None  # (N, C, D) float32 when present
    path: str = ""

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def mask(self, split: str) -> np.ndarray:
        """Boolean (N,) mask of the rows of ``split`` ("train" or "test")."""
        if split not in SPLITS:
            raise SticaError(f"unknown split '{split}' (expected one of {', '.join(SPLITS)})")
        return self.split == split

    def class_name(self, label: int) -> str:
        if 0 <= label < len(self.class_names):
            return self.class_names[label]
        return str(label)


def write_features(
    path: str | Path,
    features: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    split: Sequence[str] | np.ndarray,
    video_ids: Sequence[str] | np.ndarray,
    *,
    manifest_hash: str,
    store: str | Path,
    checkpoint: str | Path,
    model_config: Mapping[str, Any] | None = None,
    versions: Mapping[str, Any] | None = None,
    class_names: Sequence[str] = (),
    audio_features: np.ndarray | None = None,
    has_audio: Sequence[bool] | np.ndarray | None = None,
    clip_features: np.ndarray | None = None,
) -> Path:
    """Validate and write a features file atomically; returns its path.

    Rows of ``features`` must already be L2-normalised (extract-features does that); this is
    checked, not silently fixed, because a non-normalised file would make inner-product
    retrieval wrong.

    Shape:
        features: (N, D); labels, split, video_ids: (N,); audio_features: (N, Da); has_audio: (N,);
        clip_features: (N, C, D), stored as float16.
    """
    path = Path(path)
    feats = np.ascontiguousarray(features, dtype=np.float32)
    labels_arr = np.asarray(labels, dtype=np.int64)
    split_arr = np.asarray([str(s) for s in split], dtype=object)
    ids_arr = np.asarray([str(v) for v in video_ids], dtype=object)
    audio = None if audio_features is None else np.ascontiguousarray(audio_features, np.float32)
    mask = None if has_audio is None else np.asarray(has_audio, dtype=bool)
    clips = None if clip_features is None else np.ascontiguousarray(clip_features, np.float16)
    _validate(str(path), feats, labels_arr, split_arr, ids_arr, audio, mask, check_norm=True)
    _validate_clips(str(path), feats, clips)
    attrs = {
        "manifest_hash": str(manifest_hash),
        "store": str(store),
        "checkpoint": str(checkpoint),
        "model_config": json.dumps(dict(model_config or {}), sort_keys=True, default=str),
        "versions": json.dumps(dict(versions or {}), sort_keys=True, default=str),
        "class_names": json.dumps([str(c) for c in class_names]),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp_name, "w") as f:
            string = h5py.string_dtype()
            f.create_dataset("features", data=feats)
            f.create_dataset("labels", data=labels_arr)
            f.create_dataset("split", data=split_arr, dtype=string)
            f.create_dataset("video_ids", data=ids_arr, dtype=string)
            if audio is not None:
                f.create_dataset("audio_features", data=audio)
                f.create_dataset("has_audio", data=mask)
            if clips is not None:
                f.create_dataset("clip_features", data=clips)
            f.attrs.update(attrs)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def read_features(path: str | Path) -> FeatureSet:
    """Read and validate a features file; every problem is one ``SticaError`` naming the path."""
    path = Path(path)
    if not path.is_file():
        raise SticaError(f"features file not found: {path}")
    if not h5py.is_hdf5(path):
        raise SticaError(f"{path}: not an HDF5 features file")
    try:
        with h5py.File(path, "r") as f:
            for name in REQUIRED_DATASETS:
                if name not in f:
                    raise SticaError(f"{path}: missing dataset '{name}' (not a features file?)")
            for name in REQUIRED_ATTRS:
                if name not in f.attrs:
                    raise SticaError(f"{path}: missing attribute '{name}' (not a features file?)")
            feats = np.asarray(f["features"][()], dtype=np.float32)
            labels = np.asarray(f["labels"][()], dtype=np.int64)
            split = np.asarray(f["split"].asstr()[()], dtype=object)
            ids = np.asarray(f["video_ids"].asstr()[()], dtype=object)
            audio = mask = None
            if "audio_features" in f:
                if "has_audio" not in f:
                    raise SticaError(f"{path}: 'audio_features' without its 'has_audio' mask")
                audio = np.asarray(f["audio_features"][()], dtype=np.float32)
                mask = np.asarray(f["has_audio"][()], dtype=bool)
            clips = None
            if "clip_features" in f:
                clips = np.asarray(f["clip_features"][()], dtype=np.float32)
            attrs = {k: _attr_str(f.attrs[k]) for k in f.attrs}
    except SticaError:
        raise
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise SticaError(
            f"{path}: unreadable features file ({e.__class__.__name__}: {e})"
        ) from None
    _validate(str(path), feats, labels, split, ids, audio, mask, check_norm=False)
    _validate_clips(str(path), feats, clips)
    return FeatureSet(
        features=feats,
        labels=labels,
        split=split,
        video_ids=ids,
        manifest_hash=attrs["manifest_hash"],
        store=attrs["store"],
        checkpoint=attrs["checkpoint"],
        model_config=_json_attr(path, attrs, "model_config", dict),
        versions=_json_attr(path, attrs, "versions", dict),
        class_names=tuple(_json_attr(path, attrs, "class_names", list, default="[]")),
        audio_features=audio,
        has_audio=mask,
        clip_features=clips,
        path=str(path),
    )


def check_same_manifest(a: FeatureSet, b: FeatureSet | str, what: str = "") -> None:
    """Refuse two feature sets (or a feature set and a store's manifest hash) of different data.

    ``b`` is another ``FeatureSet`` or a manifest hash string (e.g. ``Store(path).manifest_hash``).
    """
    other_hash = b.manifest_hash if isinstance(b, FeatureSet) else str(b)
    if a.manifest_hash != other_hash:
        other = b.path if isinstance(b, FeatureSet) else (what or "the store")
        raise SticaError(
            f"{a.path or 'features'}: manifest hash {a.manifest_hash[:12]} differs from "
            f"{other} ({other_hash[:12]}): features were extracted from a different store"
        )


def check_same_videos(a: FeatureSet, b: FeatureSet) -> None:
    """Refuse two feature sets (e.g. pretrained vs random-init) that do not list the same videos."""
    check_same_manifest(a, b)
    if not (
        np.array_equal(a.video_ids, b.video_ids)
        and np.array_equal(a.labels, b.labels)
        and np.array_equal(a.split, b.split)
    ):
        raise SticaError(f"{a.path} and {b.path}: different videos, labels or splits")


def _validate(
    where: str,
    feats: np.ndarray,
    labels: np.ndarray,
    split: np.ndarray,
    ids: np.ndarray,
    audio: np.ndarray | None,
    mask: np.ndarray | None,
    *,
    check_norm: bool,
) -> None:
    if feats.ndim != 2 or feats.shape[1] < 1:
        raise SticaError(f"{where}: 'features' must be N x D, got shape {feats.shape}")
    n = feats.shape[0]
    for name, arr in (("labels", labels), ("split", split), ("video_ids", ids)):
        if arr.shape != (n,):
            raise SticaError(
                f"{where}: '{name}' has shape {arr.shape}, expected ({n},) like 'features'"
            )
    bad = sorted(set(split.tolist()) - set(SPLITS))
    if bad:
        raise SticaError(f"{where}: 'split' has value {bad[0]!r} (expected train or test)")
    if len(set(ids.tolist())) != n:
        raise SticaError(f"{where}: 'video_ids' are not unique")
    if not np.isfinite(feats).all():
        raise SticaError(f"{where}: 'features' contains NaN or inf")
    if check_norm and n:
        norms = np.linalg.norm(feats, axis=1)
        if np.abs(norms - 1.0).max() > NORM_TOLERANCE:
            raise SticaError(f"{where}: 'features' rows must be L2-normalised")
    if (audio is None) != (mask is None):
        raise SticaError(f"{where}: 'audio_features' and 'has_audio' go together")
    if audio is not None:
        if audio.ndim != 2 or audio.shape[0] != n:
            raise SticaError(
                f"{where}: 'audio_features' has shape {audio.shape}, expected ({n}, Da)"
            )
        if mask.shape != (n,):
            raise SticaError(f"{where}: 'has_audio' has shape {mask.shape}, expected ({n},)")


def _validate_clips(where: str, feats: np.ndarray, clips: np.ndarray | None) -> None:
    if clips is None:
        return
    n, d = feats.shape
    if clips.ndim != 3 or clips.shape[0] != n or clips.shape[2] != d or clips.shape[1] < 1:
        raise SticaError(
            f"{where}: 'clip_features' has shape {clips.shape}, expected ({n}, C, {d})"
        )
    if not np.isfinite(clips).all():
        raise SticaError(f"{where}: 'clip_features' contains NaN or inf")


def _attr_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _json_attr(path: Path, attrs: dict[str, str], key: str, kind: type, default: str = "{}") -> Any:
    try:
        value = json.loads(attrs.get(key, default))
    except json.JSONDecodeError:
        raise SticaError(f"{path}: attribute '{key}' is not valid JSON") from None
    if not isinstance(value, kind):
        raise SticaError(f"{path}: attribute '{key}' must be a JSON {kind.__name__}")
    return value
