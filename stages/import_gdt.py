"""``stica import-gdt SRC --out CKPT``: a released GDT checkpoint as a stica pretrain checkpoint."""

from __future__ import annotations

import click

from stages.common import params_options
from stica.config import load_section
from stica.logs import setup_logging


@click.command("import-gdt")
@click.argument("src")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write.")
@click.option("--sha256", help="Expected sha256 of SRC: a mismatch stops the import.")
@click.option(
    "--allow-missing",
    multiple=True,
    metavar="PATTERN",
    help="Head tensors (glob on stica names, e.g. 'video_head.*') that may keep their "
    "initialisation when the file's heads do not match (repeatable; heads only).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="Where URLs are downloaded [default: $STICA_CACHE or ~/.cache/stica].",
)
@params_options
def import_gdt(src, out, sha256, allow_missing, cache_dir, params_path, overrides):
    """Import the GDT checkpoint SRC (a path or an http(s)/file URL, downloaded once).

    The trunks (R(2+1)D-18, ResNet-9) must map completely; the checkpoint gets the GDT model,
    audio front end and input normalisation, and the pretrain params of --params/--set for the
    rest (clip length and crop size default to the file's training args). E.g.

        stica import-gdt https://dl.fbaipublicfiles.com/GDT/gdt_K400.pth --out models/gdt_k400.pt
    """
    from stica.download import fetch
    from stica.train.checkpoint import load_pretrained, save_checkpoint
    from stica.train.import_gdt import describe
    from stica.train.import_gdt import import_gdt as run

    setup_logging(None)
    base = load_section("pretrain", params_path, overrides)
    fetched = fetch(src, sha256=sha256, cache_dir=cache_dir)
    click.echo(f"sha256 {fetched.sha256}  {src}")
    overridden = {item.partition("=")[0] for item in overrides}
    payload = run(
        fetched.path,
        base,
        source=src,
        sha256=fetched.sha256,
        overridden=overridden,
        allow_missing=tuple(allow_missing),
    )
    save_checkpoint(out, payload)
    # the output as every later stage reads it: strictly, typed
    _, config, provenance = load_pretrained(out)
    prov = provenance.imported
    click.echo(
        f"imported {prov['tensors_imported']} tensors (epoch {prov['epoch']}) -> {out}; "
        f"{describe(prov)}"
    )
    click.echo(
        f"clips of {config.num_frames} frames at {provenance.fps:g} fps, "
        f"{config.augment.crop_size} px crops (evaluated at {config.augment.eval_short_side} px), "
        f"audio {config.audio.frontend} at {config.audio.sample_rate} Hz: preprocess stores "
        f"with fps {provenance.fps:g}, short_side >= {config.augment.eval_short_side}, "
        f"sample_rate {config.audio.sample_rate}"
    )
    for part, reason in prov["not_imported"].items():
        click.echo(f"  {part} not imported: {reason}")
