"""``stica pretrain``: self-supervised STiCA pretraining on a store (single process or torchrun)."""

from __future__ import annotations

from pathlib import Path

import click

from stages.common import live_option, params_options
from stica.config import load_section
from stica.logs import setup_logging

# what `dvc metrics show` lists (the losses are the live log's metrics.json): the held-out pretext
# top-1 (trained, initial weights, ratio), the time and the throughput; the rest goes to the
# provenance record
PRETRAIN_METRICS = {
    "a2v_top1": "pretext.audio_to_video_top1",
    "a2v_class_top1": "pretext.audio_to_video_class_top1",
    "seconds": "pretrain.seconds",
    # throughput (stica.train.pretrain.throughput_report): global samples/s, the fraction of the
    # wall time spent waiting for data, peak GPU memory in MiB (null on the CPU)
    "samples_per_s": "pretrain.samples_per_s",
    "data_wait_fraction": "pretrain.data_wait_fraction",
    "peak_gpu_memory_mb": "pretrain.peak_gpu_memory_mb",
}


@click.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write.")
@live_option
@click.option(
    "--metrics",
    type=click.Path(dir_okay=False),
    help="Metrics JSON to write (the numbers; the full record goes beside it, NAME.provenance.json).",
)
@click.option(
    "--resume/--no-resume",
    default=False,
    help="Continue from the training state left by an interrupted run with the same params.",
)
@click.option(
    "--max-steps", type=click.IntRange(min=1), help="Stop (and checkpoint) after N steps."
)
@params_options
def pretrain(store, out, live_dir, metrics, resume, max_steps, params_path, overrides):
    """Pretrain the video and audio encoders on STORE (the `pretrain` section of params.yaml).

    Under torchrun (`torchrun --nproc_per_node N -m stica pretrain ...`) the global batch is
    split across the processes; SIGTERM/SIGINT write a checkpoint before exiting.
    """
    from stica import dist
    from stica.eval.metrics import write_metrics
    from stica.eval.pretext import pretext_report
    from stica.train.pretrain import pretrain as run_pretrain

    config = load_section("pretrain", params_path, overrides)
    dist.init_distributed()
    log_file = Path(out).with_suffix(".log") if dist.is_main_process() else None
    setup_logging(log_file)
    summary = run_pretrain(
        config, store, out, live_dir=live_dir, resume=resume, max_steps=max_steps
    )
    if metrics and dist.is_main_process():
        pretext = pretext_report(store, out) if Path(out).exists() else None
        write_metrics(metrics, {"pretrain": summary, "pretext": pretext}, PRETRAIN_METRICS)
    dist.cleanup()
