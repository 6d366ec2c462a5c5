"""Options every stage command shares: the params file and ``--set key=value`` overrides
(both go to :func:`stica.config.load_section`)."""

from __future__ import annotations

from collections.abc import Callable

import click


def params_options(f: Callable) -> Callable:
    f = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override one param of this stage's section (repeatable), e.g. --set epochs=2.",
    )(f)
    f = click.option(
        "--params",
        "params_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="Params YAML file [default: ./params.yaml if present, else the built-in demo profile].",
    )(f)
    return f


def live_option(f: Callable) -> Callable:
    """``--live DIR``: the run's live log of params and per-step metrics."""
    return click.option(
        "--live",
        "live_dir",
        type=click.Path(file_okay=False),
        help="Folder for the live log in DVCLive's layout (params.yaml, metrics.json, "
        "plots/metrics/*.tsv) that dvc exp show / dvc plots read while the run goes; through "
        "dvclive when installed, unless STICA_DVCLIVE=0.",
    )(f)
