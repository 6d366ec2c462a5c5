import math

import numpy as np
import pytest
import torch

from stica.losses import cross_modal_loss, info_nce


def reference_eq1(query: np.ndarray, key: np.ndarray, tau: float) -> float:
    """Eq. (1) written row by row with Python loops."""
    n = query.shape[0]
    total = 0.0
    for i in range(n):
        qi = query[i] / np.linalg.norm(query[i])
        sims = []
        for j in range(n):
            kj = key[j] / np.linalg.norm(key[j])
            sims.append(float(qi @ kj) / tau)
        denom = sum(math.exp(s) for s in sims)
        total += -math.log(math.exp(sims[i]) / denom)
    return total / n


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_matches_per_row_reference(tau):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(7, 5, generator=g, dtype=torch.float64)
    k = torch.randn(7, 5, generator=g, dtype=torch.float64)
    got = info_nce(q, k, tau).item()
    assert got == pytest.approx(reference_eq1(q.numpy(), k.numpy(), tau), rel=1e-10)


def test_not_symmetric():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    assert info_nce(q, k, 0.5).item() != pytest.approx(info_nce(k, q, 0.5).item())


@pytest.mark.parametrize("n,tau", [(4, 0.1), (8, 0.5)])
def test_analytic_orthogonal_one_hot(n, tau):
    # identical one-hot rows: positive similarity 1, every negative 0
    x = torch.eye(n, dtype=torch.float64) * 3.0  # scale is removed by the cosine normalisation
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + (n - 1)))
    assert info_nce(x, x.clone(), tau).item() == pytest.approx(expected, rel=1e-5)


def test_batch_of_one_is_zero():
    x = torch.randn(1, 3)
    assert info_nce(x, torch.randn(1, 3), 0.1).item() == pytest.approx(0.0, abs=1e-7)


def test_gradient_flows_to_both_inputs():
    q = torch.randn(5, 4, requires_grad=True)
    k = torch.randn(5, 4, requires_grad=True)
    info_nce(q, k, 0.2).backward()
    assert q.grad.abs().sum() > 0 and k.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "q,k,tau,match",
    [
        (torch.randn(4), torch.randn(4), 0.1, "2-D"),
        (torch.randn(2, 3, 4), torch.randn(2, 3, 4), 0.1, "2-D"),
        (torch.randn(4, 3), torch.randn(5, 3), 0.1, "same shape"),
        (torch.randn(4, 3), torch.randn(4, 2), 0.1, "same shape"),
        (torch.randn(0, 3), torch.randn(0, 3), 0.1, "empty batch"),
        (torch.randn(4, 3), torch.randn(4, 3), 0.0, "temperature"),
        (torch.randn(4, 3), torch.randn(4, 3), -1.0, "temperature"),
        (torch.randn(4, 3), torch.randn(4, 3), float("inf"), "temperature"),
    ],
)
def test_argument_validation(q, k, tau, match):
    with pytest.raises(ValueError, match=match):
        info_nce(q, k, tau)


def test_not_a_tensor():
    with pytest.raises(ValueError, match="torch.Tensor"):
        info_nce([[1.0, 2.0]], torch.randn(1, 2), 0.1)


def test_cross_modal_is_sum_or_mean_of_four_terms():
    g = torch.Generator().manual_seed(3)
    v1, v2, a = (torch.randn(6, 5, generator=g, dtype=torch.float64) for _ in range(3))
    tau = 0.1
    expected = info_nce(v1, a, tau) + info_nce(v2, a, tau) + info_nce(a, v1, tau)
    expected = expected + info_nce(a, v2, tau)
    summed = cross_modal_loss(v1, v2, a, tau, reduction="sum")
    assert summed.item() == pytest.approx(expected.item(), rel=1e-12)
    # the released code: 0.5 * (gdt(v1, a) + gdt(v2, a)), each gdt the mean of its 2 directions
    assert cross_modal_loss(v1, v2, a, tau).item() == pytest.approx(expected.item() / 4, rel=1e-12)
    single = info_nce(v1, a, tau) + info_nce(a, v1, tau)
    summed = cross_modal_loss(v1, None, a, tau, reduction="sum")
    assert summed.item() == pytest.approx(single.item(), rel=1e-12)
    assert cross_modal_loss(v1, None, a, tau).item() == pytest.approx(single.item() / 2, rel=1e-12)


def test_detached_key_gets_no_gradient_and_the_value_is_unchanged():
    g = torch.Generator().manual_seed(5)
    q, k = (
        torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2)
    )
    with_grad = info_nce(q, k, 0.2)
    detached = info_nce(q, k, 0.2, detach_key=True)
    assert detached.item() == pytest.approx(with_grad.item(), rel=1e-15)
    detached.backward()
    assert k.grad is None and q.grad is not None and q.grad.abs().sum() > 0
    info_nce(q, k, 0.2).backward()
    assert k.grad is not None and k.grad.abs().sum() > 0


def test_cross_modal_validation():
    with pytest.raises(ValueError, match="same shape"):
        cross_modal_loss(torch.randn(4, 3), torch.randn(5, 3), torch.randn(4, 3))
