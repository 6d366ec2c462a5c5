"""Two real gloo ranks, each with half of a batch, give the loss and gradients of one process."""

from pathlib import Path

import pytest
import torch
from dist_helpers import run_ranks
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from stica import dist
from stica.losses import MODES, stica_loss

WORLD = 2
B_LOCAL, D_IN, E = 3, 5, 4
# feature crops per RGB crop by group (the paper-best counts but fewer small spatial crops)
CROPS = {"space_medium": 2, "space_small": 3, "time_medium": 2, "time_small": 1}
N_SMALL_RGB = 1
# rows of the input tensor: audio, L1, L2, the crops of L1, the crops of L2, small RGB
N_INPUTS = 3 + 2 * sum(CROPS.values()) + N_SMALL_RGB
# the released code's recipe (the defaults) and the paper's-text reading with gradient keys
RECIPES = {
    "official": {},
    "text": {
        "vv_pairs": "all",
        "vv_reduction": "sum",
        "va_reduction": "sum",
        "stop_grad_keys": False,
    },
}
CASES = [(mode, recipe) for mode in MODES for recipe in RECIPES]


def make_data():
    g = torch.Generator().manual_seed(123)
    x = torch.randn(N_INPUTS, WORLD * B_LOCAL, D_IN, generator=g, dtype=torch.float64)
    model = nn.Linear(D_IN, E).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return x, model


def loss_of(model: nn.Module, x: torch.Tensor, mode: str, recipe: str) -> dict:
    z = model(x)  # (N_INPUTS, B, E): one forward for every view
    a, v1, v2 = z[0], z[1], z[2]
    i = 3
    crops = []
    for _ in range(2):
        views = {}
        for group, k in CROPS.items():
            views[group], i = z[i : i + k], i + k
        crops.append(views)
    small_rgb = list(z[i:])
    return stica_loss(
        mode,
        a,
        v1,
        v2,
        crops1=crops[0],
        crops2=crops[1],
        small_rgb=small_rgb,
        **RECIPES[recipe],
    )


def _worker(rank: int, out_dir: str) -> None:
    assert dist.world_size() == WORLD and dist.rank() == rank and dist.is_distributed()
    x_all, model = make_data()
    ddp = DistributedDataParallel(model)
    result = {}
    for mode, recipe in CASES:
        x = x_all[:, rank * B_LOCAL : (rank + 1) * B_LOCAL].clone().requires_grad_()
        ddp.zero_grad()
        out = loss_of(ddp, x, mode, recipe)
        out["loss"].backward()  # DDP all-reduces (averages) the weight gradients
        result[f"{mode}/{recipe}"] = {
            "loss": dist.all_reduce_mean(out["loss"]),
            "n": out["n_vv_terms"],
            "weight_grad": model.weight.grad.clone(),
            "bias_grad": model.bias.grad.clone(),
            "input_grad": x.grad.clone(),
        }
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    run_ranks(_worker, WORLD, str(out), timeout_s=180)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("mode,recipe", CASES)
def test_two_ranks_equal_one_process(ddp_results, mode, recipe):
    x, model = make_data()
    x.requires_grad_()
    out = loss_of(model, x, mode, recipe)
    out["loss"].backward()
    ranks = [r[f"{mode}/{recipe}"] for r in ddp_results]
    for r in ranks:
        torch.testing.assert_close(r["loss"], out["loss"].detach())
        assert r["n"] == out["n_vv_terms"]
        torch.testing.assert_close(r["weight_grad"], model.weight.grad)
        torch.testing.assert_close(r["bias_grad"], model.bias.grad)
    # each rank's loss is its local mean; its inputs receive the gradients of every rank's loss
    # (through the gathered keys, unless they are detached): the sum over ranks is WORLD x the
    # global mean's gradient
    input_grad = torch.cat([r["input_grad"] for r in ranks], dim=1) / WORLD
    torch.testing.assert_close(input_grad, x.grad)
