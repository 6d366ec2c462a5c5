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
@click.option(
    "--num-shards",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Split the work over N machines (a SLURM array): this run builds one slice.",
)
@click.option(
    "--shard-index",
    type=click.IntRange(min=0),
    default=None,
    help="Which slice (0 .. N-1) this run builds; required with --num-shards > 1.",
)
@params_options
def preprocess(
    input_dir, out_dir, workers, no_progress, num_shards, shard_index, params_path, overrides
):
    """Decode INPUT_DIR (any supported layout) into HDF5 shards of JPEG frames + int16 audio.

    Layouts (preprocess.layout): auto, generic (CLASS/ or train|test/CLASS/ folders), ucf101,
    hmdb51, kinetics (CSV), esc50, dcase2014.

    Every file under INPUT_DIR is probed by content, whatever its extension: videos are stored,
    videos that cannot be (corrupt, too short) are listed with a reason in STORE/rejected.jsonl,
    files that are not videos (text, audio only, still images) in STORE/skipped.jsonl. The run
    ends with `stored N / rejected M / skipped S / without audio K (counts by reason)`.

    Resumable: rerunning after an interruption keeps finished shards. On a cluster, run one
    slice per machine (--num-shards N --shard-index I, same --out or one per slice), then
    `stica merge-stores` (scripts/slurm/preprocess.sbatch does both).
    """
    from stica.data.preprocess import preprocess as run
    from stica.errors import SticaError

    if num_shards > 1 and shard_index is None:
        raise SticaError("--shard-index is required with --num-shards > 1")
    shard_index = 0 if shard_index is None else shard_index
    if shard_index >= num_shards:
        raise SticaError(f"--shard-index must be < --num-shards ({num_shards}), got {shard_index}")
    cfg = load_section("preprocess", params_path, overrides)
    run(
        input_dir,
        out_dir,
        cfg,
        workers=workers,
        progress=not no_progress,
        num_shards=num_shards,
        shard_index=shard_index,
    )
    return 0
