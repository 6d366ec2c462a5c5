"""Typed, frozen configuration: one dataclass per ``params.yaml`` section.

``params.yaml`` is the single source of truth for hyper-parameters; paths are never params (they
are written once, in ``dvc.yaml``'s ``cmd``). Every key of a section must be a field of its
dataclass: unknown keys, wrong types and out-of-range values are refused with one clear line.
The dataclass defaults are the demo profile, identical to the committed ``params.yaml``, so every
command also runs on its own with the same defaults.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

from stica.errors import SticaError
from stica.models import dims

T = TypeVar("T")

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(SticaError):
    """A params file or override that does not match its section's dataclass."""


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"param '{key}': {message}")


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """``stica synth``: the synthetic audio-visual demo set (classes carried by motion and sound)."""

    seed: int = 0
    classes: int = 10
    train_per_class: int = 150
    test_per_class: int = 20
    duration: float = 1.0  # seconds per clip: one whole motion pattern
    fps: int = 10  # = preprocess.fps: no frames decoded only to be dropped
    width: int = 64
    height: int = 48
    sample_rate: int = 24000
    # The appearance nuisances, all independent of the class. A plain background is one random
    # colour per clip (no gradient or grating), so colour jitter can hide it completely.
    background: Literal["textured", "plain"] = "plain"
    # fraction of min(width, height); a range varies the size per clip, a cue that random-init
    # features and the within-modal loss both pick up (the demo draws one size)
    object_radius: tuple[float, float] = (0.24, 0.24)
    distractors: tuple[int, int] = (0, 0)  # inclusive range of static distractor shapes
    # the moving object's shape, drawn per clip from these ("disc", "square", "triangle"): with
    # several, both RGB crops of a clip share the shape and the within-modal loss learns it
    shapes: tuple[str, ...] = ("disc",)
    # Each class's sound source has its own register: class k's base pitch is 150 Hz * 2^(k *
    # class_pitch_step) octaves, moved by up to +-pitch_jitter octaves per clip (neighbouring
    # classes overlap when the jitter exceeds half the step). 0 = a base pitch drawn from
    # 180-600 Hz whatever the class, so only the motion-driven pitch/loudness carry the class.
    class_pitch_step: float = 0.35
    pitch_jitter: float = 0.25
    pitch_swing: tuple[float, float] = (0.8, 1.3)  # octaves from the bottom to the top of the frame
    # range of the per-clip pixel noise std (0..255 scale): a grain that colour jitter keeps, so
    # within-modal instance discrimination can tell clips apart by it instead of by their motion
    pixel_noise: tuple[float, float] = (0.0, 0.0)
    # "random": a colour per clip for the scene and for the object; "isoluminant": those colours
    # moved to one luminance for every scene and one for every object (only hue and saturation
    # vary: hue jitter and grayscale hide them); "fixed": the same grey scene and light object in
    # every clip. The draws are the same in every mode: same tracks and sounds
    colours: Literal["random", "isoluminant", "fixed"] = "isoluminant"

    def __post_init__(self) -> None:
        _check(2 <= self.classes <= 10, "synth.classes", "must be between 2 and 10")
        _check(
            self.background in ("textured", "plain"),
            "synth.background",
            "must be 'textured' or 'plain'",
        )
        lo, hi = self.object_radius
        _check(0.02 <= lo <= hi <= 0.3, "synth.object_radius", "must be 0.02 <= low <= high <= 0.3")
        _check(
            0 <= self.distractors[0] <= self.distractors[1] <= 10,
            "synth.distractors",
            "must be 0 <= low <= high <= 10",
        )
        _check(
            len(self.shapes) >= 1 and set(self.shapes) <= {"disc", "square", "triangle"},
            "synth.shapes",
            "must be a non-empty list of disc, square, triangle",
        )
        _check(0.0 <= self.class_pitch_step <= 0.5, "synth.class_pitch_step", "must be in [0, 0.5]")
        _check(0.0 <= self.pitch_jitter <= 1.0, "synth.pitch_jitter", "must be in [0, 1]")
        lo, hi = self.pitch_swing
        _check(0.0 <= lo <= hi <= 2.0, "synth.pitch_swing", "must be 0 <= low <= high <= 2 octaves")
        _check(
            self.colours in ("random", "isoluminant", "fixed"),
            "synth.colours",
            "must be random, isoluminant or fixed",
        )
        lo, hi = self.pixel_noise
        _check(0.0 <= lo <= hi <= 64.0, "synth.pixel_noise", "must be 0 <= low <= high <= 64")
        _check(self.train_per_class >= 1, "synth.train_per_class", "must be >= 1")
        _check(self.test_per_class >= 1, "synth.test_per_class", "must be >= 1")
        _check(self.duration >= 0.5, "synth.duration", "must be >= 0.5 s")
        _check(self.fps > 0, "synth.fps", "must be > 0")
        _check(self.width >= 32 and self.height >= 32, "synth.width/height", "must be >= 32")
        _check(
            self.width % 2 == 0 and self.height % 2 == 0,
            "synth.width/height",
            "must be even (H.264)",
        )
        _check(self.sample_rate > 0, "synth.sample_rate", "must be > 0")


