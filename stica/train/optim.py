"""The optimiser of a training run, by name: SGD with momentum (the paper) or AdamW."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch

Optimizer = Literal["sgd", "adamw"]


def build_optimizer(
    kind: Optimizer,
    params: Iterable[Any],
    lr: float,
    momentum: float,
    weight_decay: float,
) -> torch.optim.Optimizer:
    """``sgd``: SGD with ``momentum`` and L2 ``weight_decay`` (paper, released code);
    ``adamw``: AdamW with beta1 = ``momentum``, beta2 = 0.999 and decoupled ``weight_decay``.

    ``params`` are parameters or parameter groups (each group may carry its own ``lr``).
    """
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {kind!r} (sgd or adamw)")
