import numpy as np
import pytest
import torch

from stica.errors import SticaError
from stica.eval.audio_linear import (
    LinearProbe,
    evaluate_folds,
    evaluate_split,
    pool_activations,
    sample_scores,
)


def test_pool_activations_kernel_1x3_stride_1x2():
    act = torch.arange(2 * 3 * 2 * 7, dtype=torch.float32).reshape(2, 3, 2, 7)  # (N, C, F, T)
    act[0, 0, 0] = torch.tensor([0.0, 5, 1, 2, 9, 3, 4])
    out = pool_activations(act)
    assert out.shape == (2, 3 * 2 * 3)  # T' = floor((7 - 3) / 2) + 1 = 3
    # windows over time [0:3], [2:5], [4:7], frequency untouched
    assert out[0, :3].tolist() == [5.0, 9.0, 9.0]
    with pytest.raises(SticaError, match="time steps"):
        pool_activations(torch.zeros(1, 2, 3, 2))
    with pytest.raises(SticaError, match=r"\(N, C, F, T\)"):
        pool_activations(torch.zeros(2, 3, 4))


def test_sample_score_is_the_mean_of_subclip_scores_not_a_vote():
    scores = torch.tensor([[1.0, 0.9], [1.0, 0.9], [0.0, 5.0], [3.0, 0.0]])
    ids, mean = sample_scores(scores, ["b", "b", "b", "a"])
    assert ids.tolist() == ["b", "a"]  # order of first appearance
    torch.testing.assert_close(mean, torch.tensor([[2 / 3, 6.8 / 3], [3.0, 0.0]]))
    assert mean.argmax(1).tolist() == [1, 0]  # a per-sub-clip vote would say class 0 for "b"


def _clusters(rng, n_per_class, dim, classes, noise=0.3):
    centres = rng.standard_normal((classes, dim))
    labels = np.repeat(np.arange(classes), n_per_class)
    return centres[labels] + noise * rng.standard_normal((len(labels), dim)), labels


def test_evaluate_split_averages_subclip_scores():
    rng = np.random.default_rng(0)
    # Train: class 0 around e0, class 1 around e1 (each sub-clip its own sample).
    e = np.eye(2)
    train_y = np.repeat([0, 1], 100)
    train_x = e[train_y] + 0.1 * rng.standard_normal((200, 2))
    # One test sample of class 1: two sub-clips mildly class 0, one strongly class 1.
    test_x = np.array([[0.8, 0.2], [0.8, 0.2], [0.0, 4.0]])
    x = torch.tensor(np.concatenate([train_x, test_x]), dtype=torch.float32)
    y = np.concatenate([train_y, [1, 1, 1]])
    ids = [f"tr{i}" for i in range(200)] + ["query"] * 3
    train = np.arange(203) < 200
    acc, n_train, n_test = evaluate_split(
        x, y, ids, train, epochs=10, batch_size=32, lr=0.05, standardize=False
    )
    assert (acc, n_train, n_test) == (1.0, 200, 1)
    # The same probe voting per sub-clip gets it wrong: the two mild sub-clips win.
    probe = LinearProbe(2, 10, batch_size=32, lr=0.05, standardize=False)
    probe.fit(x[:200], torch.as_tensor(train_y))
    votes = probe.scores(x[200:]).argmax(1)
    assert votes.tolist() == [0, 0, 1]


def test_separable_features_reach_high_accuracy_over_folds_and_are_deterministic():
    rng = np.random.default_rng(1)
    classes, samples_per_class, subclips, dim = 4, 10, 3, 24
    feats, sample_labels = _clusters(rng, samples_per_class, dim, classes)
    # Sub-clips: noisy copies of their sample's feature.
    x = np.repeat(feats, subclips, axis=0) + 0.3 * rng.standard_normal((len(feats) * subclips, dim))
    y = np.repeat(sample_labels, subclips)
    ids = np.repeat(np.arange(len(feats)), subclips)
    folds = np.repeat(np.arange(len(feats)) % 2 + 1, subclips)  # 2 folds, all classes in each
    x = torch.tensor(x, dtype=torch.float32)
    kw = dict(epochs=20, batch_size=32, lr=3e-3, seed=3)
    result = evaluate_folds(x, y, ids, folds, **kw)
    assert set(result.per_fold) == {"1", "2"}
    assert result.mean >= 0.9
    assert result.num_test_samples == {"1": 20, "2": 20}
    again = evaluate_folds(x, y, ids, folds, **kw)
    assert again == result
    p1 = LinearProbe(classes, 5, seed=7)
    p2 = LinearProbe(classes, 5, seed=7)
    assert p1.fit(x, torch.as_tensor(y)) == p2.fit(x, torch.as_tensor(y))
    assert torch.equal(p1.weight, p2.weight)
    # Random labels (per sample) stay near chance: the probe is not leaking test labels.
    shuffled = np.repeat(rng.permutation(sample_labels), subclips)
    chance = evaluate_folds(x, shuffled, ids, folds, **kw)
    assert chance.mean < 0.6
    # A fixed train/test split (DCASE style) through test_folds.
    split = np.where(folds == 1, "train", "test")
    fixed = evaluate_folds(x, y, ids, split, test_folds=["test"], **kw)
    assert list(fixed.per_fold) == ["test"] and fixed.mean >= 0.9


def test_inconsistent_samples_are_refused():
    x = torch.zeros(4, 3)
    with pytest.raises(SticaError, match="different labels"):
        evaluate_split(x, [0, 1, 1, 0], ["a", "a", "b", "b"], [True, True, False, False], epochs=1)
    with pytest.raises(SticaError, match="different folds"):
        evaluate_split(x, [0, 0, 1, 1], ["a", "a", "b", "b"], [True, False, True, False], epochs=1)
    with pytest.raises(SticaError, match="no samples"):
        evaluate_folds(
            x, [0, 0, 1, 1], ["a", "a", "b", "b"], [1, 1, 2, 2], test_folds=[3], epochs=1
        )
