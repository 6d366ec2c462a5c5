"""Learning-rate schedules: the released code's warm-up (np.linspace from start_warmup) + constant."""

import numpy as np
import pytest

from stica.train.schedule import pretrain_lr_factor


def test_warmup_is_the_released_linspace_then_constant():
    base, start, warmup, total = 0.64, 1e-3, 7, 20
    released = np.concatenate([np.linspace(start, base, warmup), np.full(total - warmup, base)])
    ours = [
        base * pretrain_lr_factor(s, total, warmup, start / base, constant=True)
        for s in range(total)
    ]
    np.testing.assert_allclose(ours, released, rtol=1e-12)


def test_cosine_after_warmup_and_no_warmup():
    assert pretrain_lr_factor(0, 10, 0, 0.5) == pytest.approx(1.0)
    assert pretrain_lr_factor(5, 10, 0, 0.5) == pytest.approx(0.5)  # half-way down the cosine
    assert pretrain_lr_factor(4, 10, 4, 0.1) == pytest.approx(1.0)  # first step after warm-up
    assert pretrain_lr_factor(10, 10, 4, 0.1) == pytest.approx(0.0)
    assert pretrain_lr_factor(0, 10, 1, 0.1) == pytest.approx(0.1)  # a 1-step warm-up


def test_optimizer_by_name_keeps_parameter_groups():
    import torch

    from stica.train.optim import build_optimizer

    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    groups = [{"params": a.parameters(), "lr": 0.1}, {"params": b.parameters(), "lr": 0.01}]
    sgd = build_optimizer("sgd", groups, 0.1, 0.9, 1e-5)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    assert [g["lr"] for g in sgd.param_groups] == [0.1, 0.01]
    adamw = build_optimizer("adamw", a.parameters(), 0.002, 0.9, 1e-4)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.9, 0.999)
    assert adamw.defaults["weight_decay"] == 1e-4
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer("lamb", a.parameters(), 0.1, 0.9, 0.0)
