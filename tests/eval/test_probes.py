"""Class probes: kNN majority vote (against a brute force) and the linear probe."""

import numpy as np
import pytest

from stica.eval.features_io import read_features, write_features
from stica.eval.probes import feature_probes, knn_accuracy, knn_vote, linear_probe_accuracy


def test_vote_is_the_majority_and_a_tie_goes_to_the_nearest_tied_class():
    labels = np.array(
        [
            [2, 1, 1, 0, 2],  # 1 and 2 tie with 2 votes each in the first 4... (k=5: 2,1 tie)
            [0, 3, 3, 3, 0],  # clear majority 3
            [4, 4, 1, 1, 2],  # k=4: 4 and 1 tie, 4 is nearer
        ]
    )
    assert knn_vote(labels, 5, 5).tolist() == [2, 3, 4]
    assert knn_vote(labels, 4, 5).tolist() == [1, 3, 4]
    assert knn_vote(labels, 1, 5).tolist() == [2, 0, 4]


def test_knn_accuracy_equals_a_brute_force():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((60, 8))
    q = rng.standard_normal((25, 8))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    gy, qy = rng.integers(0, 4, 60), rng.integers(0, 4, 25)
    got = knn_accuracy(q, qy, g, gy, (1, 7))
    order = np.argsort(-(q @ g.T), axis=1, kind="stable")
    for k in (1, 7):
        pred = []
        for row in order:
            counts = np.bincount(gy[row[:k]], minlength=4)
            tied = np.flatnonzero(counts == counts.max())
            pred.append(next(gy[j] for j in row[:k] if gy[j] in tied))
        assert got[k] == pytest.approx(float((np.array(pred) == qy).mean()))


def test_linear_probe_separates_separable_classes_and_not_noise():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((3, 5)) * 5
    y = np.repeat(np.arange(3), 40)
    x = centres[y] + rng.standard_normal((120, 5))
    assert linear_probe_accuracy(x[::2], y[::2], x[1::2], y[1::2]) == 1.0
    noise = rng.standard_normal((400, 5))
    labels = rng.integers(0, 3, 400)
    assert linear_probe_accuracy(noise[:200], labels[:200], noise[200:], labels[200:]) < 0.5


def test_video_and_clip_level_probes_of_a_features_file(tmp_path):
    rng = np.random.default_rng(2)
    classes, per, clips, dim = 4, 10, 3, 6
    centres = rng.standard_normal((classes, dim)) * 3
    labels = np.repeat(np.arange(classes), per)
    clip = centres[labels][:, None] + rng.standard_normal((len(labels), clips, dim))
    clip /= np.linalg.norm(clip, axis=2, keepdims=True)
    video = clip.mean(axis=1)
    video /= np.linalg.norm(video, axis=1, keepdims=True)
    split = np.where(np.arange(len(labels)) % per < 7, "train", "test")
    path = write_features(
        tmp_path / "f.h5",
        video,
        labels,
        split,
        [f"v{i}" for i in range(len(labels))],
        manifest_hash="m",
        store="s",
        checkpoint="c",
        clip_features=clip,
    )
    fs = read_features(path)
    assert fs.clip_features.shape == (40, 3, 6)
    probes = feature_probes(fs, (1, 20), 1.0)
    assert set(probes) == {"video", "clip"}
    assert set(probes["clip"]) == {"kNN-1 top-1", "kNN-20 top-1", "linear top-1"}
    assert probes["video"]["linear top-1"] == 1.0 and probes["clip"]["linear top-1"] > 0.8


def test_clip_features_of_the_wrong_shape_are_refused(tmp_path):
    from stica.errors import SticaError

    x = np.eye(4)[:, :3]
    x[3] = [1, 0, 0]
    with pytest.raises(SticaError, match="clip_features"):
        write_features(
            tmp_path / "f.h5",
            x,
            [0, 1, 2, 0],
            ["train", "train", "test", "test"],
            ["a", "b", "c", "d"],
            manifest_hash="m",
            store="s",
            checkpoint="c",
            clip_features=np.ones((4, 2, 5)),
        )
    assert not (tmp_path / "f.h5").exists()
