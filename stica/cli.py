"""The ``stica`` command: a click group whose sub-commands are the pipeline stages.

Stage commands live in ``stages/`` and are imported lazily so that ``stica --help`` and
``stica info`` do not pay for importing torch.
"""

from __future__ import annotations

import importlib
import sys

import click

from stica.errors import SticaError

# command name -> "module:attribute"
COMMANDS = {
    "synth": "stages.synth:synth",
    "preprocess": "stages.preprocess:preprocess",
    "merge-stores": "stages.merge_stores:merge_stores",
    "info": "stages.info:info",
    "bench": "stages.bench:bench",
    "pretrain": "stages.pretrain:pretrain",
    "import-gdt": "stages.import_gdt:import_gdt",
    "extract-features": "stages.extract_features:extract_features",
    "finetune": "stages.finetune:finetune",
    "retrieve": "stages.retrieve:retrieve",
    "audio-eval": "stages.audio_eval:audio_eval",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _importable(COMMANDS[name])]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None or not _importable(target):
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


def _importable(target: str) -> bool:
    return importlib.util.find_spec(target.split(":")[0]) is not None


@click.group(cls=LazyGroup)
@click.version_option(package_name="stica")
def cli() -> None:
    """STiCA: self-supervised audio-visual video representation learning.

    Each command is one stage of the DVC pipeline in dvc.yaml; run `dvc repro` to run them all.
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point: expected errors become one line on stderr and exit code 2, no traceback."""
    try:
        rv = cli.main(args=argv, prog_name="stica", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("stica: aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:
        command = e.ctx.command_path if e.ctx is not None else "stica"
        click.echo(f"{command}: error: {e.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"stica: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except SticaError as e:
        click.echo(f"stica: error: {e}", err=True)
        sys.exit(e.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)
