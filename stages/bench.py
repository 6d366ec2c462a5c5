"""``stica bench``: speed benchmarks (``loader``, ``train``) and the demo's seed-to-seed benchmark (``demo``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from stages.common import params_options
from stica.config import load_section


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


@bench.command()
@click.option(
    "--profile",
    type=click.Choice(["params", "paper"]),
    default="params",
    show_default=True,
    help="'params': the pretrain section of params.yaml (the demo profile as committed); "
    "'paper': R(2+1)D-18 / ResNet-9, 30 frames at 112^2 (profiles/paper.yaml).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=2),
    default=None,
    help="[default: 8 per GPU as the paper, 16 on CPU]",
)
@click.option("--steps", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--device", default=None, help="torch device [default: cuda if available, else cpu]")
@click.option(
    "--only",
    multiple=True,
    help="Run only strategies whose name contains this text (the two-RGB-crop step the ratios "
    "refer to always runs).",
)
@click.option(
    "--pooling",
    type=click.Choice(["avg", "transformer"]),
    default=None,
    help="Run only the strategies with this pooling [default: both].",
)
@click.option(
    "--compile/--no-compile",
    "compile_trunk",
    default=None,
    help="torch.compile the video trunk [default: the params' pretrain.compile; auto = on CUDA].",
)
@click.option(
    "--store",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Instead of the strategies on synthetic clips: pretraining's real step (the params' mode) "
    "fed by its DataLoader from STORE, end to end vs compute only.",
)
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="Write JSON here.")
@params_options
def train(
    profile,
    batch_size,
    steps,
    warmup,
    device,
    only,
    pooling,
    compile_trunk,
    store,
    json_out,
    params_path,
    overrides,
):
    """Table 1f on this machine: step time, samples/s and peak memory of every cropping strategy
    (avg and transformer pooling), relative to the two-RGB-crop step; plus batched vs looped
    feature crops. With --store: samples/s of real pretraining steps through the DataLoader.

    The trunk's speed params come from the pretrain section (--set channels_last=on,
    --set activation_checkpointing=true, --set deterministic=false for cuDNN autotuning).
    """
    import dataclasses

    import torch

    from stica.bench import (
        bench_store,
        bench_train,
        format_store_table,
        format_train_table,
        train_strategies,
    )

    if profile == "paper":
        params_path = str(Path(__file__).resolve().parents[1] / "profiles" / "paper.yaml")
    config = load_section("pretrain", params_path, overrides)
    if compile_trunk is not None:
        config = dataclasses.replace(config, compile="on" if compile_trunk else "off")
    if batch_size is None:
        batch_size = 8 if torch.cuda.is_available() else 16
    if store is not None:
        if only or device or pooling:
            raise click.UsageError(
                "--store times the params' own step: drop --only, --pooling and --device"
            )
        config = dataclasses.replace(config, batch_size=batch_size)
        result = bench_store(config, store, steps, warmup)
        click.echo(format_store_table(result))
    else:
        strategies = [
            s
            for s in train_strategies()
            if (not only or any(o in s.name for o in only)) and pooling in (None, s.pooling)
        ]
        if not strategies:
            raise click.BadParameter("no strategy matches", param_hint="--only/--pooling")
        # the clip spans num_frames at the store's fps: that sets the audio length per sample
        fps = load_section("preprocess", params_path).fps
        result = bench_train(config, batch_size, steps, warmup, device, strategies, fps=fps)
        click.echo(format_train_table(result))
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(result, indent=2) + "\n")


@bench.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False), default="data/store")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--first-seed", type=int, default=0, show_default=True)
@click.option(
    "--work",
    type=click.Path(file_okay=False),
    default="results/demo_bench",
    show_default=True,
    help="Checkpoints and features of every seed (a rerun reuses what is there).",
)
@click.option(
    "--supervised/--no-supervised",
    default=True,
    help="Also train the supervised upper bound (labels, pretraining's budget).",
)
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="Write JSON here.")
@params_options
def demo(store, seeds, first_seed, work, supervised, json_out, params_path, overrides):
    """Pretrain + every evaluation for N seeds on STORE (default: the pipeline's data/store);
    prints mean ± std of every metric for the pretrained and the random-init model.

    Overrides (--set) apply to the pretrain section, e.g. --set epochs=50. Each seed's metrics are
    kept in WORK/seedK/metrics.json: run seeds in parallel as separate processes (`--first-seed K
    --seeds 1`, OMP_NUM_THREADS=1 each), then `--seeds N` over the same WORK gathers them.
    """
    from stica.eval.demo_bench import format_summary, run_seed, summarise
    from stica.logs import setup_logging

    work_dir = Path(work)
    setup_logging(work_dir / "demo_bench.log")
    configs = {name: load_section(name, params_path) for name in SECTIONS_USED}
    configs["pretrain"] = load_section("pretrain", params_path, overrides)
    per_seed = []
    for seed in range(first_seed, first_seed + seeds):
        per_seed.append(run_seed(seed, store, configs, work_dir / f"seed{seed}", supervised))
        click.echo(f"seed {seed} done")
    summary = summarise(per_seed)
    click.echo(format_summary(summary))
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(
            json.dumps(
                {
                    "seeds": list(range(first_seed, first_seed + seeds)),
                    "per_seed": per_seed,
                    "summary": summary,
                },
                indent=2,
            )
            + "\n"
        )


SECTIONS_USED = ("pretrain", "features", "retrieve", "audio_eval", "finetune")
