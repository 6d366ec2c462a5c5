"""Import the released GDT checkpoints (facebookresearch/GDT) as stica pretrain checkpoints.

The released files are GDT training checkpoints: ``model`` (the state dict of the ``GDT``
module), ``optimizer``, ``lr_scheduler``, ``epoch`` and the training ``args``. Their trunks are
stica's: GDT's ``video_network.base`` is an R(2+1)D-18 with torchvision's module names and shapes
(stem, layer1..4; its ``fc`` replaced by an identity, so no classifier tensors), and
``audio_network.base`` is a ResNet-9 (torchvision ResNet with one BasicBlock per stage and a
1-channel ``conv1``). The key mapping:

==================================================  ==========================================
GDT key (after stripping ``module.``)              stica key
==================================================  ==========================================
``video_network.base.stem.*``                       ``video_trunk.0.*``
``video_network.base.layer{i}.*`` (i = 1..4)        ``video_trunk.{i}.*``
``audio_network.base.conv1.weight``                 ``audio_trunk.stem.0.weight``
``audio_network.base.bn1.*``                        ``audio_trunk.stem.1.*``
``audio_network.base.layer{i}.0.*`` (i = 1..4)      ``audio_trunk.stages.{i-1}.*``
``audio_network.base.fc.*``                         (ignored: GDT keeps torchvision's 1000-way
                                                    classifier in the audio ResNet but its
                                                    forward never calls it)
``mlp_v.block_forward.{2,4,8}.*``                   ``video_head.mlp.{1,2,5}.*`` (imported only
``mlp_a.block_forward.{2,4,8}.*``                   ``audio_head.mlp.{1,2,5}.*``  when the head
                                                    matches: names and shapes)
==================================================  ==========================================

Every trunk tensor (weights, BatchNorm statistics and ``num_batches_tracked``) must arrive with an
equal shape; any unmapped, missing or mis-shaped key is an error naming it. A head that cannot be
imported is an error too unless ``allow_missing`` patterns cover all of its stica tensors: it then
keeps its initialisation and the checkpoint records why.

Loading never runs code from the file: ``torch.load(weights_only=True)`` with exactly the extra
globals a GDT training checkpoint holds (:data:`GDT_PICKLE_GLOBALS`).
"""

from __future__ import annotations

import argparse
import fnmatch
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stica.config import PretrainConfig, from_dict, to_dict
from stica.logs import get_logger
from stica.train.checkpoint import CheckpointError, library_versions, load_state_strict

log = get_logger("import_gdt")

VIDEO_PREFIX = "video_network.base."
AUDIO_PREFIX = "audio_network.base."
HEAD_PREFIXES = {"mlp_v.": "video_head", "mlp_a.": "audio_head"}
VIDEO_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")  # = R2Plus1d18Trunk's indices
# GDT's MLP.block_forward = [Flatten, Dropout, Linear(no bias), Unsqueeze, BatchNorm1d, Flatten,
# ReLU, Dropout, Linear]; stica's MLPHead.mlp = [Dropout, Linear(no bias), BatchNorm1d, ReLU,
# Dropout, Linear]: the parameterised layers 2, 4, 8 are stica's 1, 2, 5
GDT_HEAD_INDEX = {2: 1, 4: 2, 8: 5}
UNUSED_KEYS = {
    "audio_network.base.fc.weight": "GDT's audio ResNet-9 keeps torchvision's 1000-way "
    "classifier, which its forward never calls",
    "audio_network.base.fc.bias": "same classifier",
}
TRUNKS = ("video_trunk", "audio_trunk")
HEADS = ("video_head", "audio_head")

# The official recipe as the released weights were trained (GDT's main_gdt.py defaults, which its
# K400 script keeps): used where the file's ``args`` do not say otherwise.
GDT_ARG_DEFAULTS = {
    "model": "av_gdt",
    "vid_base_arch": "r2plus1d_18",
    "aud_base_arch": "resnet9",
    "clip_len": 30,
    "target_fps": 30,
    "train_crop_size": 112,
    "aud_sample_rate": 24000,
    "aud_spec_type": 1,
    "z_normalize": True,
    "use_mlp": True,
}
GDT_SPEC_FILTERS = {1: 40, 2: 257}  # aud_spec_type -> logfbank nfilt
GDT_Z_NORM = (1.93, 17.89)  # GDT's z_normalize: (logfbank - 1.93) / 17.89
GDT_HEAD_DROPOUT = 0.3  # MLP(p=0.3) in its model.py
GDT_MEAN, GDT_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)  # its video_transforms.py
EVAL_SHORT_SIDE = 128  # GDT evaluates 112-pixel crops of 128-pixel frames

