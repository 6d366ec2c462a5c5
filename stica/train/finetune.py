"""Supervised finetuning of the video encoder for action recognition (paper sec. 4.3, Table 1c):
the plan (splits, initial weights, the checkpoint's params) and the training of one split.

The model is :class:`~stica.models.classifier.FinetuneModel`; the evaluation protocol (10 clips x
3 crops), the run over every split and the finetune checkpoints are :mod:`stica.eval.finetune`.

Schedule (GDT/STiCA, released ``eval_video.py``): SGD, lr warmed linearly from ``warmup_lr`` to
``lr`` over ``warmup_epochs``, then x``gamma`` at each milestone; the classifier trains at ``lr``,
the trunk and its pooling at ``backbone_lr_scale`` times it. Training clips are random clips with
the checkpoint's random resized crop and flip, and its colour jitter when ``color_jitter`` (no grey,
no blur), at the finetuning clip length and crop size.

Rerunning: an interrupted split resumes from its last finished epoch (state file beside the output
folder), exactly, since every random draw is seeded by ``(seed, epoch, index)`` or
``(seed, step)`` and the RNG state is saved with the epoch.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from stica import perf
from stica.config import AugmentConfig, FinetuneConfig, PretrainConfig, to_dict
from stica.data.augment import VideoAugment
from stica.data.datasets import EpochBatchSampler, RandomClips, sample_seed
from stica.data.jpeg import batch_frames, clip_collate, decode_on_device
from stica.data.store import Store, VideoRecord
from stica.dist import StopRequested
from stica.errors import SticaError
from stica.logs import get_logger
from stica.models.classifier import FinetuneModel
from stica.models.stica import SticaModel
from stica.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_pretrained,
    load_state_strict,
    random_init,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from stica.train.optim import build_optimizer
from stica.train.schedule import warmup_step

log = get_logger("finetune")

# params that do not change a split's result: a change of these keeps finished splits
_NOT_FINGERPRINTED = ("workers", "splits", "baseline")


def finetune_lr(config: FinetuneConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate of optimisation step ``step`` (warm-up, then steps at the milestones)."""
    return config.lr * warmup_step(
        step,
        steps_per_epoch,
        config.warmup_lr / config.lr,
        config.warmup_epochs,
        config.milestones,
        config.gamma,
    )


def finetune_augment(augment: AugmentConfig, config: FinetuneConfig) -> AugmentConfig:
    """The pretraining augmentation as finetuning uses it: its flip, normalisation and (with
    ``color_jitter``) colour jitter, no grey, no blur; the finetuning crop size, crop scale and
    test short side where set, else the pretraining's."""
    crop = config.crop_size or augment.crop_size
    return dataclasses.replace(
        augment,
        crop_size=crop,
        scale=augment.scale if tuple(config.crop_scale) == (0, 0) else tuple(config.crop_scale),
        eval_short_side=config.eval_short_side or max(augment.eval_short_side, crop),
        jitter_p=augment.jitter_p if config.color_jitter else 0.0,
        grayscale_p=0.0,
        blur_p=0.0,
    )


# ------------------------------------------------------------------------------------------------
# The plan: inputs, validated before anything is written
# ------------------------------------------------------------------------------------------------


@dataclass
class SplitData:
    split: int  # official split number, from 1
    train: list[VideoRecord]
    test: list[VideoRecord]


def split_data(store: Store, split: int) -> SplitData:
    """The labelled train/test videos (with frames) of official split ``split`` of ``store``."""
    labelled = [r for r in store.records if r.label >= 0 and r.num_frames > 0]
    if not labelled or not store.meta.classes:
        raise SticaError(
            f"{store.root}: the store has no labelled videos; finetuning needs class labels "
            "(a layout with classes: class folders, UCF-101, HMDB-51, Kinetics)"
        )
    if not 1 <= split <= store.meta.num_splits:
        raise SticaError(
            f"{store.root}: has no split {split} (official splits: 1..{store.meta.num_splits}); "
            "check 'finetune.splits' or --split"
        )
    fold = split - 1
    train = [r for r in labelled if r.splits[fold] == "train"]
    test = [r for r in labelled if r.splits[fold] == "test"]
    for name, recs in (("train", train), ("test", test)):
        if not recs:
            raise SticaError(
                f"{store.root}: the {name} part of split {split} has no labelled videos"
            )
    return SplitData(split, train, test)


