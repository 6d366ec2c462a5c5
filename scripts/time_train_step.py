"""Time the real pretraining step (augmentation, forward, loss, backward, SGD) of a params file.

Synthetic uint8 clips of the profile's sizes, the configured mode and crops (unlike ``stica bench
train``, which times every Table 1 strategy with the paper-best crops). Used to measure what
determinism costs:

    python scripts/time_train_step.py [--params params.yaml] [--steps 30] [--deterministic-mode]

Prints the median and mean step time in milliseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from stica.config import load_section
from stica.models.stica import build_model
from stica.train.pretrain import StepComputer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--deterministic-mode",
        action="store_true",
        help="run inside stica.determinism.deterministic_mode (torch's deterministic switches)",
    )
    args = parser.parse_args()
    cfg = load_section("pretrain", args.params)
    prep = load_section("preprocess", args.params)
    mode = contextlib.nullcontext()
    if args.deterministic_mode:
        from stica.determinism import deterministic_mode

        mode = deterministic_mode(True)
    gen = torch.Generator().manual_seed(0)
    b, t, short = cfg.batch_size, cfg.num_frames, cfg.augment.eval_short_side
    frames = torch.randint(0, 256, (b, t, short, round(short * 4 / 3), 3), generator=gen)
    frames = frames.to(torch.uint8)
    audio = torch.randn(b, round(t / prep.fps * cfg.audio.sample_rate), generator=gen) * 0.1
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).train()
    step = StepComputer(cfg, model, torch.device("cpu"))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    times = []
    with mode:
        for i in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            losses = step(frames, audio, torch.Generator().manual_seed(i))
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
    print(
        f"{torch.get_num_threads()} threads, batch {b}, {args.steps} steps: "
        f"median {statistics.median(times) * 1e3:.1f} ms, mean {statistics.mean(times) * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