Layout = Literal["auto", "generic", "ucf101", "hmdb51", "kinetics", "esc50", "dcase2014"]


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """``stica preprocess``: decode once into HDF5 shards of JPEG frames and int16 audio."""

    layout: Layout = "auto"
    fps: float = 10.0  # paper: 30
    short_side: int = 48  # paper: 128
    sample_rate: int = 24000
    jpeg_quality: int = 90
    min_duration: float = 0.3  # seconds; shorter inputs are rejected
    max_duration: float = 0.0  # seconds kept per video; 0 keeps everything
    test_fraction: float = 0.2  # generic layout without train/ test/ folders: hashed split
    videos_per_shard: int = 32
    workers: int = 2
    timeout: float = 600.0  # seconds per input before it is rejected as hung; 0 = no limit

    def __post_init__(self) -> None:
        _check(self.fps > 0, "preprocess.fps", "must be > 0")
        _check(self.short_side >= 16, "preprocess.short_side", "must be >= 16")
        _check(self.sample_rate >= 8000, "preprocess.sample_rate", "must be >= 8000")
        _check(1 <= self.jpeg_quality <= 100, "preprocess.jpeg_quality", "must be in [1, 100]")
        _check(self.min_duration >= 0, "preprocess.min_duration", "must be >= 0")
        _check(self.max_duration >= 0, "preprocess.max_duration", "must be >= 0 (0 = no limit)")
        _check(0 < self.test_fraction < 1, "preprocess.test_fraction", "must be in (0, 1)")
        _check(self.videos_per_shard >= 1, "preprocess.videos_per_shard", "must be >= 1")
        _check(self.workers >= 0, "preprocess.workers", "must be >= 0 (0 = in-process)")
        _check(self.timeout >= 0, "preprocess.timeout", "must be >= 0 (0 = no limit)")


# --- model (owner: models) ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The STiCA model (``pretrain.model``); saved in every checkpoint and rebuilt from it.

    Defaults are the CPU demo profile; the paper profile's values are in the comments.
    """

    video_trunk: Literal["small", "r2plus1d_18"] = "small"  # paper: r2plus1d_18
    audio_trunk: Literal["small", "resnet9"] = "small"  # paper: resnet9
    width: int = 8  # small trunks: w, 2w, 4w, 8w channels (16 is ~2x slower); paper: unused
    pooling: Literal["avg", "transformer"] = (
        "avg"  # paper: transformer; the demo: avg (README "The demo")
    )
    # "official": the released code's encoder (no position embeddings, Q/K projections only, FFN
    # 2048 GELU, post-LN, output = token 0; 5.25 M parameters at D = 512, Table 1d);
    # "ours": pre-LN nn.TransformerEncoder layers, FFN = D, learned absolute position embeddings,
    # mean over the tokens (stica's first design, kept for ablations)
    transformer_style: Literal["official", "ours"] = "official"  # paper: official
    transformer_layers: int = 2  # paper: 2
    transformer_heads: int = 4  # paper: 4
    transformer_dropout: float = 0.0  # paper: 0.0 (the released code's default `dp`)
    head_hidden: int = 256  # paper: 512
    embed_dim: int = 128  # paper: 256
    head_dropout: float = 0.0  # before each Linear of the projection heads; paper: 0.3
    max_time: int = 16  # "ours" style: longest map (T1) its position embeddings cover

    @property
    def video_dim(self) -> int:
        """D, the channels of the video trunk's map (the pooled feature size)."""
        return dims.video_dim(self.video_trunk, self.width)

    @property
    def audio_dim(self) -> int:
        """Channels of the audio trunk's last map (the pooled audio feature size)."""
        return dims.audio_dim(self.audio_trunk, self.width)

    def __post_init__(self) -> None:
        p = "pretrain.model"
        _check(self.width >= 4, f"{p}.width", "must be >= 4")
        _check(self.transformer_layers >= 1, f"{p}.transformer_layers", "must be >= 1")
        _check(self.transformer_heads >= 1, f"{p}.transformer_heads", "must be >= 1")
        _check(
            self.video_dim % self.transformer_heads == 0,
            f"{p}.transformer_heads",
            f"= {self.transformer_heads} must divide the video feature size {self.video_dim}",
        )
        _check(0 <= self.transformer_dropout < 1, f"{p}.transformer_dropout", "must be in [0, 1)")
        _check(self.head_hidden >= 1, f"{p}.head_hidden", "must be >= 1")
        _check(0 <= self.head_dropout < 1, f"{p}.head_dropout", "must be in [0, 1)")
        _check(self.embed_dim >= 1, f"{p}.embed_dim", "must be >= 1")
        _check(self.max_time >= 1, f"{p}.max_time", "must be >= 1")


# --- feature crops (owner: models) -----------------------------------------------------------

CROP_GROUPS = ("space_medium", "space_small", "time_medium", "time_small")


