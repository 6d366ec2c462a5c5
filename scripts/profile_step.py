"""Where one pretraining step's device time goes: torch.profiler over a few real steps (the
``StepComputer`` of ``stica pretrain`` and ``stica bench train``, backward, SGD) of the params'
pretrain section, printed as two tables: the step's phases (``stica.*`` labels) and the kernels
with the most self device time.

    python scripts/profile_step.py --params profiles/paper.yaml --batch-size 64 \
        --set compile=on --set channels_last=on --set deterministic=false
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from stica import dist, perf
from stica.bench import TrainStrategy, synthetic_clips, training_step
from stica.config import load_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    config = load_section("pretrain", args.params, tuple(args.overrides))
    device = dist.device()
    own = TrainStrategy(
        "params", config.mode, config.model.pooling, config.small_rgb_crops, crops="best"
    )
    step_fn, optimizer, switches, config = training_step(config, own, device)
    fps = load_section("preprocess", args.params).fps  # the clip's span sets its audio length
    frames, audio = synthetic_clips(config, args.batch_size, fps, device=device)
    size = config.augment.crop_size

    def step(i: int) -> None:
        losses = step_fn(frames, audio, torch.Generator().manual_seed(i))
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()

    with perf.cudnn_autotune(device, config.deterministic):
        for i in range(args.warmup):
            step(i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        activities = [ProfilerActivity.CPU] + (
            [ProfilerActivity.CUDA] if device.type == "cuda" else []
        )
        started = time.perf_counter()
        with profile(activities=activities) as prof:
            for i in range(args.steps):
                step(args.warmup + i)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        seconds = (time.perf_counter() - started) / args.steps
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(
        f"{config.mode}/{config.model.pooling}, {config.model.video_trunk}, batch "
        f"{args.batch_size}, {config.num_frames}x{size}^2 on {device}, {switches}: "
        f"{seconds * 1000:.0f} ms per step under the profiler"
    )
    events = prof.key_averages()
    phases = [e for e in events if e.key.startswith("stica.")]
    print("\nphases (device time of the kernels each one launched, forward only):")
    for e in sorted(phases, key=lambda e: e.key):
        total = e.device_time_total if device.type == "cuda" else e.cpu_time_total
        print(f"  {e.key:<24} {total / 1000 / args.steps:8.1f} ms per step")
    print(events.table(sort_by=key, row_limit=args.rows))


if __name__ == "__main__":
    main()
