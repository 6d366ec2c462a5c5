"""Self-supervised pretraining (paper sec. 3, SPEC Training), single process or under torchrun.

Laid out as MoCo's ``main_moco.py`` / DINO's ``train_dino``: :func:`setup` (data, model,
optimiser, schedule), :func:`restore` (the resume state), :func:`distribute` (DDP), then per epoch
:func:`train_one_epoch` (its loader, :func:`train_step` per batch) and :func:`save` (checkpoint).

One step: two clip-consistent RGB crops L1, L2 of each clip go through the video trunk in one call,
feature crops are cut from their maps and embedded one call per crop shape, the audio trunk runs once
on the log-mel of the same time span, and the loss is ``λ_vv·L_vv + λ_va·L_va`` (eq. 7) for the
selected ablation mode.

Resuming is exact: every random draw of step ``s`` comes from generators seeded by ``(seed, s, rank)``
(the explicit one of the augmentations and crops, and torch's global ones for dropout) and every
clip from ``(seed, epoch, index)``, so model, optimizer, scheduler, epoch and step are all the state
there is. With ``deterministic`` (:mod:`stica.determinism`) the arithmetic is repeatable too, so a
run resumed from its last checkpoint, after SIGTERM or SIGKILL, ends with the same weights as an
uninterrupted one on the same machine and thread count.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.profiler import record_function
from tqdm import tqdm

from stica import determinism, dist, perf
from stica.config import PretrainConfig, to_dict
from stica.data.audio import build_frontend, volume_jitter
from stica.data.augment import VideoAugment
from stica.data.datasets import EpochBatchSampler, RandomClips, sample_seed
from stica.data.jpeg import batch_frames, clip_collate, decode_on_device
from stica.data.store import Store, VideoRecord
from stica.errors import SticaError
from stica.logs import get_logger
from stica.losses import stica_loss
from stica.models.stica import SticaModel, build_model
from stica.train.checkpoint import (
    check_store,
    library_versions,
    load_checkpoint,
    load_state_strict,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from stica.train.optim import build_optimizer
from stica.train.schedule import pretrain_lr_factor
from stica.train.tracking import Tracker

log = get_logger("pretrain")

# per-step metrics of the live log (DVCLive layout: dvc plots / dvc exp show)
LIVE_METRICS = ("loss", "loss_va", "loss_vv", "lr", "n_vv_terms")


def resume_path(out: Path) -> Path:
    """Where the training state lives until training finishes (not a DVC output, so it survives
    DVC removing ``out`` before rerunning a killed stage)."""
    return out.with_name(f".{out.name}.resume")


def training_records(store: Store) -> list[VideoRecord]:
    """Pretraining uses the train split's videos that have both frames and audio."""
    return [r for r in store.records if r.split == "train" and r.has_audio and r.num_frames > 0]


