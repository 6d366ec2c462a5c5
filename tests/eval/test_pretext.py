"""The collapse diagnostic of the pretext report against analytic values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stica.eval.pretext import mean_pairwise_cosine


def test_mean_pairwise_cosine_analytic_values():
    same = F.normalize(torch.ones(5, 3), dim=1)
    assert mean_pairwise_cosine(same) == pytest.approx(1.0)  # collapsed
    assert mean_pairwise_cosine(torch.eye(4)) == pytest.approx(0.0)  # orthogonal
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert mean_pairwise_cosine(opposite) == pytest.approx(-1.0)
    z = F.normalize(torch.randn(7, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    sim = z @ z.t()
    by_hand = (sim.sum() - sim.diag().sum()) / (7 * 6)
    assert mean_pairwise_cosine(z) == pytest.approx(float(by_hand), abs=1e-6)
