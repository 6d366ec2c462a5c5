"""Where one pretraining step's device time goes: torch.profiler over a few real steps (the
``StepComputer`` of ``stica pretrain`` and ``stica bench train``, backward, SGD) of the params'
pretrain section, printed as two tables: the step's phases (``stica.*`` labels) and the kernels
with the most self device time.

    python scripts/profile_step.py --params profiles/paper.yaml --batch-size 64 \
        --set compile=on --set channels_last=on --set deterministic=false
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from torch.profiler import ProfilerActivity, profile

from stica import dist, perf
from stica.bench import crops_for_map
from stica.config import load_section
from stica.models.stica import build_model
from stica.train.pretrain import StepComputer


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
    torch.manual_seed(0)
    model = build_model(config.model).to(device)
    switches = perf.configure_trunk(
        model.video_trunk,
        device,
        config.compile,
        config.channels_last,
        config.activation_checkpointing,
    )
    size = config.augment.crop_size
    map_shape = model.video_map_shape(config.num_frames, size, size)
    config = dataclasses.replace(config, crops=crops_for_map("best", map_shape))
    step_fn = StepComputer(config, model, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    height = config.augment.eval_short_side
    gen = torch.Generator().manual_seed(0)
    shape = (args.batch_size, config.num_frames, height, round(height * 4 / 3), 3)
    frames = torch.randint(0, 256, shape, generator=gen).to(torch.uint8)
    fps = load_section("preprocess", args.params).fps  # the clip's span sets its audio length
    audio = torch.randn(args.batch_size, round(config.num_frames / fps * config.audio.sample_rate))

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
