"""Learning-rate schedules as multipliers of the base lr, per optimisation step."""

from __future__ import annotations

import math
from collections.abc import Sequence


def pretrain_lr_factor(
    step: int,
    total_steps: int,
    warmup_steps: int,
    start_factor: float,
    constant: bool = False,
) -> float:
    """Multiplier of the base lr at optimisation step ``step`` (0-based).

    Warm-up as the released code's ``np.linspace(start_warmup, base_lr, warmup_steps)``: step 0 at
    ``start_factor``, step ``warmup_steps - 1`` at 1, linear in between; then constant (the
    released code, ``use_lr_scheduler=False``) or a cosine decay to 0 over the remaining steps.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return start_factor + (1.0 - start_factor) * step / max(warmup_steps - 1, 1)
    if constant:
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def warmup_step(
    step: int,
    steps_per_epoch: int,
    start_factor: float,
    warmup_epochs: float,
    milestones: Sequence[int],
    gamma: float,
) -> float:
    """The finetuning schedule of GDT/STiCA: linear warm-up from ``start_factor`` to 1 over
    ``warmup_epochs``, then ×``gamma`` at each milestone epoch."""
    epoch = step / steps_per_epoch
    if epoch < warmup_epochs:
        return start_factor + (1.0 - start_factor) * epoch / warmup_epochs
    return gamma ** sum(epoch >= m for m in milestones)