class StepComputer:
    """Everything of one training step but the optimizer: views, embeddings, losses.

    Shared by :func:`pretrain` and ``stica bench train`` so the benchmark times the real step.
    """

    def __init__(self, config: PretrainConfig, model: torch.nn.Module, device: torch.device):
        self.config = config
        self.model = model  # SticaModel or its DDP wrapper
        self.device = device
        self.logmel = build_frontend(config.audio).to(device)
        self.augment = VideoAugment(config.augment)

    def views(
        self, frames: torch.Tensor, gen: torch.Generator, sizes: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """RGB crops of the mode: 1 (default), 2 (two/feature crops) or 2 + k small (multi)."""
        mode = self.config.mode
        if mode == "default":
            return [self.augment(frames, gen, sizes=sizes)]
        if mode == "multi_crops":
            return self.augment.multi_crop(frames, gen, self.config.small_rgb_crops, sizes)
        return list(self.augment.two_views(frames, gen, sizes))

    def __call__(
        self,
        frames: torch.Tensor,
        audio: torch.Tensor,
        gen: torch.Generator,
        sizes: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Shape: frames (B, T, H, W, 3) uint8 (``sizes`` (B, 2): each clip's own size in a
        padded batch), audio (B, S) float -> dict of losses"""
        cfg = self.config
        frames = frames.to(self.device, non_blocking=True)
        audio = audio.to(self.device, non_blocking=True)
        with perf.autocast(self.device):
            # the labels name the step's phases in torch.profiler traces (scripts/profile_step.py)
            with record_function("stica.audio_frontend"):
                spec = self.logmel(volume_jitter(audio, gen, *cfg.audio.volume_jitter))
            with record_function("stica.augment"):
                videos = self.views(frames, gen, sizes)
            feature_crops = cfg.mode == "feature_crops"
            with record_function("stica.model"):
                out = self.model(
                    videos=videos,
                    spec=spec,
                    crops=cfg.crops if feature_crops else None,
                    generator=gen,
                    crop_views=2 if feature_crops else None,
                )
            z = [v.float() for v in out["video"]]
            crops = out.get("crops") or [None, None]
            with record_function("stica.loss"):
                return stica_loss(
                    cfg.mode,
                    out["audio"].float(),
                    z[0],
                    z[1] if len(z) > 1 else None,
                    crops1=_float_views(crops[0]),
                    crops2=_float_views(crops[1]),
                    small_rgb=z[2:],
                    lambda_va=cfg.lambda_va,
                    lambda_vv=cfg.lambda_vv,
                    temperature_va=cfg.temperature_va,
                    temperature_vv=cfg.temperature_vv,
                    vv_pairs=cfg.vv_pairs,
                    vv_reduction=cfg.vv_reduction,
                    va_reduction=cfg.va_reduction,
                    stop_grad_keys=cfg.stop_grad_keys,
                )


def _float_views(views: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    if views is None:
        return None
    return {k: v.float() for k, v in views.items() if v.shape[0] > 0}


def check_crops_fit(config: PretrainConfig, model: SticaModel) -> tuple[int, ...]:
    """The trunk's map shape for the configured clip; crops larger than it are refused."""
    size = config.augment.crop_size
    shape = model.video_map_shape(config.num_frames, size, size)
    if config.mode == "feature_crops":
        config.crops.validate(shape)
    return tuple(shape)


@dataclass
class TrainState:
    """Where training is: saved in every checkpoint (``epoch``, ``step``), plus what the loop
    carries between steps (the last logged losses, consecutive skipped steps)."""

    epoch: int = 0
    step: int = 0
    last: dict[str, float] = field(default_factory=dict)  # the last step's losses, all ranks
    bad_steps: int = 0  # consecutive non-finite losses


@dataclass
class PretrainRun:
    """What :func:`setup` builds: the data, the model and its optimisation, for one process."""

    config: PretrainConfig
    store: Store
    records: list[VideoRecord]
    dataset: RandomClips
    device: torch.device
    rank: int
    world: int
    per_rank: int  # samples per process and step
    steps_per_epoch: int
    model: torch.nn.Module  # the SticaModel (DDP's module once distributed)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    map_shape: tuple[int, ...]
    params: dict[str, Any]
    manifest_hash: str
    reproducibility: dict[str, Any]
    step_fn: StepComputer | None = None  # set by distribute()
    trunk_switches: dict[str, bool] = field(default_factory=dict)  # set by distribute()
    # one loader for the whole run (its workers persist); epoch_loader() points its sampler
    # at each epoch
    loader: torch.utils.data.DataLoader | None = None
    sampler: EpochBatchSampler | None = None
    throughput: perf.Throughput | None = None  # the whole run's, this process


def pretrain(
    config: PretrainConfig,
    store_dir: str | Path,
    out: str | Path,
    live_dir: str | Path | None = None,
    resume: bool = False,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Train and write the checkpoint ``out``; returns a summary for the metrics file.

    ``live_dir``: the live log of params and per-step metrics (:class:`~stica.train.tracking.Tracker`:
    DVCLive when installed). ``max_steps`` stops early (after checkpointing) — used by tests and
    quick trials.
    """
    device = dist.device()
    with determinism.run_mode(config.deterministic, device):
        return _pretrain(config, store_dir, out, live_dir, resume, max_steps)


def _pretrain(
    config: PretrainConfig,
    store_dir: str | Path,
    out: str | Path,
    live_dir: str | Path | None,
    resume: bool,
    max_steps: int | None,
) -> dict[str, Any]:
    out = Path(out)
    state_file = resume_path(out)
    run = setup(config, store_dir)
    state = restore(run, state_file) if resume else start_over(state_file)
    distribute(run)
    tracker = None
    if live_dir is not None and dist.is_main_process():
        tracker = Tracker(live_dir, run.params, resume_step=state.step or None)
    log.info(
        f"pretraining {config.mode}/{config.model.pooling}: {len(run.records)} videos, "
        f"{run.steps_per_epoch} steps/epoch x {config.epochs} epochs, global batch "
        f"{config.batch_size} on {run.world} process(es), device {run.device}, "
        f"map {run.map_shape}, trunk {_switches(run.trunk_switches)}"
    )
    started = time.time()
    stop = dist.StopRequested()
    with stop.installed():
        while state.epoch < config.epochs:
            epoch = train_one_epoch(run, state, tracker, stop, max_steps)
            if stop or _reached(state, max_steps):
                # an interrupted epoch is resumed from its next batch
                if state.step == (state.epoch + 1) * run.steps_per_epoch:
                    state.epoch += 1
                save(run, state, state_file)
                reason = f"signal {stop.signal}" if stop else f"max_steps={max_steps}"
                log.info(f"stopped by {reason} at step {state.step}; checkpoint {state_file}")
                if tracker is not None:
                    tracker.close()
                if stop:
                    raise SystemExit(128 + stop.signal)
                return {"stopped_at_step": state.step, **state.last, **throughput_report(run)}
            state.epoch += 1
            save(run, state, state_file)
            loss = state.last.get("loss", math.nan)
            log.info(
                f"epoch {state.epoch}/{config.epochs}: loss {loss:.4f}, {_rate(epoch, run.world)}"
            )
    save(run, state, out, final=True)
    if dist.is_main_process() and state_file.exists():
        state_file.unlink()
    if tracker is not None:
        tracker.close()
    return {
        "steps": state.step,
        "epochs": state.epoch,
        "seconds": round(time.time() - started, 1),
        "videos": len(run.records),
        "world_size": run.world,
        "determinism": run.reproducibility,
        "final": state.last,
        **throughput_report(run),
    }


def throughput_report(run: PretrainRun) -> dict[str, Any]:
    """The run's speed for the metrics file: global samples/s (every process's clips over this
    process's wall time of the training loops), the fraction of that time spent waiting for
    the loader, peak GPU memory of this process (null on the CPU) and the trunk switches."""
    meter = run.throughput
    rate = meter.samples_per_s
    details = meter.summary()  # this process's
    details["samples_per_s_per_process"] = details.pop("samples_per_s")
    return {
        "samples_per_s": None if rate is None else rate * run.world,
        "data_wait_fraction": meter.data_wait_fraction,
        "peak_gpu_memory_mb": meter.peak_memory_mb(),
        "throughput": {
            **details,
            "processes": run.world,
            **run.trunk_switches,
            "jpeg_decode": "device" if run.dataset.encoded else "cpu",
        },
    }


def _switches(switches: dict[str, bool]) -> str:
    on = [name for name, enabled in switches.items() if enabled]
    return "+".join(on) if on else "eager"


def _rate(epoch: dict[str, float], world: int) -> str:
    """The epoch's global samples/s (every process's clips) and this process's data wait."""
    if not epoch.get("seconds"):
        return "no steps"
    return (
        f"{epoch['samples'] * world / epoch['seconds']:.1f} samples/s, "
        f"{100 * epoch['data_wait'] / epoch['seconds']:.0f}% waiting for data"
    )


def _reached(state: TrainState, max_steps: int | None) -> bool:
    return max_steps is not None and state.step >= max_steps


# ------------------------------------------------------------------------------------------------
# Setup, resume, distribution
# ------------------------------------------------------------------------------------------------


def setup(config: PretrainConfig, store_dir: str | Path) -> PretrainRun:
    """Check the params against the processes and the store, then build the dataset, the model
    (initialised from ``config.seed``), the optimiser and the lr schedule."""
    dist.init_distributed()
    rank, world = dist.rank(), dist.world_size()
    device = dist.device()
    if config.batch_size % world:
        raise SticaError(
            f"param 'pretrain.batch_size' = {config.batch_size} is not divisible by the "
            f"{world} processes"
        )
    per_rank = config.batch_size // world
    if per_rank < 2:
        raise SticaError(
            f"param 'pretrain.batch_size' = {config.batch_size} gives {per_rank} sample per "
            f"process on {world} processes; BatchNorm needs at least 2"
        )
    store = Store(store_dir)
    # the store's frames and audio must suit the params' evaluation size and audio front end
    check_store(store, config, "the pretrain params", fps=None)
    records = training_records(store)
    if len(records) < config.batch_size:
        raise SticaError(
            f"{store.root}: {len(records)} train videos with audio, fewer than "
            f"'pretrain.batch_size' = {config.batch_size}"
        )
    # "device": the workers ship JPEG files, decoded in train_step on the model's device
    on_device = decode_on_device(config.jpeg_decode, device)
    dataset = RandomClips(store, records, config.num_frames, seed=config.seed, encoded=on_device)
    steps_per_epoch = EpochBatchSampler.batches_per_epoch(len(records), config.batch_size)
    total_steps = steps_per_epoch * config.epochs

    torch.manual_seed(config.seed)
    model = build_model(config.model).to(device)
    map_shape = check_crops_fit(config, model)
    base_lr = config.lr * config.batch_size / config.base_batch_size
    audio = [*model.audio_trunk.parameters(), *model.audio_head.parameters()]
    audio_ids = {id(p) for p in audio}
    video = [p for p in model.parameters() if id(p) not in audio_ids]
    # group 0 (video trunk and head) is the one whose lr the logs report
    optimizer = build_optimizer(
        config.optimizer,
        [{"params": video}, {"params": audio}],
        base_lr,
        config.momentum,
        config.weight_decay,
    )
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    audio_frozen_steps = round(config.audio_freeze_epochs * steps_per_epoch)

    def lr_factor(step: int) -> float:
        return pretrain_lr_factor(
            step,
            total_steps,
            warmup_steps,
            config.warmup_start_lr / base_lr,
            constant=config.schedule == "constant",
        )

    def audio_lr_factor(step: int) -> float:
        # lr 0 rather than requires_grad=False: DDP needs the same parameters in every step's
        # graph, and neither SGD nor AdamW moves a weight at lr 0 (nor decays it)
        return lr_factor(step) if step >= audio_frozen_steps else 0.0

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [lr_factor, audio_lr_factor])
    return PretrainRun(
        config=config,
        store=store,
        records=records,
        dataset=dataset,
        device=device,
        rank=rank,
        world=world,
        per_rank=per_rank,
        steps_per_epoch=steps_per_epoch,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        map_shape=map_shape,
        params=to_dict(config),
        manifest_hash=store.manifest_hash(),
        reproducibility=determinism.record(config.deterministic, device),
        throughput=perf.Throughput(device),
    )


def restore(run: PretrainRun, state_file: Path) -> TrainState:
    """Continue from ``state_file`` when it was written with the same params and store (model,
    optimiser, schedule and RNG state); else start over."""
    if not state_file.exists():
        return TrainState()
    ckpt = load_checkpoint(state_file, kind="pretrain")
    if ckpt["params"] != run.params or ckpt["manifest_hash"] != run.manifest_hash:
        log.warning(f"{state_file}: params or store changed since it was written; starting over")
        return TrainState()
    load_state_strict(run.model, ckpt["model"], str(state_file))
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    state = TrainState(epoch=ckpt["epoch"], step=ckpt["step"])
    log.info(f"resuming from {state_file} at epoch {state.epoch}, step {state.step}")
    if ckpt.get("determinism") != run.reproducibility:
        log.warning(
            f"{state_file}: written with {ckpt.get('determinism')}, resumed with "
            f"{run.reproducibility}: the weights will differ from an uninterrupted run's"
        )
    return state


def start_over(state_file: Path) -> TrainState:
    """A run without ``--resume`` drops the state an earlier run left."""
    if state_file.exists() and dist.is_main_process():
        state_file.unlink()
    return TrainState()


def distribute(run: PretrainRun) -> None:
    """Wrap the model for the processes (DDP; SyncBatchNorm on GPUs), apply the trunk's speed
    params (layout, activation checkpointing, compilation) and build the step."""
    model = run.model
    if dist.is_distributed() and run.device.type == "cuda":
        # SyncBatchNorm has no CPU kernels; gloo runs keep local BN
        model = run.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    cfg = run.config
    run.trunk_switches = perf.configure_trunk(
        run.model.video_trunk,
        run.device,
        compile=cfg.compile,
        channels_last=cfg.channels_last,
        activation_checkpointing=cfg.activation_checkpointing,
    )
    if dist.is_distributed():
        ddp = DistributedDataParallel(
            model, device_ids=[run.device.index] if run.device.type == "cuda" else None
        )
    else:
        ddp = model
    run.step_fn = StepComputer(run.config, ddp, run.device)


# ------------------------------------------------------------------------------------------------
# One epoch, one step
# ------------------------------------------------------------------------------------------------


def epoch_loader(run: PretrainRun, state: TrainState) -> torch.utils.data.DataLoader:
    """This process's batches of epoch ``state.epoch``, from the one after ``state.step`` on.

    The loader (and its worker processes) is built once per run; each epoch only moves its
    sampler, which runs in this process: the batches are those of a fresh loader.
    """
    start_batch = state.step - state.epoch * run.steps_per_epoch
    if run.loader is None:
        run.sampler = EpochBatchSampler(
            len(run.dataset), run.per_rank, state.epoch, run.config.seed, run.rank, run.world
        )
        run.loader = torch.utils.data.DataLoader(
            run.dataset,
            batch_sampler=run.sampler,
            collate_fn=clip_collate(run.dataset.encoded),
            **perf.loader_options(run.config.workers, run.device, run.config.prefetch_factor),
        )
    run.sampler.set_epoch(state.epoch, start_batch)
    return run.loader


def train_one_epoch(
    run: PretrainRun,
    state: TrainState,
    tracker: Tracker | None,
    stop: dist.StopRequested,
    max_steps: int | None = None,
) -> dict[str, float]:
    """Train on the rest of epoch ``state.epoch`` (all of it unless resumed mid-epoch), or until
    a stop request or ``max_steps``; ``state`` advances step by step. Returns the pass's
    ``steps``, ``samples`` (this process's clips), wall ``seconds`` and ``data_wait`` (seconds
    spent waiting for the loader); a progress bar shows samples/s on the main process."""
    run.model.train()
    meter = run.throughput
    before = (meter.steps, meter.samples, meter.wall_s, meter.wait_s)
    loader = epoch_loader(run, state)
    bar = tqdm(
        total=len(run.sampler),
        desc=f"epoch {state.epoch + 1}/{run.config.epochs}",
        unit="step",
        disable=not dist.is_main_process(),
        leave=False,
    )
    started = time.perf_counter()
    batches = meter.batches(loader)
    try:
        for batch in batches:
            losses, lr = train_step(run, state, batch)
            state.step += 1
            bar.update(1)
            elapsed = time.perf_counter() - started
            bar.set_postfix_str(
                f"{(meter.samples - before[1]) * run.world / elapsed:.1f} samples/s"
            )
            state.last = {
                k: float(dist.all_reduce_mean(losses[k].detach().float()))
                for k in ("loss", "loss_va", "loss_vv")
            }
            if tracker is not None:
                row = {**state.last, "lr": lr, "n_vv_terms": int(losses["n_vv_terms"])}
                tracker.log(state.step, {k: row[k] for k in LIVE_METRICS})
            if stop or _reached(state, max_steps):
                break
    finally:
        batches.close()  # the wall time ends here, also after a break
    bar.close()
    steps, samples, wall, wait = (
        now - then
        for now, then in zip(
            (meter.steps, meter.samples, meter.wall_s, meter.wait_s), before, strict=True
        )
    )
    return {"steps": steps, "samples": samples, "seconds": wall, "data_wait": wait}


def train_step(
    run: PretrainRun, state: TrainState, batch: dict[str, torch.Tensor]
) -> tuple[dict[str, Any], float]:
    """One optimisation step of step ``state.step``; returns its losses and learning rate.

    A non-finite loss (on any process) skips the update; ``max_bad_steps`` in a row abort.
    """
    config = run.config
    gen = torch.Generator().manual_seed(sample_seed(config.seed, state.step, run.rank))
    # torch's global generators (dropout) restart every step too: a resumed run
    # creates one more DataLoader iterator, and each one consumes a global draw
    torch.manual_seed(sample_seed(config.seed, state.step, -2 - run.rank) % 2**63)
    frames, sizes = batch_frames(batch, run.device)  # (B, T, H, W, 3) uint8, (B, 2)
    losses = run.step_fn(frames, batch["audio"], gen, sizes)
    loss = losses["loss"]
    finite = torch.isfinite(loss.detach()).float()
    if dist.is_distributed():
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    run.optimizer.zero_grad(set_to_none=True)
    if finite.item() == 1.0:
        loss.backward()
        run.optimizer.step()
        state.bad_steps = 0
    else:
        state.bad_steps += 1
        log.warning(f"step {state.step}: non-finite loss, step skipped")
        if state.bad_steps >= config.max_bad_steps:
            raise SticaError(
                f"{state.bad_steps} non-finite losses in a row at step {state.step}: "
                "aborting (lower 'pretrain.lr'?)"
            )
    lr = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    return losses, lr


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------


def save(run: PretrainRun, state: TrainState, path: Path, final: bool = False) -> None:
    """Write the checkpoint (rank 0; every process waits for it): the final one to ``path`` =
    ``out``, the resume state to ``path`` = :func:`resume_path` (``out``)."""
    if dist.is_main_process():
        save_checkpoint(path, checkpoint_payload(run, state, final))
    dist.barrier()


def checkpoint_payload(run: PretrainRun, state: TrainState, final: bool) -> dict[str, Any]:
    """The checkpoint's contents (:mod:`stica.train.checkpoint` lists the keys)."""
    return {
        "kind": "pretrain",
        "final": final,
        "model_config": to_dict(run.config.model),
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "rng": rng_state(),
        "params": run.params,
        "versions": library_versions(),
        "manifest_hash": run.manifest_hash,
        "store": str(run.store.root),
        "fps": run.store.meta.fps,
        "short_side": run.store.meta.short_side,
        "map_shape": list(run.map_shape),
        "determinism": run.reproducibility,
    }
