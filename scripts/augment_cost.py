"""Cost of the training augmentation at the paper's sizes: the two large views L1, L2 of a batch of
stored clips (30 frames of 128 x 171, uint8) with the paper profile's ``pretrain.augment``, as the
step makes them in ``two_crops`` / ``feature_crops`` mode (``stica.bench.bench_augment``, also
printed by ``stica bench train``).

Prints one JSON line: the kernels a GPU would launch and the bytes of the tensors they take and
return (a proxy for memory traffic: this path is elementwise image work, bound by bandwidth),
both counted on the meta device, and the median CPU time of 5 calls. Usage:
``python scripts/augment_cost.py BATCH``; run it on two checkouts (``PYTHONPATH=...``),
interleaved, to compare them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from stica.bench import bench_augment, synthetic_clips
from stica.config import load_section

PAPER = Path(__file__).resolve().parents[1] / "profiles" / "paper.yaml"


def main() -> None:
    batch = int(sys.argv[1])
    config = load_section("pretrain", PAPER)
    frames, _ = synthetic_clips(config, batch, fps=30.0)  # 4:3 frames at the stored short side
    result = bench_augment(config, frames, torch.device("cpu"), steps=5)
    print(json.dumps({"batch": batch, **result, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
