"""Cost of the feature-crop path at the paper's sizes without the trunk: the whole maps of L1 and
L2 (R(2+1)D-18's 512 x 4 x 7 x 7) and the paper-best crops through pooling and heads, forward and
backward, as a training step runs them (``SticaModel.forward`` with the trunk replaced by identity).

Prints one JSON line: the kernels a GPU would launch (counted on the meta device) and the median
CPU time of 6 steps. Usage: ``python scripts/crop_path_cost.py BATCH [avg|transformer]``; run it on
two checkouts (``PYTHONPATH=...``), interleaved, to compare them.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from stica.config import FeatureCropConfig, ModelConfig
from stica.models.stica import SticaModel
from stica.perf import DeviceOpCounter

PAPER_CROPS = FeatureCropConfig(2, 6, 4, 4, 2, 3, 1, 2)
MAP = (512, 4, 7, 7)  # R(2+1)D-18's last block for 30 x 112^2 clips


def crop_path(batch: int, pooling: str, device: str) -> Callable[[int], None]:
    """One forward + backward of the crop path, seeded (crop offsets)."""
    torch.manual_seed(0)
    config = ModelConfig(
        video_trunk="r2plus1d_18",
        audio_trunk="small",
        pooling=pooling,
        head_hidden=512,
        embed_dim=256,
        head_dropout=0.3,
    )
    model = SticaModel(config).to(device)
    model.video_trunk = nn.Identity()  # the "videos" below are the trunk's maps

    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(batch, *MAP, generator=g).to(device) for _ in range(2)]

    def step(seed: int) -> None:
        leaves = [m.detach().requires_grad_() for m in maps]
        out = model(leaves, crops=PAPER_CROPS, generator=torch.Generator().manual_seed(seed))
        total = sum(z.sum() for z in out["video"])
        total = total + sum(v.pow(2).sum() for views in out["crops"] for v in views.values())
        total.backward()

    return step


def main() -> None:
    batch = int(sys.argv[1])
    pooling = sys.argv[2] if len(sys.argv) > 2 else "transformer"
    on_meta = crop_path(batch, pooling, "meta")
    with DeviceOpCounter("meta") as counter:
        on_meta(0)
    step = crop_path(batch, pooling, "cpu")
    times = []
    for seed in range(7):
        start = time.perf_counter()
        step(seed)
        times.append(time.perf_counter() - start)
    result = {
        "batch": batch,
        "pooling": pooling,
        "gpu_kernels": counter.count,
        "cpu_ms": 1000 * statistics.median(times[1:]),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
