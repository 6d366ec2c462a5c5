"""``stica retrieve``: recall@k of test videos querying train videos, pretrained vs random-init."""

from __future__ import annotations

import re
from pathlib import Path

import click
import numpy as np

from stages.common import params_options
from stica.config import load_section
from stica.errors import SticaError

GALLERY_NEIGHBOURS = 5  # top-5 neighbours per query in the PNG, as the issue asks
PLACEHOLDER_SHAPE = (96, 128, 3)  # (H, W, 3) blank cell for records without frames
PLACEHOLDER_GREY = 200
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
    from stica.eval.features_io import check_same_manifest, check_same_videos, read_features
    from stica.eval.metrics import baseline_block, write_metrics
    from stica.eval.probes import feature_probes
    from stica.eval.retrieval import check_ks, evaluate_retrieval
    from stica.logs import setup_logging

    cfg = load_section("retrieve", params_path, overrides)
    ks = tuple(ks) or cfg.k
    out_path = Path(out)
    log = setup_logging(out_path.parent / "retrieve.log")

    fs = read_features(features)
    baseline = None
    if random_features is not None:
        baseline = read_features(random_features)
        check_same_videos(fs, baseline)
    store_obj = None
    if store is not None or gallery is not None:
        store_obj = _open_store(store or fs.store)
        check_same_manifest(fs, _manifest_hash(store_obj), f"store {store or fs.store}")
    check_ks(ks, int(fs.mask("train").sum()))

    result = evaluate_retrieval(fs, ks)
    base_result = evaluate_retrieval(baseline, ks) if baseline is not None else None
    for k in sorted(result.recall):
        line = f"R@{k}: {result.recall[k]:.3f}"
        if base_result is not None:
            line += f" (random init {base_result.recall[k]:.3f})"
        log.info(line)

    probes = feature_probes(fs, cfg.knn_k, cfg.linear_c)
    base_probes = feature_probes(baseline, cfg.knn_k, cfg.linear_c) if baseline else None
    for level, values in probes.items():
        for name, value in values.items():
            line = f"{level} {name}: {value:.3f}"
            if base_probes is not None:
                line += f" (random init {base_probes[level][name]:.3f})"
            log.info(line)

    gallery_frames = None
    if gallery is not None:
        gallery_frames = _gallery_frames(fs, result, store_obj, cfg.gallery_queries)

    metrics = {
        "recall": baseline_block(
            {f"R@{k}": v for k, v in result.recall.items()},
            None if base_result is None else {f"R@{k}": v for k, v in base_result.recall.items()},
        ),
        "probes": {
            level: baseline_block(values, None if base_probes is None else base_probes[level])
            for level, values in probes.items()
        },
        "k": list(sorted(result.recall)),
        "num_queries": result.num_queries,
        "num_gallery": result.num_gallery,
        "manifest_hash": fs.manifest_hash,
        "features": str(features),
        "checkpoint": fs.checkpoint,
        "random_features": None if baseline is None else str(random_features),
        "random_checkpoint": None if baseline is None else baseline.checkpoint,
        "index": "faiss.IndexFlatIP (exact inner product)"
        + (" on GPU" if result.on_gpu else " on CPU"),
        "ties": "equal scores ordered by increasing train-video index",
    }
    if gallery_frames is not None:
        from stica.eval.plots import retrieval_gallery

        retrieval_gallery(gallery, *gallery_frames, class_names=fs.class_names)
        log.info(f"gallery: {gallery}")
    numbers = {name: f"recall.{name}" for name in metrics["recall"]}
    write_metrics(out_path, metrics, {**numbers, "linear_top1": "probes.video.linear top-1"})
    log.info(f"metrics: {out_path}")


def _open_store(path: str):
    from stica.data.store import Store

    if not Path(path).exists():
        raise SticaError(f"store not found: {path} (needed for --store / --gallery)")
    return Store(path)


def _manifest_hash(store) -> str:
    value = store.manifest_hash  # a method on stica.data.store.Store
    return value() if callable(value) else value


def _gallery_frames(fs, result, store, num_queries: int):
    """Middle frames of evenly spaced test queries and of their top neighbours, read from the store."""
    from stica.data.clips import ClipReader

    test_rows = np.flatnonzero(fs.mask("test"))
    train_rows = np.flatnonzero(fs.mask("train"))
    picks = np.unique(np.linspace(0, len(test_rows) - 1, min(num_queries, len(test_rows))).round())
    picks = picks.astype(int)
    top = min(GALLERY_NEIGHBOURS, result.neighbours.shape[1])
    reader = ClipReader(store)
    cache: dict[str, np.ndarray] = {}

    def middle_frame(video_id: str) -> np.ndarray:
        if video_id not in cache:
            duration = store.get(video_id).duration
            cache[video_id] = np.asarray(
                reader.read(video_id, duration / 2, num_frames=1).frames[0]
            )
        return cache[video_id]

    query_frames = [middle_frame(fs.video_ids[test_rows[q]]) for q in picks]
    neighbour_rows = train_rows[result.neighbours[picks, :top]]  # (Qg, top) rows of the file
    neighbour_frames = [[middle_frame(fs.video_ids[r]) for r in row] for row in neighbour_rows]
    return (
        query_frames,
        neighbour_frames,
        result.hits[picks, :top],
        fs.labels[test_rows[picks]],
        fs.labels[neighbour_rows],
    )
