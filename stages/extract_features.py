"""``stica extract-features``: per-video features of a store for retrieval."""

from __future__ import annotations

import json
from pathlib import Path

import click

from stages.common import params_options
from stica.config import load_section
from stica.logs import setup_logging


@click.command("extract-features")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--ckpt",
    required=True,
    help="Pretrain checkpoint, or 'random' for the randomly initialised baseline "
    "(architecture from the pretrain section of params.yaml).",
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="Features HDF5 to write."
)
@click.option(
    "--json-out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the run's summary (clips/s, data-wait fraction, switches) as JSON here.",
)
@params_options
def extract_features(store, ckpt, out, json_out, params_path, overrides):
    """Features of every video of STORE: 10 uniform clips, max-pooled trunk maps, averaged, L2-normalised.

    Works on any store, e.g. `stica preprocess my_videos/ --out my_store` then
    `stica extract-features my_store --ckpt models/pretrain.pt --out my_features.h5`.
    """
    from stica.eval.features import extract_features as run

    config = load_section("features", params_path, overrides)
    random_config = load_section("pretrain", params_path)
    setup_logging(Path(out).with_suffix(".log"))
    summary = run(store, ckpt, config, random_config, out)
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps({"store": store, **summary}, indent=2) + "\n")
    speed, steady = summary["clips_per_s"], summary["steady_clips_per_s"]
    wait = summary["data_wait_fraction"]
    click.echo(
        f"features of {summary['videos']} videos ({summary['with_audio']} with audio) "
        f"from {summary['checkpoint']} -> {out}"
        + (f" ({speed:.0f} clips/s" if speed else "")
        + (f", {steady:.0f} after the first chunk" if steady else "")
        + (f", {wait:.0%} of it waiting for data" if wait is not None else "")
        + (")" if speed else "")
    )
