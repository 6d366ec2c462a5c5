"""Nearest-neighbour video retrieval: recall@k with an exact FAISS inner-product index.

Protocol (SPEC, paper sec. 4.3): test videos query the train videos; a query counts at k when
one of its k nearest train videos has its class. Features are L2-normalised, so inner product is
cosine similarity.

Tie rule: neighbours are ordered by decreasing score, and equal scores (exactly equal float32
inner products as FAISS computes them) by increasing gallery index. FAISS's own order is not used
as is: FAISS CPU flat search keeps the lowest indices among ties but returns them in decreasing
index order, and the GPU index gives no promise. We therefore ask FAISS for more than k
neighbours whenever the k-th score is tied with the last one fetched (until the tie is closed or
the whole gallery is fetched), then sort stably by (-score, index). The result does not depend
on FAISS's internal ordering, on CPU or GPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import faiss
import numpy as np

from stica.errors import SticaError
from stica.eval.features_io import FeatureSet

# faiss-gpu's flat search handles at most this many neighbours per query.
GPU_MAX_K = 2048


@dataclasses.dataclass(frozen=True)
class RetrievalResult:
    """Recall@k per k, with the neighbours behind it (for the gallery plot).

    Shape:
        neighbours, scores: (Q, max(ks)), gallery indices / inner products, best first;
        hits: (Q, max(ks)) bool, neighbour has the query's class.
    """

    recall: dict[int, float]
    neighbours: np.ndarray
    scores: np.ndarray
    hits: np.ndarray
    num_queries: int
    num_gallery: int
    on_gpu: bool


def check_ks(ks: Sequence[int], num_gallery: int) -> tuple[int, ...]:
    """Sorted unique ks, refusing k < 1 and k larger than the gallery (one line each)."""
    if len(ks) == 0:
        raise SticaError("retrieve: no k given (e.g. --k 1 5 20)")
    for k in ks:
        if int(k) != k or k < 1:
            raise SticaError(f"retrieve: k must be an integer >= 1, got {k}")
        if k > num_gallery:
            raise SticaError(
                f"retrieve: k={k} is larger than the gallery ({num_gallery} train videos)"
            )
    return tuple(sorted({int(k) for k in ks}))


def knn(query: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Exact top-k inner-product neighbours, ties broken by gallery index (module docstring).

    Shape:
        query: (Q, D); gallery: (G, D) -> scores (Q, k) float32, indices (Q, k) int64.
    Returns (scores, indices, on_gpu).
    """
    query = np.ascontiguousarray(query, dtype=np.float32)
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    num_gallery, dim = gallery.shape
    if query.ndim != 2 or query.shape[1] != dim:
        raise SticaError(
            f"retrieve: query features have shape {query.shape}, gallery {gallery.shape}: "
            "dimensions differ"
        )
    if not 1 <= k <= num_gallery:
        raise SticaError(f"retrieve: k={k} must be in [1, {num_gallery}] (gallery size)")
    index, on_gpu = _flat_ip_index(gallery, dim)
    fetch = min(k + 1, num_gallery)
    while True:
        if on_gpu and fetch > GPU_MAX_K:
            index, on_gpu = _flat_ip_index(gallery, dim, allow_gpu=False)
        scores, indices = index.search(query, fetch)
        # A tie at the k-th place that reaches the last fetched neighbour may hide equal-score
        # items of lower index that FAISS did not return: fetch more until the tie closes.
        if fetch == num_gallery or not (scores[:, k - 1] == scores[:, fetch - 1]).any():
            break
        fetch = min(2 * fetch, num_gallery)
    order = np.lexsort((indices, -scores), axis=1)  # last key is primary: score, then index
    scores = np.take_along_axis(scores, order, axis=1)[:, :k]
    indices = np.take_along_axis(indices, order, axis=1)[:, :k]
    return scores, indices.astype(np.int64), on_gpu


def recall_at_k(
    query: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    ks: Sequence[int],
) -> RetrievalResult:
    """Recall@k: the fraction of queries with a same-class item among their k nearest.

    Shape:
        query: (Q, D); query_labels: (Q,); gallery: (G, D); gallery_labels: (G,).
    """
    query_labels = np.asarray(query_labels)
    gallery_labels = np.asarray(gallery_labels)
    if len(query) == 0:
        raise SticaError("retrieve: no queries (the test split is empty)")
    if len(gallery) == 0:
        raise SticaError("retrieve: empty gallery (the train split is empty)")
    if query_labels.shape != (len(query),) or gallery_labels.shape != (len(gallery),):
        raise SticaError("retrieve: labels and features have different lengths")
    ks = check_ks(ks, len(gallery))
    scores, neighbours, on_gpu = knn(query, gallery, max(ks))
    hits = gallery_labels[neighbours] == query_labels[:, None]  # (Q, max k)
    first_hit = np.cumsum(hits, axis=1) > 0  # (Q, max k): a hit within the first j+1
    recall = {k: float(first_hit[:, k - 1].mean()) for k in ks}
    return RetrievalResult(
        recall=recall,
        neighbours=neighbours,
        scores=scores,
        hits=hits,
        num_queries=len(query),
        num_gallery=len(gallery),
        on_gpu=on_gpu,
    )


def evaluate_retrieval(features: FeatureSet, ks: Sequence[int]) -> RetrievalResult:
    """The SPEC protocol on a features file: test videos query the train videos.

    ``neighbours`` index the train rows; ``np.flatnonzero(features.mask("train"))`` maps them
    back to rows of the file.
    """
    train, test = features.mask("train"), features.mask("test")
    where = features.path or "features"
    if not train.any():
        raise SticaError(f"{where}: the train split is empty (no gallery to retrieve from)")
    if not test.any():
        raise SticaError(f"{where}: the test split is empty (no queries)")
    return recall_at_k(
        features.features[test],
        features.labels[test],
        features.features[train],
        features.labels[train],
        ks,
    )


def _flat_ip_index(gallery: np.ndarray, dim: int, allow_gpu: bool = True):
    index = faiss.IndexFlatIP(dim)
    on_gpu = False
    if allow_gpu and faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
        on_gpu = True
    index.add(gallery)
    return index, on_gpu
