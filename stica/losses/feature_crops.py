"""Within-modal loss over feature crops as the authors' released code computes it.

The paper's text (eq. 6) sums every (T1, T2) pair of views; the released code (``main_stica.py``,
which produced the published numbers) compares far fewer pairs, per dimension (space, time):

- with 2 medium crops, medium crop 2 of L1 against medium crop 2 of L2, both directions averaged
  into one term;
- every small crop of L2 as the query against every medium crop of L1 as the key (one direction).

For the paper-best crops (space 2 x 6² + 4 x 4², time 2 x 3 + 1 x 2) that is 1 + 2·4 + 1 + 2·1 =
12 terms; L_vv is their mean. The full views L1, L2 take no part (they meet only the audio).
The released code uses at most 2 medium crops per dimension, and small crops only next to
medium ones; :class:`stica.config.PretrainConfig` refuses other counts with ``vv_pairs: official``.

The terms are computed in blocks: one NCE call per symmetric pair and one for all small x medium
pairs of a dimension (every (query, key) similarity matrix from one einsum).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from stica.losses.info_nce import check_temperature
from stica.losses.within_modal import gather_views, pairwise_nce

DIMENSIONS = ("space", "time")


@dataclasses.dataclass(frozen=True)
class CropTerm:
    """One within-modal term: crop ``query`` as the query against crop ``key`` as the key.

    A crop is ``(view, group, index)``: view 1 or 2 (L1, L2), group such as ``"space_medium"``.
    A symmetric term is the mean of both directions (the released code's ``gdt_loss``).
    """

    query: tuple[int, str, int]
    key: tuple[int, str, int]
    symmetric: bool


def official_terms(counts: Mapping[str, int]) -> list[CropTerm]:
    """The released code's terms for crop counts ``{"space_medium": m, "space_small": n, ...}``."""
    terms = []
    for dim in DIMENSIONS:
        medium, small = counts.get(f"{dim}_medium", 0), counts.get(f"{dim}_small", 0)
        if medium == 2:
            terms.append(CropTerm((1, f"{dim}_medium", 1), (2, f"{dim}_medium", 1), True))
        for i in range(medium):
            for j in range(small):
                terms.append(CropTerm((2, f"{dim}_small", j), (1, f"{dim}_medium", i), False))
    return terms


def _count(views: Mapping[str, torch.Tensor], group: str) -> int:
    return int(views[group].shape[0]) if group in views else 0


def official_crop_loss(
    crops1: Mapping[str, torch.Tensor],
    crops2: Mapping[str, torch.Tensor],
    temperature: float = 0.5,
    *,
    detach_keys: bool = True,
) -> tuple[torch.Tensor, int]:
    """Sum of the released code's within-modal terms, and their number (divide for the mean).

    Args:
        crops1, crops2: the feature crops of L1 and L2 by group, ``{"space_medium": (Km, B, E),
            "space_small": (Ks, B, E), "time_medium": ..., "time_small": ...}`` (absent or K = 0
            groups have no crops); both views must have the same counts.
        temperature: τ (paper: 0.5).
        detach_keys: keys under a stop-gradient (released code: always). Small → medium terms
            detach the medium key in any case: the released code detaches it explicitly.

    Shape:
        - every group: (K, B, E)
        - output: (() scalar sum of the terms, number of terms)

    Raises:
        ValueError: different counts in the two views, mismatched (B, E), no term, or τ <= 0.
    """
    check_temperature(temperature)
    tau = float(temperature)
    groups = [f"{dim}_{scale}" for dim in DIMENSIONS for scale in ("medium", "small")]
    counts = {g: _count(crops1, g) for g in groups}
    if counts != {g: _count(crops2, g) for g in groups}:
        raise ValueError(
            f"crops1 and crops2 must hold the same crops, got {counts} and "
            f"{ {g: _count(crops2, g) for g in groups} }"
        )
    shapes = {tuple(v.shape[1:]) for c in (crops1, crops2) for v in c.values() if v.shape[0]}
    if len(shapes) > 1:
        raise ValueError(f"all crops must share (B, E), got {sorted(shapes)}")
    terms = official_terms(counts)
    if not terms:
        raise ValueError(f"the released code's pairs give no within-modal term for crops {counts}")
    z1 = {g: F.normalize(v, dim=2) for g, v in crops1.items() if v.shape[0]}
    z2 = {g: F.normalize(v, dim=2) for g, v in crops2.items() if v.shape[0]}
    ref = next(iter(z1.values()))
    loss = ref.new_zeros(())
    for dim in DIMENSIONS:
        medium, small = f"{dim}_medium", f"{dim}_small"
        if counts[medium] == 2:
            a, b = z1[medium][1:2], z2[medium][1:2]  # (1, B, E): medium crop 2 of L1, of L2
            ab = pairwise_nce(a, gather_views(b, detach_keys), tau)  # (1, 1)
            ba = pairwise_nce(b, gather_views(a, detach_keys), tau)
            loss = loss + 0.5 * (ab.sum() + ba.sum())
        if counts[medium] and counts[small]:
            keys = gather_views(z1[medium], detach=True)  # (Km, W*B, E)
            loss = loss + pairwise_nce(z2[small], keys, tau).sum()  # (Ks, Km) terms
    return loss, len(terms)
