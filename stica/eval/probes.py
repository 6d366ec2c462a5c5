"""Class probes of frozen features: kNN majority vote and a linear classifier.

Cheap, stable measures of how well features separate the classes, next to retrieval's recall@k:

- kNN top-1: the majority class among a query's k nearest train items (the same exact FAISS
  search as retrieval), ties broken by the nearest neighbour among the tied classes;
- linear probe top-1: multinomial logistic regression (L-BFGS, L2 penalty ``1/C``) on features
  standardised with the train items' statistics.

Video level: one feature per video (the mean over its clips). Clip level: every clip on its own,
each test clip querying (or classified against) the train clips.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stica.errors import SticaError
from stica.eval.retrieval import knn

LINEAR_MAX_ITER = 1000


def knn_vote(neighbour_labels: np.ndarray, k: int, num_classes: int) -> np.ndarray:
    """Majority class among the first ``k`` neighbours; a tie goes to the tied class that has
    the nearest neighbour.

    Shape:
        neighbour_labels: (Q, >= k) int, nearest first -> (Q,) int
    """
    labels = np.asarray(neighbour_labels)[:, :k]
    q = len(labels)
    votes = np.zeros((q, num_classes), dtype=np.int64)
    np.add.at(votes, (np.repeat(np.arange(q), k), labels.reshape(-1)), 1)
    tied = votes == votes.max(axis=1, keepdims=True)  # (Q, C)
    # the first neighbour (nearest) whose class is among the tied ones
    first_tied = np.argmax(np.take_along_axis(tied, labels, axis=1), axis=1)  # (Q,)
    return labels[np.arange(q), first_tied]


def knn_accuracy(
    query: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    ks: Sequence[int],
) -> dict[int, float]:
    """kNN top-1 for each k: the fraction of queries whose vote is their class.

    Shape:
        query: (Q, D) L2-normalised; gallery: (G, D) L2-normalised; labels (Q,), (G,)
    """
    num_classes = int(max(query_labels.max(), gallery_labels.max())) + 1
    _, neighbours, _ = knn(query, gallery, max(ks))
    neighbour_labels = np.asarray(gallery_labels)[neighbours]  # (Q, max k)
    return {
        k: float((knn_vote(neighbour_labels, k, num_classes) == query_labels).mean()) for k in ks
    }


def linear_probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    c: float = 1.0,
) -> float:
    """Top-1 of a logistic-regression probe fitted on the (standardised) train features.

    Shape:
        train_x: (N, D); train_y: (N,); test_x: (M, D); test_y: (M,)
    """
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(train_y)) < 2:
        raise SticaError("linear probe: the train split holds fewer than 2 classes")
    mean = train_x.mean(axis=0)
    std = train_x.std(axis=0) + 1e-8
    clf = LogisticRegression(C=c, max_iter=LINEAR_MAX_ITER)
    clf.fit((train_x - mean) / std, train_y)
    return float((clf.predict((test_x - mean) / std) == test_y).mean())


def class_probes(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    knn_ks: Sequence[int],
    c: float,
) -> dict[str, float]:
    """``{"kNN-k top-1": ..., "linear top-1": ...}`` of one level (video or clip).

    Shape:
        train_x: (N, D); test_x: (M, D), rows L2-normalised; labels (N,), (M,)
    """
    ks = [k for k in knn_ks if k <= len(train_x)]
    out = {
        f"kNN-{k} top-1": v for k, v in knn_accuracy(test_x, test_y, train_x, train_y, ks).items()
    }
    out["linear top-1"] = linear_probe_accuracy(train_x, train_y, test_x, test_y, c)
    return out


def feature_probes(features, knn_ks: Sequence[int], c: float) -> dict[str, dict[str, float]]:
    """Video- and (when the file has them) clip-level probes of a features file: test items
    against train items.

    Returns ``{"video": {"kNN-1 top-1": ..., "kNN-20 top-1": ..., "linear top-1": ...},
    "clip": {...}}``.
    """
    train, test = features.mask("train"), features.mask("test")
    y_train, y_test = features.labels[train], features.labels[test]
    out = {
        "video": class_probes(
            features.features[train], y_train, features.features[test], y_test, knn_ks, c
        )
    }
    clips = features.clip_features
    if clips is not None:
        per = clips.shape[1]
        out["clip"] = class_probes(
            clips[train].reshape(-1, clips.shape[2]),
            np.repeat(y_train, per),
            clips[test].reshape(-1, clips.shape[2]),
            np.repeat(y_test, per),
            knn_ks,
            c,
        )
    return out
