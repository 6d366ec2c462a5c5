"""``stica info PATH [--json]``: summarise an artifact.

Dispatch is a list of (recogniser, summariser) pairs, tried in order: add a pair for each new
artifact kind (features file, checkpoint). A summariser returns a flat-ish dict; the text view
prints its items one per line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from stica.errors import SticaError


def _is_store(path: Path) -> bool:
    return path.is_dir() and ((path / "meta.json").is_file() or (path / "manifest.jsonl").is_file())


def _store_summary(path: Path) -> dict[str, Any]:
    from stica.data.store import Store

    return Store(path).summary()


def _is_partial_store(path: Path) -> bool:
    return path.is_dir() and any(path.glob("part-*-of-*.json"))


def _partial_store_summary(path: Path) -> dict[str, Any]:
    from stica.data.preprocess import partial_store_summary

    return partial_store_summary(path)


def _is_features(path: Path) -> bool:
    if not path.is_file():
        return False
    import h5py

    if not h5py.is_hdf5(path):
        return False
    with h5py.File(path, "r") as f:
        return "features" in f


def _features_summary(path: Path) -> dict[str, Any]:
    import numpy as np

    from stica.eval.features_io import read_features

    fs = read_features(path)
    return {
        "kind": "features",
        "path": str(path),
        "videos": len(fs),
        "train": int(fs.mask("train").sum()),
        "test": int(fs.mask("test").sum()),
        "dim": fs.dim,
        "classes": len(np.unique(fs.labels)),
        "with_audio": int(fs.has_audio.sum()) if fs.has_audio is not None else 0,
        "checkpoint": fs.checkpoint,
        "store": fs.store,
        "manifest_hash": fs.manifest_hash,
        "size_bytes": path.stat().st_size,
    }


def _is_checkpoint(path: Path) -> bool:
    return path.is_file() and path.suffix in (".pt", ".pth", ".resume")


def _checkpoint_summary(path: Path) -> dict[str, Any]:
    from stica.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    model = ckpt.get("model", {})
    summary = {
        "kind": f"{ckpt.get('kind')} checkpoint",
        "path": str(path),
        "epoch": ckpt.get("epoch"),
        "step": ckpt.get("step"),
        "final": ckpt.get("final"),
        "parameters": int(sum(v.numel() for v in model.values() if v.is_floating_point())),
        "model_config": ckpt.get("model_config"),
        "manifest_hash": ckpt.get("manifest_hash"),
        "store": ckpt.get("store"),
        "versions": ckpt.get("versions"),
        "size_bytes": path.stat().st_size,
    }
    for key in ("split", "classes"):
        if key in ckpt:
            summary[key] = ckpt[key] if key != "classes" else len(ckpt[key])
    summary.update(_origin(ckpt))
    return {k: v for k, v in summary.items() if v is not None}


def _origin(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Where the weights come from and which parts are pretrained (imported or trained here)."""
    prov = ckpt.get("provenance")
    if prov is None:
        if ckpt.get("kind") != "pretrain":
            return {}
        return {"source": "stica pretrain", "pretrained": "all parts"}
    parts = prov.get("pretrained", {})
    return {
        "source": f"{prov.get('format', '?')} import of {prov.get('source')}",
        "source_sha256": prov.get("sha256"),
        "source_epoch": prov.get("epoch"),
        "pretrained": ", ".join(p for p, ok in parts.items() if ok) or "none",
        "random_init": ", ".join(
            f"{p} ({prov.get('not_imported', {}).get(p, '?')})" for p, ok in parts.items() if not ok
        )
        or None,
    }


SUMMARISERS: list[tuple[Callable[[Path], bool], Callable[[Path], dict[str, Any]]]] = [
    (_is_store, _store_summary),
    (_is_partial_store, _partial_store_summary),
    (_is_features, _features_summary),
    (_is_checkpoint, _checkpoint_summary),
]


def summarise(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise SticaError(f"no such file or folder: {path}")
    for recognise, summarise_fn in SUMMARISERS:
        if recognise(path):
            return summarise_fn(path)
    raise SticaError(f"not a stica artifact (store, features file or checkpoint): {path}")


def format_text(summary: dict[str, Any]) -> str:
    lines = []
    width = max((len(k) for k in summary), default=0)
    for key, value in summary.items():
        if key == "size_bytes":
            value = f"{value} ({value / 2**20:.1f} MiB)"
        elif key.endswith("_by_reason"):  # {reason: count}: "too short 3, empty file 1"
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        lines.append(f"{key:<{width}}  {value}")
    return "\n".join(lines)


@click.command()
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(path, as_json):
    """Summarise PATH: a preprocessed store (counts, duration, fps, size, rejected and skipped
    inputs by reason, params), a features file or a checkpoint."""
    summary = summarise(path)
    click.echo(json.dumps(summary, indent=2) if as_json else format_text(summary))
