"""Checkpoints: written atomically, loaded with ``weights_only=True`` and strictly.

A checkpoint is a plain dict of tensors and primitives (so ``weights_only=True`` can load it):

- ``format``: ``FORMAT`` — anything else is refused;
- ``kind``: ``"pretrain"`` or ``"finetune"``;
- ``model_config``: the ``ModelConfig`` as a dict, so later stages rebuild the model from it;
- ``model``: the unwrapped state dict (no ``module.`` prefixes from DDP);
- ``params``: the params section that produced it; ``versions``: library versions;
- ``manifest_hash``: the hash of the store's manifest it was trained on;
- training state for ``--resume``: ``optimizer``, ``scheduler``, ``epoch``, ``step``, ``rng``.
"""

from __future__ import annotations

import os
import platform
import random
from pathlib import Path
from typing import Any

import torch

from stica.errors import SticaError

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


def load_encoder(ckpt: str | Path, random_config: Any, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """The pretrained model of checkpoint ``ckpt``, or with ``ckpt == "random"`` a randomly
    initialised model of ``random_config`` (a ``PretrainConfig``) seeded by ``seed``.

    Returns ``(model, info)``; ``info`` has ``checkpoint``, ``params`` (the pretrain params the model
    was made with: clip length, crop size, normalisation) and ``manifest_hash`` (None for random).
    """
    from stica.config import ConfigError, to_dict
    from stica.models.stica import build_model

    if str(ckpt) == "random":
        torch.manual_seed(seed)
        model = build_model(random_config.model)
        return model, {
            "checkpoint": "random",
            "params": to_dict(random_config),
            "manifest_hash": None,
        }
    payload = load_checkpoint(ckpt, kind="pretrain")
    try:
        model = build_model(payload["model_config"])
    except ConfigError as e:
        raise CheckpointError(f"{ckpt}: model of an unknown architecture ({e})") from None
    load_state_strict(model, payload["model"], str(ckpt))
    return model, {
        "checkpoint": str(ckpt),
        "params": payload["params"],
        "manifest_hash": payload["manifest_hash"],
    }
