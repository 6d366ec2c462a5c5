"""``stica audio-eval``: linear probe on the frozen audio trunk (ESC-50 / DCASE2014 protocols)."""

from __future__ import annotations

from pathlib import Path

import click

from stages.common import params_options
from stica.config import load_section
from stica.logs import setup_logging


@click.command("audio-eval")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--ckpt", required=True, help="Pretrain checkpoint, or 'random'.")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Metrics JSON to write (the numbers; the full record goes beside it, NAME.provenance.json).",
)
@click.option(
    "--baseline/--no-baseline",
    default=True,
    help="Also probe a randomly initialised audio trunk of the same architecture.",
)
@params_options
def audio_eval(store, ckpt, out, baseline, params_path, overrides):
    """Top-1 of a linear classifier on the frozen audio trunk's pooled activations.

    ESC-50 stores: 10 two-second sub-clips per sample, mean over the 5 folds; DCASE2014: 60
    one-second sub-clips; other stores (the demo set): `other_subclips` sub-clips on split 1.
    """
    from stica.eval.audio_eval import audio_eval as run
    from stica.eval.metrics import baseline_block, write_metrics

    config = load_section("audio_eval", params_path, overrides)
    random_config = load_section("pretrain", params_path)
    setup_logging(Path(out).with_suffix(".log"))
    result = run(store, ckpt, config, random_config, baseline=baseline)
    pretrained = result["pretrained"]
    random_init = result.get("random_init")
    metrics = {
        "top1": baseline_block(
            {"top1": pretrained["top1"]}, {"top1": random_init["top1"]} if random_init else None
        )["top1"],
        "protocol": result["protocol"],
        "samples": result["samples"],
        "checkpoint": result["checkpoint"],
        "pretrained": pretrained,
        "random_init": random_init,
        "manifest_hash": result["manifest_hash"],
    }
    write_metrics(out, metrics, {"top1": "top1"})
    line = f"audio top-1 {pretrained['top1']:.4f}"
    if random_init:
        line += f" (random init {random_init['top1']:.4f})"
    click.echo(f"{line} -> {out}")