@dataclasses.dataclass(frozen=True)
class FeatureCropConfig:
    """Feature crops of the video trunk's map (``pretrain.crops``, paper sec. 3.2).

    Spatial crops keep the full time extent, temporal crops the full spatial extent; each crop is
    its own view. Defaults suit the demo's 2x3x3 map (space 2x2^2 + 4x1^2); the paper best on the
    4x7x7 map is space 2x6^2 + 4x4^2, time 2x3 + 1x2.
    """

    space_medium: int = 2  # paper: 2
    space_medium_size: int = 2  # paper: 6 (of 7)
    space_small: int = 4  # paper: 4
    space_small_size: int = 1  # paper: 4 (of 7)
    time_medium: int = 0  # paper: 2 (the demo map has only 2 time steps)
    time_medium_size: int = 3  # paper: 3 (of 4)
    time_small: int = 0  # paper: 1
    time_small_size: int = 1  # paper: 2 (of 4)

    def __post_init__(self) -> None:
        for group in CROP_GROUPS:
            _check(getattr(self, group) >= 0, f"pretrain.crops.{group}", "must be >= 0")
            size = f"{group}_size"
            _check(getattr(self, size) >= 1, f"pretrain.crops.{size}", "must be >= 1")

    def validate(self, map_shape: typing.Sequence[int]) -> None:
        """Refuse crops larger than the trunk's map; ``map_shape`` ends with (T1, H1, W1)."""
        t1, h1, w1 = (int(s) for s in map_shape[-3:])
        for group in ("space_medium", "space_small"):
            size = getattr(self, f"{group}_size")
            if getattr(self, group) and size > min(h1, w1):
                raise ConfigError(
                    f"param 'pretrain.crops.{group}_size' = {size} is larger than the "
                    f"{h1}x{w1} feature map"
                )
        for group in ("time_medium", "time_small"):
            size = getattr(self, f"{group}_size")
            if getattr(self, group) and size > t1:
                raise ConfigError(
                    f"param 'pretrain.crops.{group}_size' = {size} is longer than the "
                    f"{t1} time steps of the feature map"
                )


