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


SUMMARISERS: list[tuple[Callable[[Path], bool], Callable[[Path], dict[str, Any]]]] = [
    (_is_store, _store_summary),
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
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        lines.append(f"{key:<{width}}  {value}")
    return "\n".join(lines)


@click.command()
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(path, as_json):
    """Summarise PATH: a preprocessed store (counts, duration, fps, size, rejected, params)."""
    summary = summarise(path)
    click.echo(json.dumps(summary, indent=2) if as_json else format_text(summary))
