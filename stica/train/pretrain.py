"""Self-supervised pretraining (paper sec. 3, SPEC Training), single process or under torchrun.

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
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from stica import determinism, dist
from stica.config import PretrainConfig, to_dict
from stica.data.audio import build_frontend, volume_jitter
from stica.data.augment import VideoAugment
from stica.data.datasets import EpochBatchSampler, RandomClips, sample_seed
from stica.data.store import Store, VideoRecord
from stica.errors import SticaError
from stica.logs import get_logger
from stica.losses import stica_loss
from stica.models.stica import SticaModel, build_model
from stica.train.checkpoint import (
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


def device_for_rank() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", dist.local_rank())
    return torch.device("cpu")


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

    def views(self, frames: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
        """RGB crops of the mode: 1 (default), 2 (two/feature crops) or 2 + k small (multi)."""
        mode = self.config.mode
        if mode == "default":
            return [self.augment(frames, gen)]
        if mode == "multi_crops":
            return self.augment.multi_crop(frames, gen, self.config.small_rgb_crops)
        return list(self.augment.two_views(frames, gen))

    def __call__(
        self, frames: torch.Tensor, audio: torch.Tensor, gen: torch.Generator
    ) -> dict[str, Any]:
        """Shape: frames (B, T, H, W, 3) uint8, audio (B, S) float -> dict of losses"""
        cfg = self.config
        frames = frames.to(self.device, non_blocking=True)
        audio = audio.to(self.device, non_blocking=True)
        with torch.autocast(
            device_type=self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
        ):
            spec = self.logmel(volume_jitter(audio, gen, *cfg.audio.volume_jitter))
            videos = self.views(frames, gen)
            feature_crops = cfg.mode == "feature_crops"
            out = self.model(
                videos=videos,
                spec=spec,
                crops=cfg.crops if feature_crops else None,
                generator=gen,
                crop_views=2 if feature_crops else None,
            )
            z = [v.float() for v in out["video"]]
            crops = out.get("crops") or [None, None]
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
    epoch: int = 0
    step: int = 0


class StopRequested:
    """SIGTERM/SIGINT set a flag; the loop checkpoints after the current step and exits."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    @contextmanager
    def installed(self) -> Iterator[StopRequested]:
        def handler(signum, frame):  # noqa: ARG001
            self.signal = signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


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
    with determinism.deterministic_mode(config.deterministic, device_for_rank()):
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
    dist.init_distributed()
    rank, world = dist.rank(), dist.world_size()
    device = device_for_rank()
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
    records = training_records(store)
    if len(records) < config.batch_size:
        raise SticaError(
            f"{store.root}: {len(records)} train videos with audio, fewer than "
            f"'pretrain.batch_size' = {config.batch_size}"
        )
    dataset = RandomClips(store, records, config.num_frames, seed=config.seed)
    steps_per_epoch = EpochBatchSampler.batches_per_epoch(len(records), config.batch_size)
    total_steps = steps_per_epoch * config.epochs

    torch.manual_seed(config.seed)
    model = build_model(config.model).to(device)
    map_shape = check_crops_fit(config, model)
    params = to_dict(config)
    base_lr = config.lr * config.batch_size / config.base_batch_size
    optimizer = build_optimizer(
        config.optimizer, model.parameters(), base_lr, config.momentum, config.weight_decay
    )
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: pretrain_lr_factor(
            s,
            total_steps,
            warmup_steps,
            config.warmup_start_lr / base_lr,
            constant=config.schedule == "constant",
        ),
    )
    state = TrainState()
    manifest_hash = store.manifest_hash()
    reproducibility = determinism.record(config.deterministic, device)
    state_file = resume_path(out)
    if resume and state_file.exists():
        ckpt = load_checkpoint(state_file, kind="pretrain")
        if ckpt["params"] == params and ckpt["manifest_hash"] == manifest_hash:
            load_state_strict(model, ckpt["model"], str(state_file))
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            set_rng_state(ckpt["rng"])
            state = TrainState(epoch=ckpt["epoch"], step=ckpt["step"])
            log.info(f"resuming from {state_file} at epoch {state.epoch}, step {state.step}")
            if ckpt.get("determinism") != reproducibility:
                log.warning(
                    f"{state_file}: written with {ckpt.get('determinism')}, resumed with "
                    f"{reproducibility}: the weights will differ from an uninterrupted run's"
                )
        else:
            log.warning(
                f"{state_file}: params or store changed since it was written; starting over"
            )
    elif not resume and state_file.exists() and dist.is_main_process():
        state_file.unlink()

    if dist.is_distributed():
        if device.type == "cuda":  # SyncBatchNorm has no CPU kernels; gloo runs keep local BN
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ddp = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    else:
        ddp = model
    step_fn = StepComputer(config, ddp, device)

    def payload(final: bool) -> dict[str, Any]:
        return {
            "kind": "pretrain",
            "final": final,
            "model_config": to_dict(config.model),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": state.epoch,
            "step": state.step,
            "rng": rng_state(),
            "params": params,
            "versions": library_versions(),
            "manifest_hash": manifest_hash,
            "store": str(store.root),
            "fps": store.meta.fps,
            "map_shape": list(map_shape),
            "determinism": reproducibility,
        }

    def checkpoint(final: bool = False) -> None:
        if dist.is_main_process():
            save_checkpoint(out if final else state_file, payload(final))
        dist.barrier()

    tracker = None
    if live_dir is not None and dist.is_main_process():
        tracker = Tracker(live_dir, params, resume_step=state.step or None)
    log.info(
        f"pretraining {config.mode}/{config.model.pooling}: {len(records)} videos, "
        f"{steps_per_epoch} steps/epoch x {config.epochs} epochs, global batch "
        f"{config.batch_size} on {world} process(es), device {device}, map {map_shape}"
    )
    bad_steps = 0
    last: dict[str, float] = {}
    started = time.time()
    stop = StopRequested()
    with stop.installed():
        while state.epoch < config.epochs:
            model.train()
            sampler = EpochBatchSampler(
                len(dataset),
                per_rank,
                state.epoch,
                config.seed,
                rank,
                world,
                start_batch=state.step - state.epoch * steps_per_epoch,
            )
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_sampler=sampler,
                num_workers=config.workers,
                pin_memory=device.type == "cuda",
            )
            for batch in loader:
                gen = torch.Generator().manual_seed(sample_seed(config.seed, state.step, rank))
                # torch's global generators (dropout) restart every step too: a resumed run
                # creates one more DataLoader iterator, and each one consumes a global draw
                torch.manual_seed(sample_seed(config.seed, state.step, -2 - rank) % 2**63)
                losses = step_fn(batch["frames"], batch["audio"], gen)
                loss = losses["loss"]
                finite = torch.isfinite(loss.detach()).float()
                if dist.is_distributed():
                    torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
                optimizer.zero_grad(set_to_none=True)
                if finite.item() == 1.0:
                    loss.backward()
                    optimizer.step()
                    bad_steps = 0
                else:
                    bad_steps += 1
                    log.warning(f"step {state.step}: non-finite loss, step skipped")
                    if bad_steps >= config.max_bad_steps:
                        raise SticaError(
                            f"{bad_steps} non-finite losses in a row at step {state.step}: "
                            "aborting (lower 'pretrain.lr'?)"
                        )
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                state.step += 1
                last = {
                    k: float(dist.all_reduce_mean(losses[k].detach().float()))
                    for k in ("loss", "loss_va", "loss_vv")
                }
                if tracker is not None:
                    row = {**last, "lr": lr, "n_vv_terms": int(losses["n_vv_terms"])}
                    tracker.log(state.step, {k: row[k] for k in LIVE_METRICS})
                if stop or (max_steps is not None and state.step >= max_steps):
                    break
            if stop or (max_steps is not None and state.step >= max_steps):
                # an interrupted epoch is resumed from its next batch
                if state.step == (state.epoch + 1) * steps_per_epoch:
                    state.epoch += 1
                checkpoint()
                reason = f"signal {stop.signal}" if stop else f"max_steps={max_steps}"
                log.info(f"stopped by {reason} at step {state.step}; checkpoint {state_file}")
                if tracker is not None:
                    tracker.close()
                if stop:
                    raise SystemExit(128 + stop.signal)
                return {"stopped_at_step": state.step, **last}
            state.epoch += 1
            checkpoint()
            log.info(f"epoch {state.epoch}/{config.epochs}: loss {last.get('loss', math.nan):.4f}")
    checkpoint(final=True)
    if dist.is_main_process() and state_file.exists():
        state_file.unlink()
    if tracker is not None:
        tracker.close()
    return {
        "steps": state.step,
        "epochs": state.epoch,
        "seconds": round(time.time() - started, 1),
        "videos": len(records),
        "world_size": world,
        "determinism": reproducibility,
        "final": last,
    }
