"""What every metrics file carries: environment (library versions, hardware) and baselines."""

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


__all__ = ["baseline_block", "environment", "hardware", "write_json"]
