"""``stica synth``: write the synthetic audio-visual demo set (real H.264/AAC mp4 files)."""

from __future__ import annotations

from pathlib import Path

import click

from stages.common import params_options
from stica.config import load_section
from stica.logs import setup_logging


@click.command()
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder: OUT/{train,test}/<class>/<id>.mp4 and OUT/classes.json.",
)
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=click.IntRange(min=0),
    help="Parallel worker processes (0 = in-process); the output does not depend on it.",
)
@params_options
def synth(out: Path, workers: int, params_path: str | None, overrides: tuple[str, ...]) -> None:
    """Write the demo set: classes carried by motion and synchronised sound, not by appearance."""
    cfg = load_section("synth", params_path, overrides)
    from stica.data.synth import LOG_FILE, generate, prepare_out

    prepare_out(out)  # refuse a foreign folder before writing a log file into it
    setup_logging(out / LOG_FILE)
    generate(cfg, out, workers=workers)