# --- audio front end and augmentation (owner: data: audio.py, augment.py) ---------------------


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """Audio front end (SPEC "Audio input"): a log-mel spectrogram (``librosa``) or GDT's log
    filterbank (``gdt``); nested in ``pretrain`` as ``audio``. The store's audio must be at
    ``sample_rate`` (checked when a model reads a store)."""

    sample_rate: int = 24000
    n_fft: int = 1024
    win_ms: float = 20.0
    hop_ms: float = 10.0
    n_mels: int = 257
    volume_jitter: tuple[float, float] = (0.9, 1.1)  # training gain ~ U(low, high)
    # "librosa": Slaney mel, Hann window, centred frames, log(x + 1e-6) (101 frames/s);
    # "gdt": the official code's python_speech_features logfbank on int16-scaled samples:
    # pre-emphasis 0.97, rectangular window, HTK mel, 99 frames/s (2 s = 257 x 199). paper: gdt
    frontend: Literal["librosa", "gdt"] = "librosa"
    # (mean, std): the log spectrogram is fed as (x - mean) / std; GDT's K400 training script
    # z-normalises with (1.93, 17.89), STiCA's does not: (0, 1)
    spec_norm: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        _check(self.sample_rate >= 8000, "audio.sample_rate", "must be >= 8000")
        win = round(self.sample_rate * self.win_ms / 1000)
        hop = round(self.sample_rate * self.hop_ms / 1000)
        _check(1 <= win <= self.n_fft, "audio.win_ms", f"window ({win} samples) must fit n_fft")
        _check(hop >= 1, "audio.hop_ms", "must be at least one sample")
        _check(self.n_mels >= 1, "audio.n_mels", "must be >= 1")
        low, high = self.volume_jitter
        _check(0 < low <= high, "audio.volume_jitter", "must be [low, high] with 0 < low <= high")
        _check(self.spec_norm[1] > 0, "audio.spec_norm", "must be [mean, std] with std > 0")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Clip-consistent visual augmentation (SimCLR protocol); nested in ``pretrain``.

    Defaults are the demo profile (48-pixel crops of 48-short-side frames); the paper profile uses
    ``crop_size: 112``, ``small_crop_size: 96`` and ``eval_short_side: 128`` on 128-pixel frames.
    """

    crop_size: int = 48  # paper: 112
    small_crop_size: int = 32  # multi-RGB-crop ablation (paper: 96 next to 112)
    # area fraction of the frame kept by a random resized crop: the demo's two crops of a clip
    # must not share the disc's place and size (the within-modal shortcut), and SimCLR's 0.08
    # loses the object at 48 pixels (README "The demo")
    scale: tuple[float, float] = (0.15, 1.0)  # paper profile: (0.14, 1.0) as the released code
    small_scale: tuple[float, float] = (0.1, 0.3)
    ratio: tuple[float, float] = (0.75, 1.3333333333333333)
    # the demo classes come in mirror pairs (move left/right, circle cw/ccw): flips would swap them
    flip_p: float = 0.0  # paper profile: 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.5  # paper profile: 0.0 (the released code jitters no hue)
    # order of brightness, contrast, saturation (then hue): "random" per clip (the released code,
    # torchvision) or "fixed"
    jitter_order: Literal["random", "fixed"] = "random"
    grayscale_p: float = 0.3
    blur_p: float = 0.0  # paper profile: 0.5 (a 48-pixel frame has little detail to blur)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    # Kinetics RGB statistics; the paper profile uses the released code's 0.45 / 0.225
    mean: tuple[float, float, float] = (0.43216, 0.394666, 0.37645)
    std: tuple[float, float, float] = (0.22803, 0.22145, 0.216989)
    eval_short_side: int = 48  # evaluation: resize the short side, then centre / 3 crops

    def __post_init__(self) -> None:
        _check(self.crop_size >= 8, "augment.crop_size", "must be >= 8")
        _check(self.small_crop_size >= 8, "augment.small_crop_size", "must be >= 8")
        for key, (lo, hi) in (("scale", self.scale), ("small_scale", self.small_scale)):
            _check(0 < lo <= hi <= 1, f"augment.{key}", "must be [low, high] in (0, 1]")
        _check(0 < self.ratio[0] <= self.ratio[1], "augment.ratio", "must be 0 < low <= high")
        for key in ("flip_p", "jitter_p", "grayscale_p", "blur_p"):
            _check(0 <= getattr(self, key) <= 1, f"augment.{key}", "must be a probability")
        for key in ("brightness", "contrast", "saturation"):
            _check(0 <= getattr(self, key) < 1, f"augment.{key}", "must be in [0, 1)")
        _check(0 <= self.hue <= 0.5, "augment.hue", "must be in [0, 0.5]")
        _check(
            0 < self.blur_sigma[0] <= self.blur_sigma[1],
            "augment.blur_sigma",
            "must be 0 < lo <= hi",
        )
        _check(all(s > 0 for s in self.std), "augment.std", "must be > 0")
        _check(
            self.eval_short_side >= self.crop_size,
            "augment.eval_short_side",
            f"must be >= crop_size ({self.crop_size})",
        )


# --- evaluation (owner: eval) ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RetrieveConfig:
    """``stica retrieve``: nearest-neighbour retrieval, test videos query the train videos."""

    k: tuple[int, ...] = (1, 5, 20)  # recall@k for each k (`--k 1 5 20` overrides)
    knn_k: tuple[int, ...] = (1, 20)  # kNN top-1: majority vote of the k nearest train items
    linear_c: float = 1.0  # inverse L2 strength of the logistic-regression probe
    gallery_queries: int = 8  # rows of the PNG gallery: test videos evenly spaced in file order

    def __post_init__(self) -> None:
        _check(len(self.k) >= 1, "retrieve.k", "must list at least one k")
        _check(all(k >= 1 for k in self.k), "retrieve.k", "every k must be >= 1")
        _check(all(k >= 1 for k in self.knn_k), "retrieve.knn_k", "every k must be >= 1")
        _check(self.linear_c > 0, "retrieve.linear_c", "must be > 0")
        _check(self.gallery_queries >= 1, "retrieve.gallery_queries", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class AudioEvalConfig:
    """``stica audio-eval``: linear probe on the frozen audio trunk (paper appendix 6.2)."""

    epochs: int = 30
    lr: float = 1e-4
    weight_decay: float = 5e-4
    batch_size: int = 512
    standardize: bool = True  # per-dimension, fitted on the training sub-clips
    seed: int = 0
    esc50_subclips: int = 10
    esc50_subclip_seconds: float = 2.0
    dcase_subclips: int = 60
    dcase_subclip_seconds: float = 1.0
    # any other store (the demo set, UCF-101, ...): ESC-50-style equally spaced sub-clips
    other_subclips: int = 10
    other_subclip_seconds: float = 1.0  # the demo clips last 1 s

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "audio_eval.epochs", "must be >= 1")
        _check(self.lr > 0, "audio_eval.lr", "must be > 0")
        _check(self.weight_decay >= 0, "audio_eval.weight_decay", "must be >= 0")
        _check(self.batch_size >= 1, "audio_eval.batch_size", "must be >= 1")
        for key in ("esc50_subclips", "dcase_subclips", "other_subclips"):
            _check(getattr(self, key) >= 1, f"audio_eval.{key}", "must be >= 1")
        for key in ("esc50_subclip_seconds", "dcase_subclip_seconds", "other_subclip_seconds"):
            _check(getattr(self, key) > 0, f"audio_eval.{key}", "must be > 0")


# --- pretraining (owner: lead) ----------------------------------------------------------------

PretrainMode = Literal["default", "two_crops", "multi_crops", "feature_crops"]
# a speed switch (stica.perf.resolve): "auto" = on for CUDA devices, off on the CPU
Switch = Literal["auto", "on", "off"]
SWITCH_VALUES = get_args(Switch)
# where a stage decodes the stored JPEG frames: "cpu" in the loader workers (PIL), "device" in
# the main process in batches on the model's device (torchvision.io.decode_jpeg: nvJPEG on a
# GPU); "auto": device on CUDA, cpu elsewhere (stica.data.jpeg)
JpegDecode = Literal["auto", "cpu", "device"]
JPEG_DECODE_VALUES = get_args(JpegDecode)


def _check_jpeg_decode(value: str, key: str) -> None:
    _check(value in JPEG_DECODE_VALUES, key, f"must be one of {', '.join(JPEG_DECODE_VALUES)}")


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """``stica pretrain``: self-supervised audio-visual pretraining (paper sec. 3-4, SPEC Training).

    ``mode`` and ``model.pooling`` select the Table 1 ablation: ``default`` (one RGB crop,
    cross-modal only), ``two_crops``, ``multi_crops`` (SwAV-style extra small RGB crops) or
    ``feature_crops`` (STiCA). Defaults are the CPU demo profile; profiles/paper.yaml has the paper's.
    """

    seed: int = 0
    mode: PretrainMode = "feature_crops"
    epochs: int = 11  # paper: 100 (the demo epoch is 47 steps)
    batch_size: int = 32  # global batch, split evenly over the torchrun processes; paper: 512
    lr: float = 0.005  # at base_batch_size; the lr used is lr * batch_size / base_batch_size
    base_batch_size: int = 32  # paper: 512
    # "sgd" with momentum (paper); "adamw" (beta1 = momentum): a tiny trunk learns motion from
    # scratch within a CPU budget with AdamW, not with SGD (measured, README "The demo")
    optimizer: Literal["sgd", "adamw"] = "adamw"  # paper: sgd
    momentum: float = 0.9
    weight_decay: float = 1e-4  # paper: 1e-5
    warmup_epochs: float = 1.0  # paper: 10
    # the warm-up rises linearly from this lr (not scaled with the batch) to the scaled lr
    warmup_start_lr: float = 1e-3  # paper: 1e-3 (the released code's default)
    schedule: Literal["cosine", "constant"] = "cosine"  # after the warm-up; paper: constant
    num_frames: int = 8  # frames per clip at the store's fps; paper: 30 (1 s at 30 fps)
    small_rgb_crops: int = 1  # multi_crops mode: small RGB crops next to the two large ones
    lambda_va: float = 0.5
    lambda_vv: float = 0.5
    # paper: 0.1. If the cross-modal loss stays at ln(batch) with the audio embeddings collapsed
    # (the pretext report warns), check what else the within-modal loss can tell clips apart by
    # before raising it: on the demo that was the cure (README "The demo"). Even so about one
    # demo run in seven stays at chance; 0.2 rescued the full demo's failing seed but failed a
    # seed of the reduced demo test that 0.1 passes, so the demo keeps 0.1 (README "The demo")
    temperature_va: float = 0.1
    temperature_vv: float = 0.5
    # the audio branch (trunk and head) is not updated for this many epochs at the start (its
    # BatchNorm statistics still follow the data): the video branch first learns to match the
    # random audio encoder. Tried on an earlier demo set whose cross-modal loss stayed at chance:
    # it helped one seed of two (README "The demo"); paper and demo: 0
    audio_freeze_epochs: float = 0.0
    # Within-modal pairs of feature-crop views (see stica/losses/feature_crops.py): "official",
    # the 12 terms of the released code for the paper-best crops (medium crop 2 of L1 <-> of L2;
    # every small crop of L2 -> every medium crop of L1; the same in time); "all", eq. (6) as the
    # paper's text writes it: every (T1, T2) pair but small x small, both ways, L1 and L2 included
    vv_pairs: Literal["official", "all"] = "official"  # paper: official
    # "mean": the within-modal terms are averaged (released code); "sum" as eq. (6) writes it
    vv_reduction: Literal["sum", "mean"] = "mean"  # paper: mean
    # "mean": L_va = 1/4 of its 4 directions (released code); "sum" of the 4 as eq. (7) writes it
    va_reduction: Literal["sum", "mean"] = "mean"  # paper: mean
    # the released code detaches every NCE key (local and gathered): only queries get gradients
    stop_grad_keys: bool = True  # paper: true
    max_bad_steps: int = 5  # consecutive non-finite losses before training is aborted
    workers: int = 0  # DataLoader workers per process; 0 (in-process) is fastest on 2 CPU cores
    # batches each worker prepares ahead (torch's prefetch_factor; workers live for the whole
    # run and pin their batches on CUDA); unused with workers: 0
    prefetch_factor: int = 2
    # where the stored JPEG frames are decoded (see JpegDecode): "device" ships each clip's
    # files (a few kB a frame) from the workers instead of its decoded frames and decodes the
    # batch on the GPU, which frees the workers but adds the decoding to the GPU's step. "cpu"
    # until that trade is measured: with 14 workers per GPU, PIL kept an H200 fed (90% of the
    # compute-only rate, README "GPU throughput"). Same clips either way on the CPU (tested)
    jpeg_decode: JpegDecode = "cpu"
    # same seed, hardware, thread count and process count -> bit-identical weights: torch's
    # deterministic algorithms, and on GPU deterministic cuDNN without autotuning (slower; with
    # false, cuDNN autotunes its conv algorithms on CUDA)
    deterministic: bool = True
    # torch.compile of the video trunk; "auto": on CUDA only (inductor needs a C compiler and
    # takes about a minute per graph on a small CPU, for no gain there)
    compile: Switch = "auto"
    # the video trunk's weights and input in channels_last_3d (cuDNN's fast 3D convs); "auto":
    # on CUDA only
    channels_last: Switch = "auto"
    # recompute each trunk stage's activations in the backward instead of keeping them: less
    # memory (larger per-GPU batches) for one more trunk forward; the gradients are the same.
    # The checkpointed trunk runs eager (compile: auto gives way, on is refused)
    activation_checkpointing: bool = False
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    crops: FeatureCropConfig = dataclasses.field(default_factory=FeatureCropConfig)
    audio: AudioConfig = dataclasses.field(default_factory=AudioConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "pretrain.epochs", "must be >= 1")
        _check(self.batch_size >= 2, "pretrain.batch_size", "must be >= 2 (contrastive negatives)")
        _check(self.lr > 0, "pretrain.lr", "must be > 0")
        _check(self.base_batch_size >= 1, "pretrain.base_batch_size", "must be >= 1")
        _check(0 <= self.momentum < 1, "pretrain.momentum", "must be in [0, 1)")
        _check(self.weight_decay >= 0, "pretrain.weight_decay", "must be >= 0")
        _check(self.warmup_epochs >= 0, "pretrain.warmup_epochs", "must be >= 0")
        _check(self.warmup_start_lr >= 0, "pretrain.warmup_start_lr", "must be >= 0")
        _check(self.num_frames >= 1, "pretrain.num_frames", "must be >= 1")
        _check(self.small_rgb_crops >= 1, "pretrain.small_rgb_crops", "must be >= 1")
        _check(self.lambda_va >= 0 and self.lambda_vv >= 0, "pretrain.lambda_*", "must be >= 0")
        _check(self.temperature_va > 0, "pretrain.temperature_va", "must be > 0")
        _check(self.temperature_vv > 0, "pretrain.temperature_vv", "must be > 0")
        _check(
            0 <= self.audio_freeze_epochs < self.epochs,
            "pretrain.audio_freeze_epochs",
            "must be >= 0 and below pretrain.epochs (the audio branch must train at some point)",
        )
        _check(self.max_bad_steps >= 1, "pretrain.max_bad_steps", "must be >= 1")
        _check(self.workers >= 0, "pretrain.workers", "must be >= 0")
        _check(self.prefetch_factor >= 1, "pretrain.prefetch_factor", "must be >= 1")
        _check_jpeg_decode(self.jpeg_decode, "pretrain.jpeg_decode")
        _check(isinstance(self.deterministic, bool), "pretrain.deterministic", "must be true/false")
        for key in ("compile", "channels_last"):
            _check(
                getattr(self, key) in SWITCH_VALUES,
                f"pretrain.{key}",
                f"must be one of {', '.join(SWITCH_VALUES)}",
            )
        _check(
            isinstance(self.activation_checkpointing, bool),
            "pretrain.activation_checkpointing",
            "must be true/false",
        )
        _check(
            not (self.activation_checkpointing and self.compile == "on"),
            "pretrain.compile",
            "'on' does not combine with 'activation_checkpointing: true' (the checkpointed "
            "trunk runs eager); use auto or off",
        )
        if self.mode == "feature_crops" and self.vv_pairs == "official":
            self._check_official_pairs()

    def _check_official_pairs(self) -> None:
        """The released code's pairs need medium crops to compare small crops with (<= 2 each)."""
        crops = self.crops
        for dim in ("space", "time"):
            medium, small = getattr(crops, f"{dim}_medium"), getattr(crops, f"{dim}_small")
            _check(
                medium <= 2,
                f"pretrain.crops.{dim}_medium",
                "'vv_pairs: official' (the released code) takes at most 2 medium crops; "
                "use 'vv_pairs: all' for more",
            )
            _check(
                small == 0 or medium >= 1,
                f"pretrain.crops.{dim}_small",
                "'vv_pairs: official' compares small crops with the medium crops of L1: "
                f"needs 'pretrain.crops.{dim}_medium' >= 1",
            )
        _check(
            official_term_count(dataclasses.asdict(crops)) > 0,
            "pretrain.crops",
            "give no within-modal term with 'vv_pairs: official' (needs 2 medium crops, or small "
            "and medium crops, in space or time)",
        )