# Params fixed by the weights: an override of one of them is refused.
FIXED_PARAMS = (
    "model.video_trunk",
    "model.audio_trunk",
    "model.pooling",
    "model.head_hidden",
    "model.embed_dim",
    "audio.frontend",
    "audio.n_fft",
    "audio.win_ms",
    "audio.hop_ms",
    "augment.mean",
    "augment.std",
)


# ----------------------------------------------------------------------------------------------
# Loading without running code
# ----------------------------------------------------------------------------------------------


class _Inert:
    """Stand-in for a pickled optimizer or scheduler object: keeps its attributes, runs nothing."""


def _plain_dict(*args: Any) -> dict:
    """Stand-in for ``collections.defaultdict(dict)`` (an optimizer's ``state``): a plain dict."""
    return {}


# What GDT's save_checkpoint() pickles besides tensors and primitives: the training ``args``
# (an argparse.Namespace) and, because its warm-up scheduler's state_dict() keeps the wrapped
# scheduler *object*, that scheduler with the SGD optimizer it references (whose ``state`` is a
# defaultdict(dict)). The objects become inert stand-ins; stica never uses them.
GDT_PICKLE_GLOBALS: list[Any] = [
    argparse.Namespace,
    (_Inert, "torch.optim.lr_scheduler.MultiStepLR"),
    (_Inert, "torch.optim.lr_scheduler.CosineAnnealingLR"),
    (_Inert, "torch.optim.sgd.SGD"),
    (_plain_dict, "collections.defaultdict"),
    (dict, "builtins.dict"),
]
ALLOWED_GLOBAL_NAMES = {
    g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in GDT_PICKLE_GLOBALS
}


