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
