import numpy as np
import pytest

from stica.errors import SticaError
from stica.eval.features_io import read_features, write_features
from stica.eval.retrieval import evaluate_retrieval, knn, recall_at_k


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _reference(query, qlab, gallery, glab, ks):
    """Brute force in float64: order by score descending, ties by gallery index ascending."""
    scores = query.astype(np.float64) @ gallery.astype(np.float64).T
    order = np.lexsort((np.broadcast_to(np.arange(len(gallery)), scores.shape), -scores), axis=1)
    recall = {}
    for k in ks:
        top = order[:, :k]
        recall[k] = float(np.mean([(glab[top[i]] == qlab[i]).any() for i in range(len(query))]))
    return recall, order


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_recall_matches_bruteforce_reference(seed):
    rng = np.random.default_rng(seed)
    dim, classes = 16, 5
    gallery = _unit(rng.standard_normal((120, dim)))
    query = _unit(rng.standard_normal((40, dim)))
    glab = rng.integers(0, classes, 120)
    qlab = rng.integers(0, classes, 40)
    ks = [1, 3, 5, 20, 120]
    result = recall_at_k(query, qlab, gallery, glab, ks)
    expected, order = _reference(query, qlab, gallery, glab, ks)
    assert result.recall == pytest.approx(expected, abs=0)
    np.testing.assert_array_equal(result.neighbours, order[:, :120])
    assert result.neighbours.shape == (40, 120) and result.hits.shape == (40, 120)
    assert (np.diff(result.scores, axis=1) <= 0).all()
    # Recall is monotone in k and 1.0 when k is the whole gallery (every class is present).
    values = [result.recall[k] for k in sorted(ks)]
    assert values == sorted(values)
    assert result.recall[120] == 1.0


def test_ties_are_broken_by_lowest_gallery_index():
    # 30 identical gallery vectors: all tied. FAISS alone returns them in decreasing index order.
    gallery = np.zeros((30, 4), np.float32)
    gallery[:, 0] = 1.0
    gallery[7, :] = [0, 1, 0, 0]  # one lower-scoring item in the middle
    query = np.array([[1, 0, 0, 0]] * 3, np.float32)
    scores, idx, _ = knn(query, gallery, 5)
    np.testing.assert_array_equal(idx, [[0, 1, 2, 3, 4]] * 3)
    # Tie straddling the k-th place with a higher-scoring item first.
    gallery[20] = _unit(np.array([[1, 0.1, 0, 0]]))[0] * 1.0
    query2 = _unit(np.array([[1, 0.05, 0, 0]], np.float32))
    scores, idx, _ = knn(query2, gallery, 4)
    assert idx[0, 0] == 20
    np.testing.assert_array_equal(idx[0, 1:], [0, 1, 2])


def test_tie_at_boundary_decides_the_hit_deterministically():
    # Two tied neighbours with different classes: k=1 takes the lower index.
    gallery = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    query = np.array([[1, 0]], np.float32)
    assert recall_at_k(query, [5], gallery, [5, 6, 6], [1]).recall[1] == 1.0
    assert recall_at_k(query, [6], gallery, [5, 6, 6], [1, 2]).recall == {1: 0.0, 2: 1.0}


def test_separated_clusters_give_recall_one_and_shuffled_labels_give_chance():
    rng = np.random.default_rng(0)
    classes, dim = 8, 32
    centres = _unit(rng.standard_normal((classes, dim)))
    glab = np.repeat(np.arange(classes), 50)
    qlab = np.repeat(np.arange(classes), 25)
    gallery = _unit(centres[glab] + 0.05 * rng.standard_normal((len(glab), dim)))
    query = _unit(centres[qlab] + 0.05 * rng.standard_normal((len(qlab), dim)))
    result = recall_at_k(query, qlab, gallery, glab, [1, 5])
    assert result.recall == {1: 1.0, 5: 1.0}
    assert result.hits[:, :5].all()
    shuffled = rng.permutation(glab)
    chance = recall_at_k(query, qlab, gallery, shuffled, [1]).recall[1]
    assert abs(chance - 1 / classes) < 0.08  # 200 queries: chance 0.125, std ~0.023


def test_errors_are_one_line_sticaerrors():
    rng = np.random.default_rng(0)
    g = _unit(rng.standard_normal((10, 8)))
    q = _unit(rng.standard_normal((3, 8)))
    lab = np.zeros(10, int)
    with pytest.raises(SticaError, match="larger than the gallery"):
        recall_at_k(q, [0, 0, 0], g, lab, [1, 11])
    with pytest.raises(SticaError, match=">= 1"):
        recall_at_k(q, [0, 0, 0], g, lab, [0])
    with pytest.raises(SticaError, match="dimensions differ"):
        recall_at_k(q[:, :4], [0, 0, 0], g, lab, [1])
    with pytest.raises(SticaError, match="no queries"):
        recall_at_k(q[:0], [], g, lab, [1])
    with pytest.raises(SticaError, match="empty gallery"):
        recall_at_k(q, [0, 0, 0], g[:0], lab[:0], [1])


def test_evaluate_retrieval_on_a_features_file(tmp_path):
    rng = np.random.default_rng(0)
    feats = _unit(rng.standard_normal((12, 8)))
    labels = np.arange(12) % 3
    split = ["train"] * 9 + ["test"] * 3
    path = write_features(
        tmp_path / "f.h5",
        feats,
        labels,
        split,
        [f"v{i}" for i in range(12)],
        manifest_hash="abc",
        store="s",
        checkpoint="random",
    )
    fs = read_features(path)
    result = evaluate_retrieval(fs, [1, 9])
    assert (result.num_queries, result.num_gallery) == (3, 9)
    expected, _ = _reference(feats[9:], labels[9:], feats[:9], labels[:9], [1, 9])
    assert result.recall == expected
    only_train = write_features(
        tmp_path / "g.h5",
        feats,
        labels,
        ["train"] * 12,
        [f"v{i}" for i in range(12)],
        manifest_hash="abc",
        store="s",
        checkpoint="random",
    )
    with pytest.raises(SticaError, match="test split is empty"):
        evaluate_retrieval(read_features(only_train), [1])
