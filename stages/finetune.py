"""``stica finetune``: supervised finetuning for action recognition, 10 clips x 3 crops evaluation."""

from __future__ import annotations

from pathlib import Path

import click

from stages.common import live_option, params_options
from stica.config import load_section
from stica.logs import setup_logging

# what `dvc metrics show` lists: the final epoch's video top-1 (mean over splits), the released
# script's best test epoch (labelled as such) and the time; top-5, per-split and per-view numbers
# go to the provenance record
FINETUNE_METRICS = {
    "top1": "mean.video_top1",
    "top1_best_test_epoch": "best_test_epoch.mean.video_top1",
    "seconds": "seconds",
}


@click.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--ckpt",
    required=True,
    type=click.Path(dir_okay=False),
    help="Pretrain checkpoint to finetune (with --eval-only: a finetune checkpoint).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Folder for the checkpoints split{N}.pt (and split{N}-random.pt for the baseline).",
)
@click.option(
    "--metrics",
    type=click.Path(dir_okay=False),
    help="Metrics JSON to write (the numbers; the full record goes beside it, NAME.provenance.json).",
)
@click.option("--plots-dir", type=click.Path(file_okay=False), help="Confusion-matrix PNGs.")
@live_option
@click.option(
    "--split",
    "splits",
    multiple=True,
    type=click.IntRange(min=1),
    help="Official split to run (repeatable) [default: finetune.splits]; with --eval-only it "
    "must be the split the checkpoint was finetuned on.",
)
@click.option(
    "--eval-only", is_flag=True, help="Only evaluate the finetune checkpoint --ckpt on its split."
)
@params_options
def finetune(
    store, ckpt, out, metrics, plots_dir, live_dir, splits, eval_only, params_path, overrides
):
    """Finetune the pretrained video encoder on STORE's labelled splits (the `finetune` section).

    The trunk keeps the pooling it was pretrained with; a new linear classifier is trained with
    the paper's schedule. Test videos are scored on eval_clips x eval_crops views, averaged.
    With finetune.baseline, a randomly initialised model of the same architecture is finetuned
    too and the metrics put both side by side. Finished splits are reused on rerun.
    """
    from stica.errors import SticaError
    from stica.eval import finetune as ft
    from stica.eval.metrics import write_metrics
    from stica.train.finetune import prepare

    config = load_section("finetune", params_path, overrides)
    if eval_only:
        if len(splits) > 1:
            raise SticaError("--eval-only evaluates one split: give --split at most once")
        plan = ft.prepare_eval(store, ckpt, splits[0] if splits else None)
        log_to = Path(metrics).with_suffix(".log") if metrics else None
        setup_logging(log_to)
        summary = ft.run_eval(plan, config, plots_dir)
        summary.update(checkpoint=str(ckpt))
        if metrics:
            write_metrics(metrics, summary, {"top1": "metrics.video_top1"})
        m = summary["metrics"]
        click.echo(
            f"split {summary['split']}: video top-1 {m['video_top1']:.3f}, "
            f"top-5 {m['video_top5']:.3f} ({summary['eval']['views']} views)"
        )
        return
    if out is None:
        raise SticaError("--out (the checkpoint folder) is required unless --eval-only")
    plan = prepare(config, store, ckpt, tuple(splits))
    out = Path(out)
    setup_logging(out.with_name(f"{out.name}.log"))
    summary = ft.run_finetune(plan, out, plots_dir=plots_dir, live_dir=live_dir)
    if metrics:
        write_metrics(metrics, summary, FINETUNE_METRICS)
    mean = summary["mean"]["video_top1"]
    base = f", random init {mean['random_init']:.3f}" if "random_init" in mean else ""
    click.echo(f"finetune video top-1 (mean over splits): {mean['pretrained']:.3f}{base} -> {out}")
