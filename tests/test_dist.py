from pathlib import Path

import pytest
import torch
from dist_helpers import run_ranks

from stica import dist

WORLD = 2


def test_single_process_fallbacks(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not dist.is_distributed()
    assert (dist.rank(), dist.world_size(), dist.local_rank()) == (0, 1, 0)
    assert dist.is_main_process()
    assert dist.init_distributed() is False  # not launched by torchrun: no-op
    assert not dist.is_distributed()
    x = torch.randn(3, 2, requires_grad=True)
    assert dist.gather_with_grad(x) is x
    assert dist.all_reduce_mean(torch.tensor(3)).item() == 3.0
    dist.barrier()
    dist.cleanup()


def _worker(rank: int, out_dir: str) -> None:
    assert dist.is_distributed() and dist.rank() == rank and dist.world_size() == WORLD
    assert dist.local_rank() == rank and dist.is_main_process() == (rank == 0)
    # (K, B, E) = (2, 3, 4) per rank; rows carry (rank, k, b) so the gathered order is checkable
    x = torch.arange(2 * 3 * 4, dtype=torch.float64).view(2, 3, 4) + 100 * rank
    x.requires_grad_()
    g = dist.gather_with_grad(x.transpose(0, 1)).transpose(0, 1)  # (2, 6, 4), strided grads
    weights = torch.arange(g.numel(), dtype=torch.float64).view_as(g) * (rank + 1)
    (g * weights).sum().backward()
    mean = dist.all_reduce_mean(torch.tensor([float(rank)]))
    dist.barrier()
    torch.save({"gathered": g.detach(), "grad": x.grad, "mean": mean}, Path(out_dir) / f"{rank}.pt")


def test_two_ranks_gather_and_reduce(tmp_path):
    run_ranks(_worker, WORLD, str(tmp_path), timeout_s=120)
    res = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(WORLD)]
    xs = [torch.arange(24, dtype=torch.float64).view(2, 3, 4) + 100 * r for r in range(WORLD)]
    expected = torch.cat(xs, dim=1)  # rank r's rows at [r*B, (r+1)*B)
    weights = torch.arange(expected.numel(), dtype=torch.float64).view_as(expected)
    for r, out in enumerate(res):
        torch.testing.assert_close(out["gathered"], expected)
        assert out["mean"].item() == pytest.approx(0.5)
        # d/dx_r of Σ_ranks (g * w * (rank+1)).sum(): every rank's weights on this rank's slice
        slice_w = weights[:, r * 3 : (r + 1) * 3]
        torch.testing.assert_close(out["grad"], slice_w * sum(q + 1 for q in range(WORLD)))
