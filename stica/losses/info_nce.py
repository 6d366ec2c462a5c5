"""The noise-contrastive loss of eq. (1) (paper sec. 3.1), DDP-aware.

Under ``torch.distributed`` the keys are gathered from every rank, so the negatives of each local
query are the keys of the whole global batch. Rank ``r``'s row ``i`` then has its positive at global
row ``r * B + i``. Averaging the per-rank losses (as DDP averages the gradients) gives exactly the
loss and gradients of one process on the concatenated batch.

Keys either keep their gradients (``detach_key=False``) or sit under a stop-gradient
(``detach_key=True``), as in the authors' released code, where every key, local and gathered, is
detached and only the queries are trained by a term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stica import dist


def _check_embeddings(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (batch, dim), got shape {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError(f"{name} has an empty batch (shape {tuple(x.shape)})")
    if x.shape[1] < 1:
        raise ValueError(f"{name} has zero embedding dimensions (shape {tuple(x.shape)})")


def check_temperature(temperature: float) -> None:
    """Raise ValueError unless ``temperature`` is a finite number > 0."""
    t = float(temperature)
    if not (t > 0 and t != float("inf")):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def check_pair(query: torch.Tensor, key: torch.Tensor) -> None:
    """Validate a query/key pair of embeddings: 2-D, non-empty, same shape."""
    _check_embeddings("query", query)
    _check_embeddings("key", key)
    if query.shape != key.shape:
        raise ValueError(
            f"query and key must have the same shape (row i of query matches row i of key), "
            f"got {tuple(query.shape)} and {tuple(key.shape)}"
        )


def positive_index(batch: int, device: torch.device) -> torch.Tensor:
    """Global row of each local row's positive among gathered keys: ``rank * B + i``.

    Shape:
        - output: (B,) int64
    """
    return torch.arange(batch, device=device) + dist.rank() * batch


def gather_keys(keys: torch.Tensor, detach: bool) -> torch.Tensor:
    """All ranks' keys (dim 0), with gradients or under a stop-gradient.

    Shape:
        - keys: (B, *) local keys
        - output: (world_size * B, *)
    """
    return dist.gather_detached(keys) if detach else dist.gather_with_grad(keys)


def nce_from_normalised(
    query: torch.Tensor, keys: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Eq. (1) given L2-normalised local queries and already gathered, normalised keys.

    Shape:
        - query: (B, E)
        - keys: (world_size * B, E)
        - output: () scalar, mean over the B local rows
    """
    logits = query @ keys.t() / temperature  # (B, W*B)
    return F.cross_entropy(logits, positive_index(query.shape[0], query.device))


def info_nce(
    query: torch.Tensor, key: torch.Tensor, temperature: float, *, detach_key: bool = False
) -> torch.Tensor:
    """Noise-contrastive loss L(α, β) of eq. (1).

    ``-1/N Σ_i log( exp(sim(q_i, k_i)/τ) / Σ_j exp(sim(q_i, k_j)/τ) )`` with cosine similarity
    (both inputs are L2-normalised here), row ``i`` of ``query`` matching row ``i`` of ``key`` and
    every other key a negative. Not symmetric: ``info_nce(a, b) != info_nce(b, a)``.

    Under DDP the keys are gathered from every rank, so the denominator runs over the global
    batch; the returned value is this rank's mean over its local rows, and the mean over ranks
    equals the single-process loss on the global batch.

    Args:
        query: embeddings z_α of the query view.
        key: embeddings z_β of the key view, same shape as ``query``.
        temperature: τ > 0.
        detach_key: stop the gradient at the keys (local and gathered), as the released code.

    Shape:
        - query: (B, E)
        - key: (B, E)
        - output: () scalar

    Raises:
        ValueError: inputs not 2-D, of different shapes, with an empty batch, or τ <= 0.
    """
    check_pair(query, key)
    check_temperature(temperature)
    q = F.normalize(query, dim=1)
    k = gather_keys(F.normalize(key, dim=1), detach_key)  # (W*B, E)
    return nce_from_normalised(q, k, float(temperature))
