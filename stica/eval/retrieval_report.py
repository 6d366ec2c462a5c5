"""``stica retrieve``'s evaluation: recall@k and the class probes of a features file, next to its
random-init baseline, and the gallery of queries with their nearest train videos.

The record (:func:`retrieve`) holds every number; the stage writes it with
:func:`~stica.eval.metrics.write_metrics`, which keeps the recall@k and the video-level linear
probe for ``dvc metrics show``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stica.config import RetrieveConfig
from stica.data.clips import ClipReader
from stica.data.store import Store
from stica.errors import SticaError
from stica.eval.features_io import (
    FeatureSet,
    check_same_manifest,
    check_same_videos,
    read_features,
)
from stica.eval.metrics import baseline_block
from stica.eval.plots import retrieval_gallery
from stica.eval.probes import feature_probes
from stica.eval.retrieval import RetrievalResult, check_ks, evaluate_retrieval
from stica.logs import get_logger

log = get_logger("retrieve")

GALLERY_NEIGHBOURS = 5  # neighbours per query in the PNG, best first


def retrieve(
    features: str | Path,
    config: RetrieveConfig,
    ks: tuple[int, ...] = (),
    random_features: str | Path | None = None,
    store: str | Path | None = None,
    gallery: str | Path | None = None,
) -> dict[str, Any]:
    """Test videos of ``features`` query its train videos; returns the record for the metrics.

    ``ks`` (default ``config.k``): recall@k. ``random_features``: the random-init model's
    features of the same videos, for the baseline and the ratio. ``store``: the store the features
    came from, checked by manifest hash (default for the gallery: the one the file records).
    ``gallery``: also write a PNG of queries and their nearest train videos.
    """
    ks = tuple(ks) or config.k
    fs = read_features(features)
    baseline = None
    if random_features is not None:
        baseline = read_features(random_features)
        check_same_videos(fs, baseline)
    store_obj = None
    if store is not None or gallery is not None:
        store_obj = open_store(store or fs.store, fs)
    check_ks(ks, int(fs.mask("train").sum()))

    result = evaluate_retrieval(fs, ks)
    base_result = evaluate_retrieval(baseline, ks) if baseline is not None else None
    for k in sorted(result.recall):
        line = f"R@{k}: {result.recall[k]:.3f}"
        if base_result is not None:
            line += f" (random init {base_result.recall[k]:.3f})"
        log.info(line)

    probes = feature_probes(fs, config.knn_k, config.linear_c)
    base_probes = feature_probes(baseline, config.knn_k, config.linear_c) if baseline else None
    for level, values in probes.items():
        for name, value in values.items():
            line = f"{level} {name}: {value:.3f}"
            if base_probes is not None:
                line += f" (random init {base_probes[level][name]:.3f})"
            log.info(line)

    if gallery is not None:
        frames = gallery_frames(fs, result, store_obj, config.gallery_queries)
        retrieval_gallery(gallery, *frames, class_names=fs.class_names)
        log.info(f"gallery: {gallery}")

    return {
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


def open_store(path: str | Path, fs: FeatureSet) -> Store:
    """The store ``fs`` was computed from, refused when its manifest differs from the file's."""
    if not Path(path).exists():
        raise SticaError(f"store not found: {path} (needed for --store / --gallery)")
    store = Store(path)
    check_same_manifest(fs, store.manifest_hash(), f"store {path}")
    return store


def gallery_frames(fs: FeatureSet, result: RetrievalResult, store: Store, num_queries: int):
    """Middle frames of evenly spaced test queries and of their top neighbours, read from the
    store, with the hits and labels :func:`~stica.eval.plots.retrieval_gallery` takes."""
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
