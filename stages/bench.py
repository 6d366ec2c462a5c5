"""``stica bench``: speed benchmarks (``loader``: store vs direct mp4 decoding)."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group()
def bench():
    """Speed benchmarks."""


@bench.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--videos-dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Folder the store was built from [default: the one recorded in STORE/timing.json].",
)
@click.option("--clips", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--frames", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="Write JSON here.")
def loader(store, videos_dir, clips, frames, seed, json_out):
    """Clips/s read from STORE vs decoding the same clips from the source videos with PyAV."""
    from stica.bench import bench_loader, format_loader_table

    result = bench_loader(store, videos_dir, num_clips=clips, clip_frames=frames, seed=seed)
    click.echo(format_loader_table(result))
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(result, indent=2) + "\n")