def labelled_subset(data: SplitData, per_class: int, seed: int) -> SplitData:
    """``data`` with at most ``per_class`` train videos of each class, drawn by ``seed`` (0 = all);
    the test videos are all kept."""
    if per_class == 0:
        return data
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
    kept, taken = [], Counter()
    for i in order.tolist():
        record = data.train[i]
        if taken[record.label] < per_class:
            taken[record.label] += 1
            kept.append(i)
    return dataclasses.replace(data, train=[data.train[i] for i in sorted(kept)])


@dataclass
class Init:
    """Initial weights of one finetuning run: the pretrained encoder or a random one."""

    name: str  # "pretrained" | "random_init"
    encoder: SticaModel
    digest: str  # identifies the initial weights in the fingerprint


@dataclass
class FinetunePlan:
    """Everything a run needs, checked up front (so bad input writes nothing)."""

    config: FinetuneConfig
    store: Store
    ckpt: str
    splits: list[SplitData]
    inits: list[Init]
    pretrained: PretrainConfig  # the checkpoint's params: architecture, clip, normalisation
    manifest_hash: str

    @property
    def num_frames(self) -> int:
        """The finetuning clip length."""
        return self.config.num_frames or self.pretrained.num_frames

    @property
    def augment(self) -> AugmentConfig:
        """The finetuning crop, jitter and evaluation geometry."""
        return finetune_augment(self.pretrained.augment, self.config)


def _file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prepare(
    config: FinetuneConfig, store_dir: str | Path, ckpt: str | Path, splits: tuple[int, ...] = ()
) -> FinetunePlan:
    """Check the store, the splits and the pretrain checkpoint; build the initial models.

    ``splits`` overrides ``config.splits`` when given.
    """
    store = Store(store_dir)
    if splits:
        config = dataclasses.replace(config, splits=tuple(splits))
    data = [
        labelled_subset(split_data(store, s), config.labelled_per_class, config.seed)
        for s in config.splits
    ]
    pretrained = load_pretrained(ckpt)
    inits = [Init("pretrained", pretrained.model, _file_digest(ckpt))]
    if config.baseline:
        random_encoder = random_init(pretrained.config, seed=config.seed).model
        inits.append(Init("random_init", random_encoder, f"random:{config.seed}"))
    plan = FinetunePlan(
        config=config,
        store=store,
        ckpt=str(ckpt),
        splits=data,
        inits=inits,
        pretrained=pretrained.config,
        manifest_hash=store.manifest_hash(),
    )
    pretrained.check_store(store, audio=False, eval_short_side=plan.augment.eval_short_side)
    return plan


def checkpoint_name(split: int, init: str) -> str:
    return f"split{split}.pt" if init == "pretrained" else f"split{split}-random.pt"


def resume_dir(out: Path) -> Path:
    """Per-epoch training state, beside (not inside) the output folder, which DVC may remove."""
    return out.with_name(f".{out.name}.resume")


def fingerprint(plan: FinetunePlan, split: int, init: Init) -> dict[str, Any]:
    """What a split's result depends on: a finished split with the same one is reused."""
    params = {k: v for k, v in to_dict(plan.config).items() if k not in _NOT_FINGERPRINTED}
    return {
        "params": params,
        "manifest_hash": plan.manifest_hash,
        "split": split,
        "init": init.digest,
        "classes": list(plan.store.meta.classes),
    }


# ------------------------------------------------------------------------------------------------
# Training one split
# ------------------------------------------------------------------------------------------------


