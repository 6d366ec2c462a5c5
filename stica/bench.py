"""Benchmarks. ``bench_loader``: clips/s read from a store vs decoded straight from the mp4s.
``bench_train``: the training step of every Table 1f strategy, and batched vs looped feature crops.
``bench_store``: pretraining's real step fed by its DataLoader from a store (end to end) vs the
same step on a batch already in memory (compute only).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from stica import perf
from stica.config import FeatureCropConfig, PretrainConfig
from stica.data.augment import VideoAugment
from stica.data.clips import ClipReader
from stica.data.decode import TIME_EPS, output_size
from stica.data.store import TIMING, Store
from stica.errors import SticaError


def decode_clip_direct(
    path: str | Path, start: float, num_frames: int, fps: float, short_side: int, sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """The baseline the store replaces: seek in the mp4, decode, resample by timestamps,
    resize to ``short_side``, and decode + resample the audio of the same span.

    Shape:
        returns frames (num_frames, H, W, 3) uint8 and audio (round(num_frames / fps * sr),) int16
    """
    span = num_frames / fps
    n_samples = round(span * sample_rate)
    with av.open(str(path)) as container:
        vstream = container.streams.video[0]
        astream = next(iter(container.streams.audio), None)
        container.seek(int(start / vstream.time_base), stream=vstream, backward=True)
        resampler = (
            av.AudioResampler(format="s16", layout="mono", rate=sample_rate) if astream else None
        )
        frames: list[np.ndarray] = []
        audio: list[np.ndarray] = []
        a_start = None
        current = None
        streams = [vstream] + ([astream] if astream is not None else [])
        for packet in container.demux(*streams):
            for frame in packet.decode():
                t = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
                if packet.stream.type == "audio":
                    if t + frame.samples / frame.sample_rate < start or t > start + span:
                        continue
                    for out in resampler.resample(frame):
                        a_start = t if a_start is None else a_start
                        audio.append(out.to_ndarray().reshape(-1))
                    continue
                # emit the previous frame for every output time before this frame's time
                while current is not None and len(frames) < num_frames:
                    t_out = start + len(frames) / fps
                    if t_out >= t - TIME_EPS:
                        break
                    frames.append(current)
                if len(frames) >= num_frames:
                    break
                h, w = output_size(frame.height, frame.width, short_side)
                current = frame.reformat(
                    width=w, height=h, format="rgb24", interpolation="AREA"
                ).to_ndarray()
            if len(frames) >= num_frames and (
                astream is None or sum(a.size for a in audio) >= n_samples + sample_rate // 10
            ):
                break
        while current is not None and len(frames) < num_frames:
            frames.append(current)  # clip past the end: repeat the last frame
    out = np.zeros(n_samples, np.int16)
    if audio:
        samples = np.concatenate(audio)
        skip = max(0, round((start - a_start) * sample_rate))
        samples = samples[skip : skip + n_samples]
        out[: samples.size] = samples
    return np.stack(frames), out


def bench_loader(
    store: str | Path | Store,
    videos_dir: str | Path | None = None,
    num_clips: int = 100,
    clip_frames: int = 30,
    audio_seconds: float = 1.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Clips/s from the store (JPEG decode included) vs from the source files with PyAV (seek +
    decode + resize), on the same random (video, start) pairs, in one run; plus the
    preprocessing speed recorded by the run that built the store."""
    store = store if isinstance(store, Store) else Store(store)
    timing_path = store.root / TIMING
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    if videos_dir is None:
        videos_dir = timing.get("input_dir")
        if videos_dir is None:
            raise SticaError(f"{store.root}: no input folder recorded; pass --videos-dir")
    videos_dir = Path(videos_dir)
    records = [r for r in store.records if r.num_frames > 0]
    if not records:
        raise SticaError(f"{store.root}: no video records to benchmark")
    missing = [r.path for r in records if not (videos_dir / r.path).is_file()]
    if missing:
        raise SticaError(f"source video not found under {videos_dir}: {missing[0]}")
    fps, sr = store.meta.fps, store.meta.sample_rate
    span = clip_frames / fps
    rng = np.random.default_rng(seed)
    picks = [records[i] for i in rng.integers(0, len(records), num_clips)]
    starts = [float(rng.uniform(0, max(0.0, r.duration - span))) for r in picks]
    # snap to stored frame times so both paths read exactly the same frames
    starts = [math.floor(s * fps) / fps for s in starts]

    reader = ClipReader(store)
    t0 = time.perf_counter()
    for rec, start in zip(picks, starts, strict=True):
        clip = reader.read(rec.id, start, clip_frames)
        if not math.isclose(audio_seconds, span):
            reader.read_audio(rec.id, start, audio_seconds)
        assert clip.frames.shape[0] == clip_frames
    store_s = time.perf_counter() - t0
    reader.close()

    t0 = time.perf_counter()
    for rec, start in zip(picks, starts, strict=True):
        frames, _ = decode_clip_direct(
            videos_dir / rec.path, start, clip_frames, fps, store.meta.short_side, sr
        )
        assert frames.shape[0] == clip_frames
    mp4_s = time.perf_counter() - t0

    result = {
        "clips": num_clips,
        "clip_frames": clip_frames,
        "audio_seconds": audio_seconds,
        "short_side": store.meta.short_side,
        "videos": len(records),
        "store_clips_per_s": num_clips / store_s,
        "mp4_clips_per_s": num_clips / mp4_s,
        "speedup": mp4_s / store_s,
        "preprocess_video_s_per_s": (
            timing["video_seconds"] / timing["wall_seconds"]
            if timing.get("wall_seconds") and timing.get("shards_kept", 0) == 0
            else None
        ),
        "preprocess_workers": timing.get("workers"),
    }
    return result


