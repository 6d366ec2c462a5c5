"""``stica retrieve``: recall@k of test videos querying train videos, pretrained vs random-init."""

from __future__ import annotations

import re
from pathlib import Path

import click

from stages.common import params_options
from stica.config import load_section

_INT_LIST = re.compile(r"^\d+(,\d+)*,?$")


class MultiValueCommand(click.Command):
    """Lets ``--k`` take several values: ``--k 1 5 20``, ``--k 1,5,20`` or ``--k 1 --k 5``.

    click options take one value each; the integers following ``--k`` are rewritten into repeated
    ``--k`` options before click parses, so every spelling reaches the same ``multiple=True``
    option.
    """

    multi_value_options = ("--k",)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                out.extend(args[i:])
                break
            name, eq, value = arg.partition("=")
            if name in self.multi_value_options:
                values = [value] if eq else []
                i += 1
                while i < len(args) and _INT_LIST.match(args[i]):
                    values.append(args[i])
                    i += 1
                if not values:  # let click report the missing value
                    out.append(name)
                for v in values:
                    out.extend(f"{name}={part}" for part in v.split(",") if part)
                continue
            out.append(arg)
            i += 1
        return super().parse_args(ctx, out)


@click.command("retrieve", cls=MultiValueCommand)
@click.argument("features", type=click.Path(dir_okay=False))
@click.option(
    "--random-features",
    type=click.Path(dir_okay=False),
    default=None,
    help="Features of the randomly initialised model (same videos), for the baseline and ratio.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="metrics/retrieval.json",
    show_default=True,
    help="Metrics JSON (recall@k; the full record goes beside it, NAME.provenance.json).",
)
@click.option(
    "--gallery",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write a PNG gallery of queries and their top-5 neighbours (needs the store).",
)
@click.option(
    "--store",
    type=click.Path(),
    default=None,
    help="The store the features came from: checked by manifest hash; frames for --gallery "
    "[default for the gallery: the store recorded in the features file].",
)
@click.option(
    "--k",
    "ks",
    multiple=True,
    type=click.IntRange(min=1),
    metavar="K [K ...]",
    help="Report recall@k for these k, e.g. --k 1 5 20 [default: params retrieve.k].",
)
@params_options
def retrieve(
    features: str,
    random_features: str | None,
    out: str,
    gallery: str | None,
    store: str | None,
    ks: tuple[int, ...],
    params_path: str | None,
    overrides: tuple[str, ...],
) -> None:
    """Nearest-neighbour retrieval: test videos query train videos (FAISS exact inner product).

    A query counts at k when one of its k nearest train videos has its class. Writes recall@k
    for the pretrained FEATURES and, with --random-features, the random-init baseline and their
    ratio. Also class probes of the frozen features: kNN top-1 (majority vote of the k nearest,
    params retrieve.knn_k) and a linear probe, per video and per clip. The metrics file holds the
    recall@k and the video-level linear probe; everything else (the other probes, the manifest
    hash, paths, library versions, hardware) goes to the provenance record beside it.
    """
    from stica.eval.metrics import write_metrics
    from stica.eval.retrieval_report import retrieve as run
    from stica.logs import setup_logging

    cfg = load_section("retrieve", params_path, overrides)
    out_path = Path(out)
    log = setup_logging(out_path.parent / "retrieve.log")
    metrics = run(features, cfg, tuple(ks), random_features, store, gallery)
    numbers = {name: f"recall.{name}" for name in metrics["recall"]}
    write_metrics(out_path, metrics, {**numbers, "linear_top1": "probes.video.linear top-1"})
    log.info(f"metrics: {out_path}")
