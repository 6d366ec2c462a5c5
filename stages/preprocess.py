"""``stica preprocess INPUT_DIR --out STORE``: decode every input once into an HDF5 store."""

from __future__ import annotations

import click

from stages.common import params_options
from stica.config import load_section


@click.command()
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Store folder."
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Worker processes (0 = in-process) [default: preprocess.workers].",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@params_options
def preprocess(input_dir, out_dir, workers, no_progress, params_path, overrides):
    """Decode INPUT_DIR (any supported layout) into HDF5 shards of JPEG frames + int16 audio.

    Layouts (preprocess.layout): auto, generic (CLASS/ or train|test/CLASS/ folders), ucf101,
    hmdb51, kinetics (CSV), esc50, dcase2014.

    Resumable: rerunning after an interruption keeps finished shards. Bad inputs are listed
    with a reason in STORE/rejected.jsonl; the run ends with `stored N / rejected M / without
    audio K`.
    """
    from stica.data.preprocess import preprocess as run

    cfg = load_section("preprocess", params_path, overrides)
    result = run(input_dir, out_dir, cfg, workers=workers, progress=not no_progress)
    return 0 if result is not None else 1