def official_term_count(counts: typing.Mapping[str, int]) -> int:
    """How many within-modal terms the released code's pairs make of these crop counts: per
    dimension, one for 2 medium crops plus one per (small, medium) pair. The pairs themselves are
    :func:`stica.losses.feature_crops.official_terms` (a test checks that both agree); counted
    here so that the params do not import the losses (and torch)."""
    total = 0
    for dim in ("space", "time"):
        medium, small = counts.get(f"{dim}_medium", 0), counts.get(f"{dim}_small", 0)
        total += (medium == 2) + medium * small
    return total


@dataclasses.dataclass(frozen=True)
class FeaturesConfig:
    """``stica extract-features``: per-video features for retrieval (paper sec. 4.3).

    Clip length, crop and normalisation come from the checkpoint's own pretrain params, so the
    features are computed on the input the model was trained on.
    """

    clips_per_video: int = 3  # uniformly spaced clips, features averaged over them
    batch_size: int = 20  # clips per forward pass
    workers: int = 0  # DataLoader workers (0: in-process, fastest on 2 CPU cores)
    seed: int = 0  # initialisation of the random-init baseline (--ckpt random)
    chunk_videos: int = 64  # progress is saved every chunk, so a killed run resumes
    # also store every clip's feature (float16, N x clips x D) for clip-level probes
    store_clips: bool = True
    # bf16 autocast of the forward passes; "auto": on CUDA only (features then carry bf16
    # rounding instead of fp32's)
    autocast: Switch = "auto"
    # torch.compile the video trunk (batches padded to batch_size: one graph); "auto": CUDA only.
    # Off by default: on an H200 the compiled trunk extracted no faster (845 vs 847 clips/s, the
    # loader limits) and compiling took about a minute (README, GPU throughput)
    compile: Switch = "off"
    # torch's deterministic mode (no cuDNN autotuning): the same features run to run; false lets
    # cuDNN autotune on CUDA
    deterministic: bool = True
    # where the stored JPEG frames are decoded (see JpegDecode): with "device" the workers ship
    # the few kB of each frame's file once per video instead of every clip's decoded frames.
    # Features agree to the two JPEG decoders' rounding (README "GPU throughput": auto measured)
    jpeg_decode: JpegDecode = "auto"

    def __post_init__(self) -> None:
        _check(self.clips_per_video >= 1, "features.clips_per_video", "must be >= 1")
        _check(self.batch_size >= 1, "features.batch_size", "must be >= 1")
        _check(self.workers >= 0, "features.workers", "must be >= 0")
        _check(self.chunk_videos >= 1, "features.chunk_videos", "must be >= 1")
        _check(
            self.autocast in SWITCH_VALUES,
            "features.autocast",
            f"must be one of {', '.join(SWITCH_VALUES)}",
        )
        _check(
            self.compile in SWITCH_VALUES,
            "features.compile",
            f"must be one of {', '.join(SWITCH_VALUES)}",
        )
        _check_jpeg_decode(self.jpeg_decode, "features.jpeg_decode")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """``stica finetune``: supervised finetuning of the whole video encoder (paper sec. 4.3).

    The schedule is GDT's/STiCA's: SGD, lr warmed up linearly from ``warmup_lr`` to ``lr`` over
    ``warmup_epochs``, then x``gamma`` at each milestone epoch; the trunk and its pooling train at
    ``backbone_lr_scale`` times the classifier's lr (released ``eval_video.py``: 0.00025 vs
    0.0025 before the x8 warm-up). Clip length, crop and evaluation short side default to the
    pretrain checkpoint's (0); normalisation always comes from it. Defaults are the demo profile;
    the paper profile's values are in the comments.
    """

    seed: int = 0
    epochs: int = 6  # paper: 12
    batch_size: int = 32  # paper: 32
    lr: float = 0.002  # the classifier's peak lr after warm-up; paper: 0.02 (SGD)
    warmup_lr: float = 0.0002  # the classifier's lr at epoch 0; paper: 0.0025
    # trunk + pooling lr / classifier lr; paper: 0.1. The demo trains all at one lr: at 0.1 its
    # 276 AdamW steps left both inits underfit (train top-1 <= 0.3), a measure of how fast
    # training starts rather than of the features
    backbone_lr_scale: float = 1.0
    warmup_epochs: float = 0.5  # paper: 2
    milestones: tuple[int, ...] = (4,)  # paper: lr x gamma at epochs 6 and 10
    gamma: float = 0.1  # paper: 0.05
    optimizer: Literal["sgd", "adamw"] = "adamw"  # paper: sgd (adamw: beta1 = momentum)
    momentum: float = 0.9  # paper: 0.9
    weight_decay: float = 0.005  # paper: 0.005
    dropout: float = 0.0  # before the new linear classifier; paper: 0.0 (released code: off)
    color_jitter: bool = False  # the checkpoint's colour jitter on training clips; paper: true
    num_frames: int = 0  # frames per clip, 0 = the pretraining clip length; paper: 32
    crop_size: int = 0  # train and test crop side, 0 = the pretraining crop; paper: 128
    # area fraction kept by the training clips' random resized crop, (0, 0) = the pretraining's;
    # paper: (0, 0). The demo keeps >= 60%: with its pretraining's (0.14, 1) the disc often leaves
    # the crop and 6 epochs left both inits underfit (train top-1 0.39 / 0.49)
    crop_scale: tuple[float, float] = (0.6, 1.0)
    eval_short_side: int = (
        0  # test frames' short side before 3 crops, 0 = pretraining's; paper: 128
    )
    train_clips_per_video: int = 5  # random clips per video per epoch; paper: 10
    # labelled train videos per class (drawn by seed), 0 = all. The paper pretrains on Kinetics
    # (240k videos) and finetunes on UCF-101 (9.5k, ~4%); the demo pretrains and finetunes on one
    # set, so it keeps a few labels per class to put finetuning in the same regime
    labelled_per_class: int = 10  # paper: 0
    eval_clips: int = 4  # uniformly spaced test clips per video; paper: 10
    eval_crops: Literal[1, 3] = 3  # spatial crops per test clip; paper: 3
    eval_batch_size: int = 32  # test clips per forward pass (x eval_crops views)
    # also test after every epoch from this one (1-based) to report the best test epoch as the
    # released script does (it tests epochs 8-12); 0 (or > epochs) = after the last epoch only
    test_from_epoch: int = 0  # paper: 8
    splits: tuple[int, ...] = (1,)  # official splits/folds to run; paper: (1, 2, 3) for the mean
    baseline: bool = True  # also finetune a randomly initialised model of the same architecture
    workers: int = 0  # DataLoader workers (0: in-process, fastest on 2 CPU cores)
    # where the training and test clips' JPEG frames are decoded (see JpegDecode and
    # pretrain.jpeg_decode): "cpu" until measured on a GPU
    jpeg_decode: JpegDecode = "cpu"
    # torch's deterministic mode, as pretrain.deterministic: the same weights and scores run to
    # run on one machine; false lets cuDNN autotune on CUDA
    deterministic: bool = True

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "finetune.epochs", "must be >= 1")
        _check(self.batch_size >= 1, "finetune.batch_size", "must be >= 1")
        _check(self.lr > 0, "finetune.lr", "must be > 0")
        _check(0 < self.warmup_lr <= self.lr, "finetune.warmup_lr", "must be in (0, lr]")
        _check(0 < self.backbone_lr_scale <= 1, "finetune.backbone_lr_scale", "must be in (0, 1]")
        _check(self.warmup_epochs >= 0, "finetune.warmup_epochs", "must be >= 0")
        _check(
            list(self.milestones) == sorted(self.milestones)
            and all(m >= 1 for m in self.milestones),
            "finetune.milestones",
            "must be increasing epochs >= 1",
        )
        _check(0 < self.gamma <= 1, "finetune.gamma", "must be in (0, 1]")
        _check(0 <= self.momentum < 1, "finetune.momentum", "must be in [0, 1)")
        _check(self.weight_decay >= 0, "finetune.weight_decay", "must be >= 0")
        _check(0 <= self.dropout < 1, "finetune.dropout", "must be in [0, 1)")
        _check(self.num_frames >= 0, "finetune.num_frames", "must be >= 0 (0 = pretraining's)")
        _check(
            self.crop_size == 0 or self.crop_size >= 8,
            "finetune.crop_size",
            "must be >= 8 (0 = pretraining's)",
        )
        lo, hi = self.crop_scale
        _check(
            (lo, hi) == (0, 0) or 0 < lo <= hi <= 1,
            "finetune.crop_scale",
            "must be 0 < low <= high <= 1, or [0, 0] (pretraining's)",
        )
        _check(
            self.eval_short_side == 0 or self.eval_short_side >= max(self.crop_size, 8),
            "finetune.eval_short_side",
            "must be >= crop_size (0 = pretraining's)",
        )
        _check(self.train_clips_per_video >= 1, "finetune.train_clips_per_video", "must be >= 1")
        _check(self.labelled_per_class >= 0, "finetune.labelled_per_class", "must be >= 0")
        _check(self.eval_clips >= 1, "finetune.eval_clips", "must be >= 1")
        _check(self.eval_batch_size >= 1, "finetune.eval_batch_size", "must be >= 1")
        _check(
            self.test_from_epoch >= 0,
            "finetune.test_from_epoch",
            "must be >= 0 (0, or past the last epoch: test after the last epoch only)",
        )
        _check(
            len(self.splits) >= 1 and len(set(self.splits)) == len(self.splits),
            "finetune.splits",
            "must list distinct split numbers",
        )
        _check(all(s >= 1 for s in self.splits), "finetune.splits", "split numbers start at 1")
        _check(self.workers >= 0, "finetune.workers", "must be >= 0")
        _check_jpeg_decode(self.jpeg_decode, "finetune.jpeg_decode")
        _check(isinstance(self.deterministic, bool), "finetune.deterministic", "must be true/false")


