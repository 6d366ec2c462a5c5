"""``stica merge-stores PART... --out STORE``: join the slices of a cluster preprocess run."""

from __future__ import annotations

import click


@click.command(name="merge-stores")
@click.argument("parts", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Store folder."
)
def merge_stores(parts, out_dir):
    """Join the partial stores PARTS (written by `stica preprocess --num-shards N --shard-index
    I`) into the finished store --out: the same manifest, shards and meta.json as one machine
    would write.

    PARTS may be one folder every slice wrote into (then --out can be that folder: the shards
    stay where they are) or one folder per slice (shards are hard-linked, else copied). Missing
    or mismatched slices are named in a one-line error; nothing is written then.
    """
    from stica.data.preprocess import merge_stores as run

    run(list(parts), out_dir)
    return 0
