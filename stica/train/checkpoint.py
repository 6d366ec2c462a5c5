"""Checkpoints: written atomically, loaded with ``weights_only=True`` and strictly.

A checkpoint is a plain dict of tensors and primitives (so ``weights_only=True`` can load it):

- ``format``: ``FORMAT`` — anything else is refused;
- ``kind``: ``"pretrain"``, ``"finetune"`` (or the resume states ``"finetune-state"``);
- ``model_config``: the ``ModelConfig`` as a dict (equal to ``params["model"]``);
- ``model``: the unwrapped state dict (no ``module.`` prefixes from DDP);
- ``params``: the params section that produced it; ``versions``: library versions;
- ``manifest_hash``, ``store``: the store it was trained on (None for imported weights);
- ``fps``: the frame rate of its training clips; ``short_side``: of its training store's frames;
- ``determinism``: :func:`stica.determinism.record` of the run; ``provenance``: import-gdt's record;
- training state for ``--resume``: ``optimizer``, ``scheduler``, ``epoch``, ``step``, ``rng``.

A pretrain checkpoint is read back, typed, by :func:`load_pretrained` only (nanoGPT's
``GPTConfig(**checkpoint['model_args'])``: the params become a
:class:`~stica.config.PretrainConfig`, the model is built from its ``model`` section), and
:meth:`Pretrained.check_store` refuses a store whose clips are not the inputs the model was made
for.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import random
from pathlib import Path
from typing import Any, NamedTuple

import torch

from stica.config import PretrainConfig, from_dict, to_dict
from stica.errors import SticaError
from stica.models.stica import SticaModel, build_model

FORMAT = "stica-checkpoint/1"


class CheckpointError(SticaError):
    """A checkpoint that cannot be used for what was asked: unreadable, foreign, or mismatched."""


def library_versions() -> dict[str, str]:
    import av
    import torchvision

    import stica

    # str(): torch.__version__ is a TorchVersion object, which weights_only loading refuses
    return {
        "stica": str(stica.__version__),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "av": str(av.__version__),
    }


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": list(_listify(random.getstate())),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _listify(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_listify(v) for v in value]
    return value


def _tuplify(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    return value


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus ``format``) to ``path`` atomically: temp file, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **payload}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Load a stica checkpoint with ``weights_only=True``; refuse anything else in one line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file: corrupt, foreign, not a torch file at all
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise CheckpointError(f"{path}: not a loadable stica checkpoint ({first[:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a stica checkpoint (expected format {FORMAT})")
    if kind is not None and payload.get("kind") != kind:
        raise CheckpointError(f"{path}: is a {payload.get('kind')!r} checkpoint, expected {kind!r}")
    return payload


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with the mismatch reported in one line, never a partial load."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shape:
            k = shape[0]
            parts.append(
                f"{len(shape)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})"
            )
        raise CheckpointError(f"{source}: weights do not match the model: {'; '.join(parts)}")
    module.load_state_dict(state, strict=True)


# ------------------------------------------------------------------------------------------------
# Pretrained models: the typed boundary
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where a pretrained model's weights come from and which clips it was trained on."""

    checkpoint: str  # the file, or "random" for a randomly initialised model
    fps: float | None = None  # frame rate of the training clips (None: random init)
    short_side: int | None = None  # of the training store's frames (None: unknown)
    manifest_hash: str | None = None  # of the training store (None: random init, imported)
    store: str | None = None
    versions: dict[str, str] | None = None
    determinism: dict[str, Any] | None = None  # stica.determinism.record of the run
    imported: dict[str, Any] | None = None  # import-gdt's record (source, sha256, parts)


class Pretrained(NamedTuple):
    """``(model, config, provenance)``: a pretrain checkpoint (or a random init) read back."""

    model: SticaModel
    config: PretrainConfig  # the params the model was made with: clip, crop, audio front end
    provenance: Provenance

    def check_store(
        self,
        store: Any,
        *,
        video: bool = True,
        audio: bool = True,
        eval_short_side: int | None = None,
    ) -> None:
        """Refuse a store whose clips are not what the model was made for (one line each).

        ``store`` (a :class:`~stica.data.store.Store`) is read for ``video`` and/or ``audio``:

        - its fps must be the training clips' (``num_frames`` frames span a fixed time);
        - its frames must be at least ``eval_short_side`` pixels (default: the checkpoint's
          ``augment.eval_short_side``) on their short side: evaluation resizes the short side to
          that size before cropping, which is a downsampling for larger frames (documented
          resample) but would upsample smaller ones;
        - its audio sample rate must be the front end's (``audio.sample_rate``).
        """
        check_store(
            store,
            self.config,
            self.provenance.checkpoint,
            fps=self.provenance.fps,
            video=video,
            audio=audio,
            eval_short_side=eval_short_side,
        )


