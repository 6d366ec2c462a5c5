"""Linear evaluation of the audio trunk (paper appendix 6.2, SPEC "audio-eval").

Protocol: each audio sample is cut into sub-clips (ESC-50: 10 equally spaced 2 s sub-clips;
DCASE2014: 60 one-second ones); the frozen trunk's last conv activations of every sub-clip are
max-pooled with kernel (1, 3), stride (1, 2), no padding, and flattened (``pool_activations``).
An L2-regularised linear layer is trained on the sub-clips (each labelled with its sample's class)
with Adam (lr 1e-4, weight decay 5e-4 -- the L2 term --, batch 512, default betas). A sample's
score is the mean of its sub-clips' scores (the linear layer's outputs, i.e. logits); its
prediction is the arg-max of that mean; accuracy is top-1 over samples, averaged over folds.

Departure, documented: the pooled features are standardised (per-dimension mean and std fitted on
the training sub-clips only) before the linear layer, because raw post-ReLU activations have very
different scales and Adam at lr 1e-4 would otherwise need far more epochs. ``standardize=False``
gives the paper's exact setting.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stica.errors import SticaError

POOL_KERNEL = (1, 3)  # (frequency, time)
POOL_STRIDE = (1, 2)
LR = 1e-4
WEIGHT_DECAY = 5e-4
BATCH_SIZE = 512
STD_EPS = 1e-6  # keeps constant (dead) feature dimensions finite after standardisation


def pool_activations(act: torch.Tensor) -> torch.Tensor:
    """Max-pool the trunk's last conv activations over time and flatten them.

    Shape:
        act: (N, C, F, T) -> (N, C * F * T'), T' = floor((T - 3) / 2) + 1 (no padding).
    """
    if act.ndim != 4:
        raise SticaError(f"audio activations must be (N, C, F, T), got shape {tuple(act.shape)}")
    if act.shape[-1] < POOL_KERNEL[1]:
        raise SticaError(
            f"audio activations have {act.shape[-1]} time steps; the (1, 3) pool needs >= 3 "
            "(sub-clips too short for the trunk?)"
        )
    pooled = F.max_pool2d(act, kernel_size=POOL_KERNEL, stride=POOL_STRIDE)  # (N, C, F, T')
    return pooled.flatten(1)


class LinearProbe:
    """A linear classifier on frozen features, trained with Adam + L2 (weight decay).

    Deterministic for a given ``seed``: the weights are initialised and the batches shuffled
    from a private generator, without touching torch's global RNG.
    """

    def __init__(
        self,
        num_classes: int,
        epochs: int,
        *,
        lr: float = LR,
        weight_decay: float = WEIGHT_DECAY,
        batch_size: int = BATCH_SIZE,
        standardize: bool = True,
        seed: int = 0,
    ) -> None:
        if num_classes < 2:
            raise SticaError(f"audio-eval: need at least 2 classes, got {num_classes}")
        if epochs < 1:
            raise SticaError(f"audio-eval: epochs must be >= 1, got {epochs}")
        if batch_size < 1:
            raise SticaError(f"audio-eval: batch size must be >= 1, got {batch_size}")
        self.num_classes = num_classes
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.standardize = standardize
        self.seed = seed
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> list[float]:
        """Train on (sub-clip) features; returns the mean loss per epoch.

        Shape:
            features: (M, D) float; labels: (M,) int in [0, num_classes).
        """
        x = torch.as_tensor(features).float()
        y = torch.as_tensor(labels).long().to(x.device)
        if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
            raise SticaError(
                f"audio-eval: features {tuple(x.shape)} and labels {tuple(y.shape)} do not match"
            )
        if int(y.min()) < 0 or int(y.max()) >= self.num_classes:
            raise SticaError(f"audio-eval: labels must be in [0, {self.num_classes})")
        gen = torch.Generator().manual_seed(self.seed)
        if self.standardize:
            self.mean = x.mean(0, keepdim=True)
            self.std = x.std(0, unbiased=False, keepdim=True) + STD_EPS
        x = self._normalise(x)
        dim = x.shape[1]
        # nn.Linear's default init (uniform in +-1/sqrt(fan_in)), from the private generator.
        bound = 1.0 / math.sqrt(dim)
        weight = (torch.rand(self.num_classes, dim, generator=gen) * 2 - 1) * bound
        bias = (torch.rand(self.num_classes, generator=gen) * 2 - 1) * bound
        weight = weight.to(x.device).requires_grad_()
        bias = bias.to(x.device).requires_grad_()
        opt = torch.optim.Adam([weight, bias], lr=self.lr, weight_decay=self.weight_decay)
        losses = []
        for _ in range(self.epochs):
            perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
            total = 0.0
            for start in range(0, x.shape[0], self.batch_size):
                idx = perm[start : start + self.batch_size]
                loss = F.cross_entropy(F.linear(x[idx], weight, bias), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            losses.append(total / x.shape[0])
        self.weight, self.bias = weight.detach(), bias.detach()
        return losses

    @torch.no_grad()
    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """Per-sub-clip class scores (logits).

        Shape:
            features: (M, D) -> (M, num_classes).
        """
        if self.weight is None:
            raise RuntimeError("LinearProbe.scores called before fit")
        x = self._normalise(torch.as_tensor(features).float().to(self.weight.device))
        return F.linear(x, self.weight, self.bias)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return x
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


def sample_scores(scores: torch.Tensor, sample_ids: Sequence) -> tuple[np.ndarray, torch.Tensor]:
    """Average sub-clip scores per sample, samples in order of first appearance.

    Shape:
        scores: (M, C); sample_ids: (M,) -> unique ids (S,), mean scores (S, C).
    """
    ids = np.asarray(sample_ids)
    uniq, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # keep the caller's sample order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    group = torch.as_tensor(rank[inverse.reshape(-1)], device=scores.device)  # (M,)
    sums = torch.zeros(len(uniq), scores.shape[1], dtype=scores.dtype, device=scores.device)
    sums.index_add_(0, group, scores)
    counts = torch.bincount(group, minlength=len(uniq)).to(scores.dtype)
    return uniq[order], sums / counts[:, None]


@dataclasses.dataclass(frozen=True)
class FoldResult:
    """Top-1 accuracy over samples, per fold and mean over folds."""

    per_fold: dict[str, float]
    mean: float
    num_train_samples: dict[str, int]
    num_test_samples: dict[str, int]


def evaluate_split(
    features: torch.Tensor,
    labels: Sequence[int],
    sample_ids: Sequence,
    train_mask: Sequence[bool],
    *,
    num_classes: int | None = None,
    epochs: int,
    seed: int = 0,
    standardize: bool = True,
    batch_size: int = BATCH_SIZE,
    lr: float = LR,
    weight_decay: float = WEIGHT_DECAY,
) -> tuple[float, int, int]:
    """Train on the sub-clips of ``train_mask``, test on the rest; top-1 over test samples.

    Shape:
        features: (M, D) pooled sub-clip features; labels, sample_ids, train_mask: (M,).
    Returns (accuracy, num train samples, num test samples).
    """
    x = torch.as_tensor(features).float()
    y = np.asarray(labels, dtype=np.int64)
    ids = np.asarray(sample_ids)
    train = np.asarray(train_mask, dtype=bool)
    if not (len(y) == len(ids) == len(train) == x.shape[0]):
        raise SticaError("audio-eval: features, labels, sample ids and folds differ in length")
    _check_samples(y, ids, train)
    if not train.any() or train.all():
        raise SticaError("audio-eval: a fold has no training or no test samples")
    num_classes = num_classes or int(y.max()) + 1
    probe = LinearProbe(
        num_classes,
        epochs,
        seed=seed,
        standardize=standardize,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
    )
    tr = torch.as_tensor(np.flatnonzero(train), device=x.device)
    te = torch.as_tensor(np.flatnonzero(~train), device=x.device)
    probe.fit(x[tr], torch.as_tensor(y[train]))
    test_ids, mean_scores = sample_scores(probe.scores(x[te]), ids[~train])
    first = {sid: i for i, sid in reversed(list(enumerate(ids[~train])))}
    truth = y[~train][[first[s] for s in test_ids]]
    pred = mean_scores.argmax(1).cpu().numpy()
    return float((pred == truth).mean()), len(np.unique(ids[train])), len(test_ids)


def evaluate_folds(
    features: torch.Tensor,
    labels: Sequence[int],
    sample_ids: Sequence,
    folds: Sequence,
    *,
    test_folds: Sequence | None = None,
    epochs: int,
    seed: int = 0,
    standardize: bool = True,
    batch_size: int = BATCH_SIZE,
    lr: float = LR,
    weight_decay: float = WEIGHT_DECAY,
) -> FoldResult:
    """Cross-validation over official folds: each fold in turn is the test set, the rest train.

    ESC-50: ``folds`` = the sample's fold (1..5) on each of its sub-clips. DCASE2014 (one fixed
    split): ``folds`` = "train"/"test" per sub-clip and ``test_folds=["test"]``. A fresh probe
    (same seed) is trained per fold.

    Shape:
        features: (M, D); labels, sample_ids, folds: (M,), one entry per sub-clip.
    """
    fold_arr = np.asarray(folds)
    y = np.asarray(labels, dtype=np.int64)
    if len(fold_arr) != len(y):
        raise SticaError("audio-eval: folds and labels differ in length")
    if len(y) == 0:
        raise SticaError("audio-eval: no samples")
    tests = list(np.unique(fold_arr)) if test_folds is None else list(test_folds)
    missing = [f for f in tests if not (fold_arr == f).any()]
    if missing:
        raise SticaError(f"audio-eval: fold {missing[0]!r} has no samples")
    num_classes = int(y.max()) + 1
    per_fold, n_train, n_test = {}, {}, {}
    for fold in tests:
        acc, a, b = evaluate_split(
            features,
            y,
            sample_ids,
            fold_arr != fold,
            num_classes=num_classes,
            epochs=epochs,
            seed=seed,
            standardize=standardize,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
        )
        per_fold[str(fold)], n_train[str(fold)], n_test[str(fold)] = acc, a, b
    return FoldResult(
        per_fold=per_fold,
        mean=float(np.mean(list(per_fold.values()))),
        num_train_samples=n_train,
        num_test_samples=n_test,
    )


def _check_samples(labels: np.ndarray, ids: np.ndarray, train: np.ndarray) -> None:
    """Every sub-clip of a sample must carry the sample's label and sit in the same fold."""
    for name, values in (("label", labels), ("fold", train)):
        seen: dict = {}
        for sid, v in zip(ids.tolist(), values.tolist(), strict=True):
            if seen.setdefault(sid, v) != v:
                raise SticaError(f"audio-eval: sample {sid!r} has sub-clips with different {name}s")
