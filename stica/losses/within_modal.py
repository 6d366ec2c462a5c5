"""Within-modal loss L_vv over every pair of views, as eq. (6) of the paper's text reads.

View set T_i of RGB crop L_i holds L_i itself, its m medium and its n small feature crops (spatial
or temporal). L_vv sums L(α, β) + L(β, α) over (α, β) ∈ T1 × T2 except small × small pairs, i.e.
``2((1+m+n)² − n²)`` terms. (The paper's text writes ``2((m+n)² − n²)``, leaving L_i out of T_i;
SPEC puts L_i in T_i, which also makes the two-RGB-crop loss the special case m = n = 0.)

This is ``pretrain.vv_pairs: all``, an ablation: the authors' released code, which produced the
paper's numbers, compares far fewer pairs (:mod:`stica.losses.feature_crops`).

All pairs are computed at once: the views of each set are stacked to (K, B, E), each set is
gathered once across ranks, and one einsum gives every (α, β) similarity matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from stica import dist
from stica.losses.info_nce import check_temperature, gather_keys, positive_index

# A view set: named groups of stacked views, or (is_small, views) pairs. A group's tensor is
# (K, B, E) for K views of the same kind or (B, E) for one view.
Views = Mapping[str, torch.Tensor] | Sequence[tuple[bool, torch.Tensor]]


def default_is_small(name: str) -> bool:
    """Small-group rule for named views: the name ends with ``small`` ("small", "time_small")."""
    return name.endswith("small")


def stack_views(
    views: Views, is_small: Callable[[str], bool] = default_is_small, name: str = "views"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack a view set into one tensor plus a per-view small flag.

    Shape:
        - each group: (K, B, E) or (B, E)
        - output: ((K_total, B, E), (K_total,) bool)
    """
    if isinstance(views, Mapping):
        items = [(bool(is_small(k)), v, f"{name}[{k!r}]") for k, v in views.items()]
    elif isinstance(views, Sequence) and not isinstance(views, str | torch.Tensor):
        items = []
        for i, item in enumerate(views):
            if not (isinstance(item, tuple | list) and len(item) == 2):
                raise ValueError(f"{name}[{i}] must be an (is_small, embeddings) pair")
            items.append((bool(item[0]), item[1], f"{name}[{i}]"))
    else:
        raise ValueError(
            f"{name} must be a mapping of named groups or a sequence of (is_small, tensor) pairs, "
            f"got {type(views).__name__}"
        )
    if not items:
        raise ValueError(f"{name} holds no views")
    tensors, flags = [], []
    for small, t, where in items:
        if not isinstance(t, torch.Tensor) or t.dim() not in (2, 3):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{where} must be a (B, E) or (K, B, E) tensor, got {shape}")
        t = t.unsqueeze(0) if t.dim() == 2 else t
        if t.shape[0] == 0:
            continue  # an empty group (e.g. 0 small crops) contributes no views
        tensors.append(t)
        flags += [small] * t.shape[0]
    if not tensors:
        raise ValueError(f"{name} holds no views")
    shapes = {tuple(t.shape[1:]) for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"{name}: all views must share (B, E), got {sorted(shapes)}")
    (batch, dim) = shapes.pop()
    if batch < 1 or dim < 1:
        raise ValueError(f"{name}: empty batch or embedding (B, E) = ({batch}, {dim})")
    stacked = torch.cat(tensors, dim=0)  # (K, B, E)
    return stacked, torch.tensor(flags, dtype=torch.bool, device=stacked.device)


def gather_views(z: torch.Tensor, detach: bool = False) -> torch.Tensor:
    """Gather stacked views along the batch dim (with gradients, or under a stop-gradient).

    Shape: (K, B, E) -> (K, W*B, E)
    """
    if not dist.is_distributed():
        return z.detach() if detach else z
    return gather_keys(z.transpose(0, 1), detach).transpose(0, 1)