def load_gdt_file(path: str | Path, source: str | None = None) -> dict[str, Any]:
    """Unpickle a GDT checkpoint with ``weights_only=True`` and only :data:`GDT_PICKLE_GLOBALS`.

    Anything else in the pickle (a class or function that would run on loading) is refused with a
    :class:`CheckpointError` naming it.
    """
    path = Path(path)
    name = source or str(path)
    if zipfile.is_zipfile(path):
        # lists every global of the pickle without unpickling anything: one message naming all
        try:
            found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception as e:
            raise CheckpointError(
                f"{name}: not a readable torch checkpoint ({_first_line(e)})"
            ) from None
        refused = sorted(set(found) - ALLOWED_GLOBAL_NAMES)
        if refused:
            raise CheckpointError(_refusal(name, refused))
    try:
        with torch.serialization.safe_globals(GDT_PICKLE_GLOBALS):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.findall(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(_refusal(name, found)) from None
        raise CheckpointError(f"{name}: refused to unpickle ({_first_line(e)})") from None
    except Exception as e:
        raise CheckpointError(
            f"{name}: not a readable torch checkpoint ({_first_line(e)})"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{name}: expected a dict, found a {type(payload).__name__}")
    return payload


def _refusal(name: str, refused: list[str]) -> str:
    return (
        f"{name}: refused to unpickle {', '.join(refused)} (a GDT checkpoint holds only tensors, "
        "argparse.Namespace and its optimizer/scheduler state; anything else could run code)"
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else e.__class__.__name__)[:200]


def gdt_state_dict(payload: dict[str, Any], source: str) -> dict[str, torch.Tensor]:
    """The model state of a GDT checkpoint: ``model`` or ``state_dict`` (or a bare state dict),
    with DDP's ``module.`` prefixes stripped."""
    if isinstance(payload.get("model"), dict):
        state = payload["model"]
    elif isinstance(payload.get("state_dict"), dict):
        state = payload["state_dict"]
    elif payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        state = payload
    else:
        raise CheckpointError(
            f"{source}: no model weights (expected a 'model' or 'state_dict' entry; found "
            f"{', '.join(sorted(map(str, payload))[:8]) or 'nothing'})"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: entry {key!r} of the model is not a tensor")
        while key.startswith("module."):
            key = key[len("module.") :]
        if key in out:
            raise CheckpointError(f"{source}: key {key!r} appears twice (with and without module.)")
        out[key] = value
    return out


# ----------------------------------------------------------------------------------------------
# Key mapping
# ----------------------------------------------------------------------------------------------


def stica_key(gdt_key: str) -> str | None:
    """The stica model key a GDT key maps to, or None when it has no place in stica's model."""
    if gdt_key.startswith(VIDEO_PREFIX):
        stage, _, rest = gdt_key[len(VIDEO_PREFIX) :].partition(".")
        if stage in VIDEO_STAGES and rest:
            return f"video_trunk.{VIDEO_STAGES.index(stage)}.{rest}"
        return None
    if gdt_key.startswith(AUDIO_PREFIX):
        rest = gdt_key[len(AUDIO_PREFIX) :]
        for gdt, ours in (("conv1.", "stem.0."), ("bn1.", "stem.1.")):
            if rest.startswith(gdt):
                return f"audio_trunk.{ours}{rest[len(gdt) :]}"
        m = re.fullmatch(r"layer([1-4])\.0\.(.+)", rest)
        return f"audio_trunk.stages.{int(m[1]) - 1}.{m[2]}" if m else None
    for prefix, head in HEAD_PREFIXES.items():
        m = re.fullmatch(re.escape(prefix) + r"block_forward\.(\d+)\.(.+)", gdt_key)
        if m and int(m[1]) in GDT_HEAD_INDEX:
            return f"{head}.mlp.{GDT_HEAD_INDEX[int(m[1])]}.{m[2]}"
        if gdt_key.startswith(prefix):
            return None
    return None


def gdt_key(stica_name: str) -> str | None:
    """The GDT key expected for a stica trunk or head key (for error messages)."""
    part, _, rest = stica_name.partition(".")
    if part == "video_trunk":
        index, _, tail = rest.partition(".")
        return f"{VIDEO_PREFIX}{VIDEO_STAGES[int(index)]}.{tail}"
    if part == "audio_trunk":
        m = re.fullmatch(r"stem\.([01])\.(.+)", rest)
        if m:
            return f"{AUDIO_PREFIX}{('conv1', 'bn1')[int(m[1])]}.{m[2]}"
        m = re.fullmatch(r"stages\.(\d)\.(.+)", rest)
        return f"{AUDIO_PREFIX}layer{int(m[1]) + 1}.0.{m[2]}" if m else None
    if part in HEADS:
        m = re.fullmatch(r"mlp\.(\d+)\.(.+)", rest)
        inverse = {v: k for k, v in GDT_HEAD_INDEX.items()}
        if m and int(m[1]) in inverse:
            prefix = "mlp_v." if part == "video_head" else "mlp_a."
            return f"{prefix}block_forward.{inverse[int(m[1])]}.{m[2]}"
    return None


def _part_of_gdt_key(key: str) -> str | None:
    if key.startswith(VIDEO_PREFIX):
        return "video_trunk"
    if key.startswith(AUDIO_PREFIX):
        return "audio_trunk"
    for prefix, head in HEAD_PREFIXES.items():
        if key.startswith(prefix):
            return head
    return None


@dataclass
class ImportResult:
    """What was imported into which part of the model, and what was left out (and why)."""

    state: dict[str, torch.Tensor]  # the complete stica state dict
    imported: dict[str, bool]  # part -> pretrained from the source
    tensors: int  # source tensors copied
    ignored: dict[str, str] = field(default_factory=dict)  # source key -> reason
    not_imported: dict[str, str] = field(default_factory=dict)  # part -> reason


def map_state(
    source_state: dict[str, torch.Tensor],
    model: torch.nn.Module,
    source: str,
    allow_missing: tuple[str, ...] = (),
) -> ImportResult:
    """Map a GDT state dict onto ``model`` (a :class:`~stica.models.stica.SticaModel`).

    Trunks must map completely and exactly; a head is imported when it does, else it is an error
    unless every stica tensor of that head matches an ``allow_missing`` glob (heads only).
    """
    own = model.state_dict()
    own_parts = {k.partition(".")[0] for k in own}
    for pattern in allow_missing:
        hits = [k for k in own if fnmatch.fnmatchcase(k, pattern)]
        trunk_hits = [k for k in hits if k.partition(".")[0] not in HEADS]
        if trunk_hits:
            raise CheckpointError(
                f"--allow-missing {pattern!r} matches {trunk_hits[0]}: only head tensors "
                f"({', '.join(h + '.*' for h in HEADS)}) may be left out"
            )
        if not hits:
            raise CheckpointError(f"--allow-missing {pattern!r} matches no tensor of the model")

    mapped: dict[str, tuple[str, torch.Tensor]] = {}
    problems: dict[str, list[str]] = {}  # part -> messages, in source order
    ignored: dict[str, str] = {}
    for key, value in source_state.items():
        if key in UNUSED_KEYS:
            ignored[key] = UNUSED_KEYS[key]
            continue
        part = _part_of_gdt_key(key)
        if part is None:
            hint = ""
            if key.startswith("text_network."):
                hint = " (GDT's video-text model: stica needs the audio-visual one)"
            raise CheckpointError(f"{source}: key {key} has no place in stica's model{hint}")
        dst = stica_key(key)
        if dst is None or dst not in own:
            problems.setdefault(part, []).append(f"key {key} has no place in stica's {part}")
            continue
        if tuple(own[dst].shape) != tuple(value.shape):
            problems.setdefault(part, []).append(
                f"key {key} has shape {tuple(value.shape)}, stica's {dst} {tuple(own[dst].shape)}"
            )
            continue
        mapped[dst] = (key, value)
    for dst in own:
        part = dst.partition(".")[0]
        if part in TRUNKS + HEADS and dst not in mapped:
            expected = gdt_key(dst) or dst
            problems.setdefault(part, []).append(f"key {expected} (for {dst}) is missing")

    for part in TRUNKS:
        if part in problems:
            more = len(problems[part]) - 1
            extra = f" (and {more} more)" if more else ""
            raise CheckpointError(f"{source}: {problems[part][0]}{extra}")

    result = ImportResult(state=dict(own), imported={}, tensors=0, ignored=ignored)
    for part in HEADS:
        if part not in problems:
            continue
        part_keys = [k for k in own if k.partition(".")[0] == part]
        covered = all(any(fnmatch.fnmatchcase(k, p) for p in allow_missing) for k in part_keys)
        if not covered:
            raise CheckpointError(
                f"{source}: {problems[part][0]}; the {part} cannot be imported (pass "
                f"--allow-missing '{part}.*' to keep it at its initialisation)"
            )
        result.not_imported[part] = problems[part][0]
        for dst in [d for d in mapped if d.partition(".")[0] == part]:
            del mapped[dst]
    for dst, (_, value) in mapped.items():
        result.state[dst] = value.detach().to(own[dst].dtype).clone()
    result.tensors = len(mapped)
    parts = [p for p in (*TRUNKS, *HEADS) if p in own_parts]
    result.imported = {p: p not in result.not_imported for p in parts}
    # parts with parameters that GDT does not have (e.g. a transformer pooling) stay random
    for p in sorted(own_parts - set(parts)):
        result.imported[p] = False
        result.not_imported[p] = "GDT has no such part"
    return result


# ----------------------------------------------------------------------------------------------
# Config of the imported model
# ----------------------------------------------------------------------------------------------


def gdt_args(payload: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The training args of the file as plain values, and whether the file had them."""
    args = payload.get("args")
    if args is None:
        return {}, False
    items = vars(args) if isinstance(args, argparse.Namespace) else args
    if not isinstance(items, dict):
        return {}, False
    return {str(k): v for k, v in items.items() if _is_plain(v)}, True


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain(v) for v in value)
    return False


def gdt_recipe(args: dict[str, Any], source: str) -> dict[str, Any]:
    """The training settings that matter to stica: the file's ``args``, else GDT's defaults."""
    recipe = {k: args.get(k, v) for k, v in GDT_ARG_DEFAULTS.items()}
    for key, want in (("vid_base_arch", "r2plus1d_18"), ("aud_base_arch", "resnet9")):
        if recipe[key] != want:
            raise CheckpointError(f"{source}: was trained with {key}={recipe[key]!r}, not {want}")
    if recipe["model"] not in ("av_gdt", "stica"):
        raise CheckpointError(
            f"{source}: is a {recipe['model']!r} model; stica imports GDT's audio-visual model"
        )
    if recipe["aud_spec_type"] not in GDT_SPEC_FILTERS:
        raise CheckpointError(
            f"{source}: unknown aud_spec_type={recipe['aud_spec_type']!r} in its args"
        )
    return recipe


def gdt_config(
    base: PretrainConfig, recipe: dict[str, Any], overridden: set[str]
) -> tuple[PretrainConfig, dict[str, Any]]:
    """``base`` with the GDT model, audio front end and input the weights were trained with
    (``recipe``, from :func:`gdt_recipe`); keys in ``overridden`` keep ``base``'s value.

    Returns the config and the params it set (for the provenance).
    """
    fixed = sorted(overridden & set(FIXED_PARAMS))
    if fixed:
        raise CheckpointError(
            f"param 'pretrain.{fixed[0]}' is fixed by the GDT weights and cannot be overridden"
        )
    data = to_dict(base)
    derived = {
        "model.video_trunk": "r2plus1d_18",
        "model.audio_trunk": "resnet9",
        "model.pooling": "avg",
        "model.head_hidden": 512,
        "model.embed_dim": 256,
        "model.head_dropout": GDT_HEAD_DROPOUT,
        "audio.frontend": "gdt",
        "audio.n_fft": 1024,
        "audio.win_ms": 20.0,
        "audio.hop_ms": 10.0,
        "augment.mean": list(GDT_MEAN),
        "augment.std": list(GDT_STD),
        "audio.sample_rate": int(recipe["aud_sample_rate"]),
        "audio.n_mels": GDT_SPEC_FILTERS[recipe["aud_spec_type"]],
        "audio.spec_norm": list(GDT_Z_NORM) if recipe["z_normalize"] else [0.0, 1.0],
        "num_frames": int(recipe["clip_len"]),
        "augment.crop_size": int(recipe["train_crop_size"]),
        "augment.eval_short_side": max(EVAL_SHORT_SIDE, int(recipe["train_crop_size"])),
    }
    used = {}
    for key, value in derived.items():
        if key in overridden:
            continue
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
        used[key] = value
    return from_dict(PretrainConfig, data, prefix="pretrain"), used


# ----------------------------------------------------------------------------------------------
# The whole import
# ----------------------------------------------------------------------------------------------


def import_gdt(
    path: str | Path,
    base: PretrainConfig,
    *,
    source: str | None = None,
    sha256: str | None = None,
    overridden: set[str] = frozenset(),
    allow_missing: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Read the GDT checkpoint ``path`` and return a stica pretrain checkpoint payload
    (:func:`~stica.train.checkpoint.save_checkpoint` writes it)."""
    from stica.models.stica import build_model, model_config_dict

    source = source or str(path)
    payload = load_gdt_file(path, source)
    args, has_args = gdt_args(payload)
    recipe = gdt_recipe(args, source)
    config, params_set = gdt_config(base, recipe, set(overridden))
    state = gdt_state_dict(payload, source)
    torch.manual_seed(config.seed)  # the initialisation of any part GDT does not provide
    model = build_model(config.model)
    result = map_state(state, model, source, tuple(allow_missing))
    load_state_strict(model, result.state, source)
    epoch = payload.get("epoch")
    provenance = {
        "format": "gdt",
        "source": source,
        "sha256": sha256,
        "epoch": int(epoch) if isinstance(epoch, int) else None,
        "args_in_file": has_args,
        "recipe": recipe,
        "params_set": params_set,
        "pretrained": result.imported,
        "not_imported": result.not_imported,
        "ignored_keys": result.ignored,
        "tensors_imported": result.tensors,
        "args": args,
    }
    size = config.augment.crop_size
    map_shape = model.video_map_shape(config.num_frames, size, size)
    return {
        "kind": "pretrain",
        "final": True,
        "model_config": model_config_dict(model),
        "model": model.state_dict(),
        "params": to_dict(config),
        "versions": library_versions(),
        "manifest_hash": None,  # not trained on a stica store
        "store": None,
        "fps": float(recipe["target_fps"]),
        "map_shape": list(map_shape),
        "epoch": provenance["epoch"],
        "provenance": provenance,
    }


def describe(provenance: dict[str, Any]) -> str:
    """One line on what was imported, for the command's output and the log."""
    yes = [p for p, ok in provenance["pretrained"].items() if ok]
    no = [p for p, ok in provenance["pretrained"].items() if not ok]
    text = f"pretrained: {', '.join(yes)}"
    if no:
        text += f"; initialised at random: {', '.join(no)}"
    return text


__all__ = [
    "GDT_PICKLE_GLOBALS",
    "describe",
    "gdt_key",
    "import_gdt",
    "load_gdt_file",
    "map_state",
    "stica_key",
]
