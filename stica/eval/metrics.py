"""Metrics files and their provenance records; environment (library versions, hardware); baselines.

A stage writes two JSON files (:func:`write_metrics`): the metrics file, which DVC shows
(``dvc metrics show``), holds only the numbers a user compares (pretrained / random init / ratio,
timings); its sibling ``<name>.provenance.json`` holds the whole record — those numbers and the
rest (per-split details, paths, params, manifest hash, library versions, hardware).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

# distribution name on PyPI -> key in the metrics file
_PACKAGES = {
    "torch": "torch",
    "torchvision": "torchvision",
    "av": "av",
    "numpy": "numpy",
    "h5py": "h5py",
    "stica": "stica",
}
_FAISS_DISTRIBUTIONS = ("faiss-cpu", "faiss-gpu-cu12", "faiss-gpu", "faiss")


def environment() -> dict[str, Any]:
    """Library versions and hardware, for the record in every metrics file."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist, key in _PACKAGES.items():
        versions[key] = _version(dist)
    versions["faiss"] = next(
        (v for v in (_version(d) for d in _FAISS_DISTRIBUTIONS) if v is not None), None
    )
    if versions["stica"] is None:  # running from a source checkout without `pip install -e`
        import stica

        versions["stica"] = stica.__version__
    return {"versions": versions, "hardware": hardware()}


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": "cpu",
        "gpu_count": 0,
    }
    try:
        import torch

        if torch.cuda.is_available():
            info["device"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
    except ImportError:  # metrics stay writable without torch
        pass
    try:
        import faiss

        info["faiss_gpus"] = faiss.get_num_gpus()
    except ImportError:
        info["faiss_gpus"] = 0
    return info


def baseline_block(
    pretrained: Mapping[str, float], random_init: Mapping[str, float] | None
) -> dict[str, Any]:
    """Put each pretrained result next to the random-init one and their ratio.

    ``{"r@1": 0.4}``, ``{"r@1": 0.2}`` -> ``{"r@1": {"pretrained": 0.4, "random_init": 0.2,
    "ratio": 2.0}}``. The ratio is null where the baseline is 0 or missing.
    """
    out: dict[str, Any] = {}
    for key, value in pretrained.items():
        entry: dict[str, Any] = {"pretrained": float(value)}
        if random_init is not None and key in random_init:
            base = float(random_init[key])
            entry["random_init"] = base
            entry["ratio"] = float(value) / base if base > 0 else None
        out[key] = entry
    return out


def provenance_path(path: str | Path) -> Path:
    """The record beside metrics file ``path``: ``metrics/x.json`` -> ``metrics/x.provenance.json``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.provenance.json")


def numbers_of(record: Mapping[str, Any], keep: Mapping[str, str]) -> dict[str, Any]:
    """``{name: the entry of record at dotted path}`` for each ``name: path`` of ``keep``
    (absent paths skipped), in ``keep``'s order.

    Every leaf kept must be a number (or null, e.g. a ratio over a zero baseline): strings,
    booleans and lists would become columns of ``dvc metrics show`` that nobody compares. Short
    names shared across files (``top1``, ``seconds``) share their columns there.
    """
    out: dict[str, Any] = {}
    for name, dotted in keep.items():
        node: Any = record
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            _check_numbers(node, dotted)
            out[name] = node
    return out


def _check_numbers(value: Any, where: str) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_numbers(v, f"{where}.{k}")
    elif value is not None and (
        isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number)
    ):
        raise ValueError(f"metric {where} is not a number: {value!r}")


def write_metrics(path: str | Path, record: Mapping[str, Any], keep: Mapping[str, str]) -> Path:
    """Write the numbers ``keep`` (name -> dotted path) of ``record`` to ``path``, and the whole
    record with the environment to :func:`provenance_path` (``path``)."""
    numbers = numbers_of(record, keep)
    write_json(provenance_path(path), {**record, "environment": environment()})
    return write_json(path, numbers)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically (temp file + rename), numpy scalars/arrays converted, keys kept in order."""
    path = Path(path)
    text = json.dumps(_plain(obj), indent=2, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; DVC metrics would choke on them
    if isinstance(value, Path):
        return str(value)
    return value


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


__all__ = [
    "baseline_block",
    "environment",
    "hardware",
    "numbers_of",
    "provenance_path",
    "write_json",
    "write_metrics",
]