def train_split(
    plan: FinetunePlan,
    data: SplitData,
    init: Init,
    state_file: Path,
    fingerprint: dict[str, Any],
    device: torch.device,
    stop: StopRequested,
    test: Callable[[FinetuneModel], dict[str, Any]] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[FinetuneModel, list[dict[str, Any]]]:
    """Finetune one model on one split; returns it and its per-epoch history.

    ``test`` scores the model on the test videos after each epoch from ``test_from_epoch`` on but
    the last (which the caller scores); its video top-1/top-5 go into the history.
    ``on_epoch`` receives each history row (those restored on resume first).
    """
    cfg = plan.config
    torch.manual_seed(cfg.seed)
    classes = len(plan.store.meta.classes)
    # a copy: every split starts from the same initial weights
    model = FinetuneModel(copy.deepcopy(init.encoder), classes, cfg.dropout).to(device)
    perf.set_channels_last(model.trunk, device.type == "cuda")
    records = data.train * cfg.train_clips_per_video  # index k·N + i: the k-th clip of video i
    dataset = RandomClips(
        plan.store,
        records,
        plan.num_frames,
        seed=cfg.seed,
        with_labels=True,
        encoded=decode_on_device(cfg.jpeg_decode, device),
    )
    batch = min(cfg.batch_size, len(dataset))
    steps_per_epoch = EpochBatchSampler.batches_per_epoch(len(dataset), batch)
    optimizer = build_optimizer(
        cfg.optimizer,
        model.param_groups(cfg.lr, cfg.backbone_lr_scale),
        cfg.lr,
        cfg.momentum,
        cfg.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: finetune_lr(cfg, s, steps_per_epoch) / cfg.lr
    )
    augment = VideoAugment(plan.augment)
    epoch, history = 0, []
    if state_file.exists():
        try:
            state = load_checkpoint(state_file, kind="finetune-state")
        except CheckpointError as e:
            log.warning(f"{e}; starting split {data.split} over")
            state = None
        if state is not None and state["fingerprint"] == fingerprint:
            load_state_strict(model, state["model"], str(state_file))
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            epoch, history = int(state["epoch"]), list(state["history"])
            log.info(f"resuming split {data.split} ({init.name}) at epoch {epoch}")
    for row in history if on_epoch is not None else ():
        on_epoch(row)
    log.info(
        f"finetuning split {data.split} from {init.name}: {len(data.train)} train videos x "
        f"{cfg.train_clips_per_video} clip(s), {steps_per_epoch} steps/epoch x {cfg.epochs} "
        f"epochs, batch {batch}, device {device}"
    )
    bar = tqdm(
        total=steps_per_epoch * cfg.epochs,
        initial=steps_per_epoch * epoch,
        desc=f"finetune split{data.split} {init.name}",
        unit="step",
    )
    # one loader for every epoch: its workers persist, each epoch moves its sampler
    sampler = EpochBatchSampler(len(dataset), batch, epoch, cfg.seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=clip_collate(dataset.encoded),
        **perf.loader_options(cfg.workers, device),
    )
    while epoch < cfg.epochs:
        model.train()
        sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        # summed on the device and read once per epoch: a read per step would make the CPU wait
        # for the step's backward before queueing the next one
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen = 0
        batches = iter(loader)
        # dropout's masks follow (seed, epoch), not how many loader iterators this process made
        # (a fresh iterator draws from the global generator, a persistent one does not; a
        # resumed run makes one more)
        torch.manual_seed(sample_seed(cfg.seed, epoch, -2) % 2**63)
        for b, sample in enumerate(batches):
            step = epoch * steps_per_epoch + b
            gen = torch.Generator().manual_seed(sample_seed(cfg.seed, step, 0))
            frames, sizes = batch_frames(sample, device)  # (B, T, H, W, 3) uint8, (B, 2)
            labels = sample["label"].to(device, non_blocking=True)  # (B,)
            with perf.autocast(device):
                logits = model(augment(frames, gen, sizes=sizes)).float()  # (B, C)
                loss = F.cross_entropy(logits, labels)
            if not torch.isfinite(loss):  # the step's one read: it waits for the forward only
                raise SticaError(
                    f"non-finite finetuning loss at epoch {epoch}, step {b} (lower 'finetune.lr'?)"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(labels)
            correct += (logits.argmax(1) == labels).sum()
            seen += len(labels)
            bar.update(1)
            if stop:
                break
        if stop:
            bar.close()
            log.info(f"stopped by signal {stop.signal}; resume state {state_file} (epoch {epoch})")
            raise SystemExit(128 + stop.signal)
        epoch += 1
        row = {
            "epoch": epoch,
            "split": data.split,
            "init": init.name,
            "lr": lr,
            "train_loss": float(loss_sum) / max(seen, 1),
            "train_acc": int(correct) / max(seen, 1),
            "test_video_top1": None,
            "test_video_top5": None,
        }
        if test is not None and cfg.test_from_epoch and cfg.test_from_epoch <= epoch < cfg.epochs:
            metrics = test(model)["metrics"]
            row["test_video_top1"], row["test_video_top5"] = (
                metrics["video_top1"],
                metrics["video_top5"],
            )
            model.train()
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        log.info(
            f"split {data.split} {init.name} epoch {epoch}/{cfg.epochs}: lr {lr:.5f} "
            f"loss {history[-1]['train_loss']:.4f} acc {history[-1]['train_acc']:.3f}"
        )
        save_checkpoint(
            state_file,
            {
                "kind": "finetune-state",
                "fingerprint": fingerprint,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
                "epoch": epoch,
                "history": history,
            },
        )
    bar.close()
    return model, history