def pairwise_nce(q: torch.Tensor, k_all: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. (1) for every (query view, key view) pair at once.

    Shape:
        - q: (Kq, B, E) normalised local queries
        - k_all: (Kk, W*B, E) normalised gathered keys
        - output: (Kq, Kk), entry [a, b] = L(q_a, k_b)
    """
    kq, batch, _ = q.shape
    kk = k_all.shape[0]
    logits = torch.einsum("abe,cne->acbn", q, k_all) / temperature  # (Kq, Kk, B, W*B)
    target = positive_index(batch, q.device).repeat(kq * kk)  # (Kq*Kk*B,)
    ce = F.cross_entropy(logits.reshape(kq * kk * batch, -1), target, reduction="none")
    return ce.view(kq, kk, batch).mean(dim=2)


def within_modal_loss(
    views1: Views,
    views2: Views,
    temperature: float = 0.5,
    *,
    is_small: Callable[[str], bool] = default_is_small,
    reduction: Literal["sum", "mean"] = "sum",
    detach_keys: bool = False,
) -> tuple[torch.Tensor, int]:
    """Within-modal loss L_vv of eq. (6) between view sets T1 and T2.

    ``Σ L(α, β) + L(β, α)`` over (α, β) ∈ T1 × T2 minus small × small pairs. Each L is
    :func:`~stica.losses.info_nce` (under DDP: keys gathered from all ranks with gradients).

    Args:
        views1: view set T1 of RGB crop L1: a mapping of named groups, e.g. the feature-crops
            output ``{"full": (1, B, E), "medium": (Km, B, E), "small": (Ks, B, E)}``, or a
            sequence of ``(is_small, (B, E) or (K, B, E))`` pairs.
        views2: view set T2 of RGB crop L2, same structure.
        temperature: τ (paper: 0.5).
        is_small: for named groups, which names are small crops (default: name ends in "small").
        reduction: ``"sum"`` as in eq. (6), or ``"mean"`` over the terms.
        detach_keys: keys (local and gathered) under a stop-gradient.

    Shape:
        - every view: (B, E); a group stacks K of them as (K, B, E)
        - output: (() scalar loss, number of terms)

    Returns:
        ``(loss, n_terms)``; for m medium and n small crops per set (plus L_i),
        ``n_terms = 2((1+m+n)² − n²)``.

    Raises:
        ValueError: malformed view sets, mismatched (B, E), no non-small pair, or τ <= 0.
    """
    check_temperature(temperature)
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    z1, small1 = stack_views(views1, is_small, "views1")  # (K1, B, E), (K1,)
    z2, small2 = stack_views(views2, is_small, "views2")  # (K2, B, E), (K2,)
    if z1.shape[1:] != z2.shape[1:]:
        raise ValueError(
            f"views1 and views2 must share (B, E), got {tuple(z1.shape[1:])} and "
            f"{tuple(z2.shape[1:])}"
        )
    keep = ~(small1[:, None] & small2[None, :])  # (K1, K2): pair (α ∈ T1, β ∈ T2) counted
    n_terms = 2 * int(keep.sum())
    if n_terms == 0:
        raise ValueError("within_modal_loss: every pair is small x small, no term to compute")
    tau = float(temperature)
    z1 = F.normalize(z1, dim=2)
    z2 = F.normalize(z2, dim=2)
    loss_12 = pairwise_nce(z1, gather_views(z2, detach_keys), tau)  # (K1, K2): L(α, β)
    loss_21 = pairwise_nce(z2, gather_views(z1, detach_keys), tau)  # (K2, K1): L(β, α)
    w = keep.to(loss_12.dtype)
    loss = (loss_12 * w).sum() + (loss_21 * w.t()).sum()
    if reduction == "mean":
        loss = loss / n_terms
    return loss, n_terms


def within_modal_loss_reference(
    views1: Views,
    views2: Views,
    temperature: float = 0.5,
    *,
    is_small: Callable[[str], bool] = default_is_small,
    detach_keys: bool = False,
) -> tuple[torch.Tensor, int]:
    """Python double loop over view pairs calling ``info_nce``: the reference for tests."""
    from stica.losses.info_nce import info_nce

    z1, small1 = stack_views(views1, is_small, "views1")
    z2, small2 = stack_views(views2, is_small, "views2")
    loss, n = z1.new_zeros(()), 0
    for i in range(z1.shape[0]):
        for j in range(z2.shape[0]):
            if small1[i] and small2[j]:
                continue
            loss = loss + info_nce(z1[i], z2[j], temperature, detach_key=detach_keys)
            loss = loss + info_nce(z2[j], z1[i], temperature, detach_key=detach_keys)
            n += 2
    return loss, n