def format_loader_table(result: dict[str, Any]) -> str:
    rows = [
        (
            "clips",
            f"{result['clips']} x {result['clip_frames']} frames "
            f"@ short side {result['short_side']} + {result['audio_seconds']:g} s audio",
        ),
        ("store (HDF5 + JPEG)", f"{result['store_clips_per_s']:.1f} clips/s"),
        ("mp4 (PyAV seek+decode)", f"{result['mp4_clips_per_s']:.1f} clips/s"),
        ("speedup", f"{result['speedup']:.1f}x"),
    ]
    speed = result.get("preprocess_video_s_per_s")
    rows.append(
        (
            "preprocess",
            "n/a (store was resumed)"
            if speed is None
            else f"{speed:.1f} s of video per s ({result['preprocess_workers']} workers)",
        )
    )
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


# --------------------------------------------------------------------------------------------
# Training-step benchmark: the paper's Table 1f on whatever machine runs it
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainStrategy:
    name: str
    mode: str
    pooling: str
    small_rgb_crops: int = 0
    crops: str = (
        ""  # "" (none), "full" (1 x map^2, 1 x T1) or "best" (paper best, scaled to the map)
    )


def with_reference(strategies: list[TrainStrategy]) -> list[TrainStrategy]:
    """``strategies`` plus, first, the two-RGB-crop step of every pooling they use where it is
    missing: every row's ratio is to that step, whatever ``--only`` selected."""
    poolings = dict.fromkeys(s.pooling for s in strategies)
    have = {s.pooling for s in strategies if s.mode == "two_crops"}
    refs = [s for s in train_strategies() if s.mode == "two_crops" and s.pooling not in have]
    return [r for r in refs if r.pooling in poolings] + list(strategies)


def train_strategies() -> list[TrainStrategy]:
    """Table 1f's columns, each with average and transformer pooling."""
    out = []
    for pooling in ("avg", "transformer"):
        out += [
            TrainStrategy("default (1x RGB)", "default", pooling),
            TrainStrategy("two RGB crops", "two_crops", pooling),
            TrainStrategy("multi RGB 2+1 small", "multi_crops", pooling, small_rgb_crops=1),
            TrainStrategy("multi RGB 2+2 small", "multi_crops", pooling, small_rgb_crops=2),
            TrainStrategy("feature crops (1xfull, 1xT1)", "feature_crops", pooling, crops="full"),
            TrainStrategy("feature crops (paper best)", "feature_crops", pooling, crops="best"),
        ]
    return out