SECTIONS: dict[str, type] = {
    "synth": SynthConfig,
    "preprocess": PreprocessConfig,
    "pretrain": PretrainConfig,
    "features": FeaturesConfig,
    "finetune": FinetuneConfig,
    "retrieve": RetrieveConfig,
    "audio_eval": AudioEvalConfig,
}


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def read_params(path: str | Path | None) -> dict[str, Any]:
    """Read a params YAML file; ``None`` means ``./params.yaml`` when present, else defaults."""
    if path is None:
        if not DEFAULT_PARAMS.exists():
            return {}
        path = DEFAULT_PARAMS
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def load_section(
    name: str,
    params_path: str | Path | None = None,
    overrides: typing.Sequence[str] = (),
) -> Any:
    """Build the frozen config of section ``name`` from ``params_path`` plus ``key=value`` overrides."""
    cls = SECTIONS[name]
    data = read_params(params_path).get(name) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"params section '{name}' must be a mapping")
    data = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        _check(bool(sep) and bool(key), item, "overrides are written key=value, e.g. epochs=2")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            _check(isinstance(node, dict), key, "is not a nested section")
        node[parts[-1]] = yaml.safe_load(raw)
    return from_dict(cls, data, prefix=name)


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys and wrong types."""
    hints = get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown param '{where}{unknown[0]}' (known keys: {', '.join(sorted(fields))})"
        )
    kwargs = {k: _coerce(hints[k], v, f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field without a default
        raise ConfigError(f"section '{prefix}': {e}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """Plain, YAML/JSON-friendly dict of a config (tuples become lists)."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        _check(isinstance(value, dict), key, "must be a mapping")
        return from_dict(tp, value, prefix=key)
    if origin is Literal:
        choices = get_args(tp)
        if isinstance(value, bool) and {"on", "off"} <= set(choices):
            # YAML 1.1 readers (PyYAML: params files, --set) read a bare on/off as a boolean
            value = "on" if value else "off"
        _check(
            value in choices, key, f"must be one of {', '.join(map(str, choices))}, got {value!r}"
        )
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"param '{key}': bad value {value!r}")
    if origin is tuple:
        _check(isinstance(value, list | tuple), key, f"must be a list, got {value!r}")
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        _check(len(value) == len(args), key, f"must have {len(args)} items, got {len(value)}")
        return tuple(
            _coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if tp is bool:
        _check(isinstance(value, bool), key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        _check(
            isinstance(value, int) and not isinstance(value, bool),
            key,
            f"must be an integer, got {value!r}",
        )
        return value
    if tp is float:
        _check(
            isinstance(value, int | float) and not isinstance(value, bool),
            key,
            f"must be a number, got {value!r}",
        )
        return float(value)
    if tp is str:
        _check(isinstance(value, str), key, f"must be a string, got {value!r}")
        return value
    raise ConfigError(f"param '{key}': unsupported type {tp}")