def check_store(
    store: Any,
    config: PretrainConfig,
    source: str,
    *,
    fps: float | None,
    video: bool = True,
    audio: bool = True,
    eval_short_side: int | None = None,
) -> None:
    """:meth:`Pretrained.check_store` for a model of ``config`` from ``source`` (a checkpoint
    or the params) trained on clips at ``fps`` (None: no fps to match)."""
    meta = store.meta
    if video and fps is not None and abs(meta.fps - fps) > 1e-3 * fps:
        raise SticaError(
            f"{store.root}: frames at {meta.fps:g} fps, but {source} was trained on clips at "
            f"{fps:g} fps ({config.num_frames} frames = {config.num_frames / fps:.2f} s); "
            f"preprocess the videos with 'preprocess.fps' = {fps:g}"
        )
    side = eval_short_side or config.augment.eval_short_side
    if video and meta.short_side < side:
        raise SticaError(
            f"{store.root}: frames of {meta.short_side} px on the short side, smaller than the "
            f"{side} px of 'eval_short_side' ({source}): evaluation would upsample them; "
            f"preprocess the videos with 'preprocess.short_side' >= {side}"
        )
    if audio and meta.sample_rate != config.audio.sample_rate:
        raise SticaError(
            f"{store.root}: audio at {meta.sample_rate} Hz, but the audio front end of {source} "
            f"takes {config.audio.sample_rate} Hz ('pretrain.audio.sample_rate'); preprocess the "
            f"videos with 'preprocess.sample_rate' = {config.audio.sample_rate}"
        )


def pretrain_config_of(params: Any, source: str | Path) -> PretrainConfig:
    """The typed pretrain params of a checkpoint; params this version cannot read are refused."""
    if not isinstance(params, dict):
        raise CheckpointError(f"{source}: has no pretrain params")
    try:
        return from_dict(PretrainConfig, dict(params), prefix="pretrain")
    except SticaError as e:
        raise CheckpointError(f"{source}: pretrain params of another version ({e})") from None


def load_pretrained(path: str | Path) -> Pretrained:
    """The model, typed params and provenance of pretrain checkpoint ``path``.

    Every reader of pretrain checkpoints comes through here: unreadable or foreign files, params
    this version does not know and weights that do not fit the architecture are all a
    :class:`CheckpointError` naming the file.
    """
    payload = load_checkpoint(path, kind="pretrain")
    config = pretrain_config_of(payload.get("params"), path)
    if payload.get("model_config") != to_dict(config.model):
        raise CheckpointError(f"{path}: its model_config and its params' model section differ")
    model = build_model(config.model)
    load_state_strict(model, payload["model"], str(path))
    fps = payload.get("fps")
    short_side = payload.get("short_side")
    provenance = Provenance(
        checkpoint=str(path),
        fps=float(fps) if fps is not None else None,
        short_side=int(short_side) if short_side is not None else None,
        manifest_hash=payload.get("manifest_hash"),
        store=payload.get("store"),
        versions=payload.get("versions"),
        determinism=payload.get("determinism"),
        imported=payload.get("provenance"),
    )
    return Pretrained(model, config, provenance)


def random_init(config: PretrainConfig, seed: int) -> Pretrained:
    """A randomly initialised model of ``config``'s architecture, seeded by ``seed`` (the same
    weights as pretraining with ``pretrain.seed = seed`` starts from)."""
    torch.manual_seed(seed)
    return Pretrained(build_model(config.model), config, Provenance(checkpoint="random"))


def load_encoder(
    ckpt: str | Path, random_config: PretrainConfig | None, seed: int = 0
) -> Pretrained:
    """:func:`load_pretrained` of ``ckpt``, or with ``ckpt == "random"`` :func:`random_init` of
    ``random_config`` (the command line's ``--ckpt random``)."""
    if str(ckpt) == "random":
        if random_config is None:
            raise SticaError("--ckpt random needs the pretrain params for its architecture")
        return random_init(random_config, seed)
    return load_pretrained(ckpt)