def crops_for_map(kind: str, map_shape: tuple[int, ...]) -> FeatureCropConfig:
    """Feature crops of Table 1f expressed relative to the map, so they fit any trunk.

    On R(2+1)D-18's 4x7x7 map "best" is the paper's space 2x6^2 + 4x4^2, time 2x3 + 1x2 and
    "full" is (1x7^2, 1x4).
    """
    t1, h1 = int(map_shape[-3]), int(min(map_shape[-2:]))
    if kind == "full":
        return FeatureCropConfig(1, h1, 0, 1, 1, t1, 0, 1)
    medium, small = max(1, h1 - 1), max(1, round(h1 * 4 / 7))
    t_medium, t_small = max(1, t1 - 1), max(1, round(t1 / 2))
    return FeatureCropConfig(2, medium, 4, small, 2, t_medium, 1, t_small)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(
    run: Callable[..., Any],
    device: torch.device,
    steps: int,
    prepare: Callable[[int], tuple[Any, ...]] = lambda i: (),
) -> float:
    """Median wall time of ``run(*prepare(i))`` over ``steps`` calls after one untimed warm-up,
    the device synchronised around each (``prepare`` builds a call's inputs, untimed)."""
    times = []
    for i in range(steps + 1):
        args = prepare(i)
        _sync(device)
        t0 = time.perf_counter()
        run(*args)
        _sync(device)
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_train(
    base: PretrainConfig,
    batch_size: int,
    steps: int = 3,
    warmup: int = 1,
    device: str | None = None,
    strategies: list[TrainStrategy] | None = None,
    height: int | None = None,
    width: int | None = None,
    fps: float = 30.0,
) -> dict[str, Any]:
    """Time full optimisation steps (augmentation, forward, loss, backward, SGD) per strategy on
    synthetic uint8 clips; report step time, samples/s, peak memory and the ratio to two RGB crops
    (always measured, also when ``strategies`` leaves it out). Also times the batched feature-crop
    path against a per-crop Python loop. The trunk gets ``base``'s speed params (``compile``,
    ``channels_last``, ``activation_checkpointing``) and cuDNN autotunes unless
    ``base.deterministic``, as in pretraining."""
    from stica import dist

    dev = torch.device(device) if device else dist.device()
    with perf.cudnn_autotune(dev, base.deterministic) as autotune:
        result = _bench_train(base, batch_size, steps, warmup, dev, strategies, height, width, fps)
    result["cudnn_autotune"] = autotune
    return result


def synthetic_clips(
    base: PretrainConfig,
    batch_size: int,
    fps: float,
    height: int | None = None,
    width: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 clips at the stored frame size the crops come from (4:3 by default) and the
    audio of their span, the same for every run; in page-locked memory when ``device`` is a GPU,
    as pretraining's loader delivers them (in the H200 profile of the batch-64 step, pageable
    host-to-device copies took 23.6 ms per step: docs/gpu/h200-2026-11-28/run2.log).

    Shape: -> frames (B, T, H, W, 3) uint8, audio (B, S) float
    """
    height = height or base.augment.eval_short_side
    width = width or round(height * 4 / 3)
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (batch_size, base.num_frames, height, width, 3), generator=gen)
    samples = round(base.num_frames / fps * base.audio.sample_rate)
    frames, audio = frames.to(torch.uint8), torch.randn(batch_size, samples, generator=gen) * 0.1
    if torch.device(device).type == "cuda":
        frames, audio = frames.pin_memory(), audio.pin_memory()
    return frames, audio


def training_step(
    base: PretrainConfig, strategy: TrainStrategy, device: torch.device
) -> tuple[Any, torch.optim.Optimizer, dict[str, bool], PretrainConfig]:
    """Pretraining's step (``StepComputer``) for ``strategy`` on a fresh model (seed 0) whose trunk
    has ``base``'s speed params, with an SGD optimizer; also returns what was switched on and the
    config the step runs with (its crops scaled to the trunk's map)."""
    from stica.models.stica import build_model
    from stica.train.pretrain import StepComputer

    model_cfg = dataclasses.replace(base.model, pooling=strategy.pooling)
    torch.manual_seed(0)
    model = build_model(model_cfg).to(device)
    switches = perf.configure_trunk(
        model.video_trunk,
        device,
        base.compile,
        base.channels_last,
        base.activation_checkpointing,
    )
    size = base.augment.crop_size
    map_shape = model.video_map_shape(base.num_frames, size, size)
    cfg = dataclasses.replace(
        base,
        mode=strategy.mode,
        model=model_cfg,
        small_rgb_crops=max(1, strategy.small_rgb_crops),
        crops=crops_for_map(strategy.crops or "best", map_shape),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    return StepComputer(cfg, model, device), optimizer, switches, cfg


def _bench_train(base, batch_size, steps, warmup, dev, strategies, height, width, fps):
    size = base.augment.crop_size
    frames, audio = synthetic_clips(base, batch_size, fps, height, width, dev)
    rows = []
    switches = {}
    for strategy in with_reference(strategies or train_strategies()):
        step_fn, optimizer, switches, cfg = training_step(base, strategy, dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        times = []
        for i in range(warmup + steps):
            _sync(dev)
            t0 = time.perf_counter()
            losses = step_fn(frames, audio, torch.Generator().manual_seed(i))
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            _sync(dev)
            if i == 0:
                first_loss = float(losses["loss"].detach())
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        step_s = statistics.median(times)
        rows.append(
            {
                "strategy": strategy.name,
                "pooling": strategy.pooling,
                "mode": strategy.mode,
                "crops": dataclasses.asdict(cfg.crops)
                if strategy.mode == "feature_crops"
                else None,
                "step_s": step_s,
                "samples_per_s": batch_size / step_s,
                "peak_memory_mb": (
                    torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
                ),
                "vv_terms": int(losses["n_vv_terms"]),
                # same init and clips in every run: compiled vs eager losses compare here
                "first_step_loss": first_loss,
            }
        )
        del optimizer, step_fn
    for row in rows:
        ref = next(r for r in rows if r["mode"] == "two_crops" and r["pooling"] == row["pooling"])
        row["ratio_to_two_crops"] = row["step_s"] / ref["step_s"]
    return {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "batch_size": batch_size,
        "num_frames": base.num_frames,
        "crop_size": size,
        "video_trunk": base.model.video_trunk,
        "autocast": "bf16" if dev.type == "cuda" else "off (fp32 on CPU)",
        **switches,
        "steps": steps,
        "rows": rows,
        "crop_path": bench_crop_path(base, batch_size, dev, steps=max(steps, 3)),
        "augment": bench_augment(base, frames, dev, steps=max(steps, 3)),
    }


def bench_augment(
    base: PretrainConfig, frames: torch.Tensor, device: torch.device, steps: int = 3
) -> dict[str, Any]:
    """The two large views of ``frames`` as the step makes them (``VideoAugment.two_views``):
    median time on ``device``, and the kernels a GPU launches for them with the bytes of the
    tensors those take and return (counted on the meta device; the work is elementwise, so the
    bytes are what a GPU pays for).

    Shape: frames (B, T, H, W, 3) uint8
    """
    augment = VideoAugment(base.augment)
    clips = frames.to(device, non_blocking=True)

    def views(generator: torch.Generator) -> None:
        with perf.autocast(device):
            augment.two_views(clips, generator)

    def seeded(i: int) -> tuple[Any, ...]:
        return (torch.Generator().manual_seed(i),)

    with perf.DeviceOpCounter("meta") as counter:
        augment.two_views(frames.to("meta"), torch.Generator().manual_seed(0))
    return {
        "two_views_s": _median_seconds(views, device, steps, prepare=seeded),
        "device_ops": counter.count,
        "device_tensor_gb": counter.tensor_bytes / 1e9,
    }


def bench_crop_path(
    base: PretrainConfig, batch_size: int, dev: torch.device, steps: int = 3
) -> dict[str, Any]:
    """Forward + backward of the paper-best feature crops: the batched path (one pooling call for
    every crop, one head call per crop shape) vs a Python loop over crops and samples (the naive
    implementation)."""
    from stica.models.crops import embed_crops, embed_crops_loop, sample_crops
    from stica.models.stica import build_model

    # eval mode: the per-crop loop feeds the heads one row at a time, which training-mode
    # BatchNorm cannot normalise; the arithmetic timed is the same
    model = build_model(dataclasses.replace(base.model, pooling="transformer")).to(dev).eval()
    size = base.augment.crop_size
    shape = model.video_map_shape(base.num_frames, size, size)
    crops = crops_for_map("best", shape)
    fmap = torch.randn(batch_size, *shape, device=dev, requires_grad=True)
    out = {}
    t1 = shape[1]

    def batched(model, fmap, groups):
        return embed_crops(lambda sets: model.embed_video_tokens(sets, t1), fmap, groups)[1]

    def loop(model, fmap, groups):
        return embed_crops_loop(
            lambda x, off: model.embed_video_map(x, off, tokens=t1), fmap, groups
        )

    def crops_of(i: int) -> tuple[Any, ...]:
        return (sample_crops(crops, fmap.shape, batch_size, torch.Generator().manual_seed(i)),)

    for name, fn in (("batched", batched), ("loop", loop)):

        def fwd_bwd(groups, fn=fn):
            with perf.autocast(dev):
                views = fn(model, fmap, groups)
            sum(v.float().sum() for v in views.values()).backward()

        out[f"{name}_s"] = _median_seconds(fwd_bwd, dev, steps, prepare=crops_of)
    out["speedup"] = out["loop_s"] / out["batched_s"]
    out["crops"] = dataclasses.asdict(crops)
    # kernels the batched path launches on a GPU (counted on the meta device, any machine)
    meta_fmap = torch.empty(batch_size, *shape, device="meta", requires_grad=True)
    groups = sample_crops(crops, shape, batch_size, torch.Generator().manual_seed(0))
    with perf.DeviceOpCounter("meta") as counter:
        views = batched(model.to("meta"), meta_fmap, groups)
        sum(v.sum() for v in views.values()).backward()
    out["batched_device_ops"] = counter.count
    return out


def _switch_text(result: dict[str, Any]) -> str:
    names = ("compile", "channels_last", "activation_checkpointing", "cudnn_autotune")
    on = [name for name in names if result.get(name)]
    return "trunk: " + (", ".join(on) if on else "eager, contiguous")


def format_train_table(result: dict[str, Any]) -> str:
    lines = [
        f"training step, {result['video_trunk']} on {result['device_name']}, batch "
        f"{result['batch_size']}, {result['num_frames']}x{result['crop_size']}^2, {result['autocast']}, "
        f"{_switch_text(result)}",
        f"{'strategy':32s} {'pool':12s} {'step s':>8s} {'samples/s':>10s} {'peak MB':>8s} "
        f"{'vs 2 RGB':>8s}",
    ]
    for r in result["rows"]:
        mem = f"{r['peak_memory_mb']:.0f}" if r["peak_memory_mb"] is not None else "-"
        lines.append(
            f"{r['strategy']:32s} {r['pooling']:12s} {r['step_s']:8.3f} {r['samples_per_s']:10.1f} "
            f"{mem:>8s} {_ratio(r['ratio_to_two_crops'])}"
        )
    c = result["crop_path"]
    lines.append(
        f"feature-crop path (paper best, fwd+bwd): batched {c['batched_s'] * 1000:.1f} ms, "
        f"per-crop loop {c['loop_s'] * 1000:.1f} ms, speedup {c['speedup']:.1f}x; "
        f"{c['batched_device_ops']} kernels on a GPU"
    )
    a = result["augment"]
    lines.append(
        f"augmentation (two large views): {a['two_views_s'] * 1000:.1f} ms; on a GPU "
        f"{a['device_ops']} kernels taking and returning {a['device_tensor_gb']:.2f} GB of tensors"
    )
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return f"{value:7.2f}x" if value is not None else f"{'-':>8s}"


# --------------------------------------------------------------------------------------------
# End to end: pretraining's own step, fed by its DataLoader from a store
# --------------------------------------------------------------------------------------------


def bench_store(
    config: PretrainConfig,
    store_dir: str | Path,
    steps: int = 5,
    warmup: int = 1,
) -> dict[str, Any]:
    """Time ``steps`` real pretraining steps (``stica.train.pretrain``'s setup, loader and
    ``train_step``: augmentation, forward, loss, backward, SGD, schedule) with batches from the
    store through the DataLoader (``config.workers``, ``config.prefetch_factor``, persistent
    workers, pinned memory on CUDA), then the same number of steps on the last batch, already in
    memory (compute only). Reports samples/s of both, their ratio and the fraction of the end to
    end wall time spent waiting for data. Deterministic mode, cuDNN autotuning and the trunk's
    speed params are the config's, as in ``stica pretrain``."""
    from stica import determinism, dist
    from stica.train.pretrain import TrainState, distribute, epoch_loader, setup, train_step

    device = dist.device()
    with determinism.run_mode(config.deterministic, device) as autotune:
        run = setup(config, store_dir)
        distribute(run)
        run.model.train()
        state = TrainState()

        def stream():
            while True:  # epoch after epoch, through the one persistent loader
                yield from epoch_loader(run, state)
                state.epoch += 1

        def step(batch):
            train_step(run, state, batch)
            state.step += 1
            _sync(device)

        batches = stream()
        for _ in range(warmup):
            step(next(batches))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        wait = 0.0
        started = time.perf_counter()
        for _ in range(steps):
            t0 = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - t0
            step(batch)
        wall = time.perf_counter() - started
        batches.close()
        started = time.perf_counter()
        for _ in range(steps):
            step(batch)
        compute = time.perf_counter() - started
    samples = steps * run.per_rank
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "store": str(run.store.root),
        "mode": config.mode,
        "pooling": config.model.pooling,
        "video_trunk": config.model.video_trunk,
        "batch_size": run.per_rank,
        "num_frames": config.num_frames,
        "crop_size": config.augment.crop_size,
        "workers": config.workers,
        "prefetch_factor": config.prefetch_factor,
        "jpeg_decode": "device" if run.dataset.encoded else "cpu",
        "deterministic": config.deterministic,
        **run.trunk_switches,
        "cudnn_autotune": autotune,
        "steps": steps,
        "warmup": warmup,
        "end_to_end_samples_per_s": samples / wall,
        "compute_only_samples_per_s": samples / compute,
        "end_to_end_vs_compute": compute / wall,
        "data_wait_fraction": wait / wall,
        "peak_gpu_memory_mb": (
            torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        ),
    }


def format_store_table(result: dict[str, Any]) -> str:
    rows = [
        (
            "step",
            f"{result['mode']}/{result['pooling']}, {result['video_trunk']} on "
            f"{result['device_name']}, batch {result['batch_size']}, "
            f"{result['num_frames']}x{result['crop_size']}^2, {_switch_text(result)}",
        ),
        (
            "loader",
            f"{result['workers']} workers, prefetch {result['prefetch_factor']}, JPEG decoded "
            f"{'on the device' if result['jpeg_decode'] == 'device' else 'by the workers'}",
        ),
        ("end to end", f"{result['end_to_end_samples_per_s']:.1f} samples/s"),
        ("compute only", f"{result['compute_only_samples_per_s']:.1f} samples/s"),
        ("end to end / compute", f"{100 * result['end_to_end_vs_compute']:.0f}%"),
        ("waiting for data", f"{100 * result['data_wait_fraction']:.0f}% of the wall time"),
    ]
    if result["peak_gpu_memory_mb"] is not None:
        rows.append(("peak GPU memory", f"{result['peak_gpu_memory_mb']:.0f} MiB"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
