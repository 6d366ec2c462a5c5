"""Shared fixtures: a tiny profile of every params section and a tiny real demo store.

The tiny profile keeps the real pipeline (real mp4s, store, models, losses) at a size that runs
in seconds on 2 CPU cores.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

# Overrides of the committed params.yaml (the demo profile) that make every stage tiny.
TINY = {
    "synth": {
        "classes": 4,
        "train_per_class": 4,
        "test_per_class": 2,
        "duration": 1.0,
        "width": 64,
        "height": 48,
    },
    "preprocess": {"fps": 15.0, "short_side": 32, "videos_per_shard": 8, "workers": 0},
    "pretrain": {
        "epochs": 2,
        "batch_size": 8,
        "num_frames": 8,
        "warmup_epochs": 0.5,
        "workers": 0,
        "model": {
            "width": 4,
            "head_hidden": 16,
            "embed_dim": 8,
            "transformer_heads": 2,
            "pooling": "transformer",  # the demo pools by averaging; keep the paper's in the suite
        },
        "crops": {
            "space_medium": 1,
            "space_medium_size": 2,
            "space_small": 2,
            "space_small_size": 1,
            "time_medium": 1,
            "time_medium_size": 2,
            "time_small": 1,
            "time_small_size": 1,
        },
        "augment": {"crop_size": 32, "small_crop_size": 16, "eval_short_side": 32},
    },
    "features": {"clips_per_video": 2, "batch_size": 8, "workers": 0, "chunk_videos": 8},
    "finetune": {
        "epochs": 2,
        "batch_size": 8,
        "workers": 0,
        "eval_clips": 2,
        "train_clips_per_video": 1,
    },
    "retrieve": {"k": [1, 5], "gallery_queries": 2},
    "audio_eval": {"epochs": 5, "esc50_subclips": 2, "other_subclips": 2},
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def tiny_params(**section_overrides: dict) -> dict:
    """The committed params.yaml with the tiny overrides (and any extra ones) applied."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params = _merge(params, {k: v for k, v in TINY.items() if k in params})
    return _merge(params, section_overrides)


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tiny_params_file(tmp_path_factory) -> Path:
    return write_params(tmp_path_factory.mktemp("params") / "params.yaml", tiny_params())


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory, tiny_params_file) -> Path:
    """A real store of the tiny synthetic demo set (4 classes, 16 train + 8 test clips of 1 s)."""
    from stica.config import load_section
    from stica.data.preprocess import preprocess
    from stica.data.synth import generate

    root = tmp_path_factory.mktemp("tiny")
    generate(load_section("synth", tiny_params_file), root / "demo", workers=0, progress=False)
    preprocess(
        root / "demo", root / "store", load_section("preprocess", tiny_params_file), progress=False
    )
    return root / "store"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_store, tiny_params_file) -> Path:
    """A real pretrain checkpoint of the tiny profile (2 epochs of 2 steps)."""
    from stica.config import load_section
    from stica.train.pretrain import pretrain

    out = tmp_path_factory.mktemp("ckpt") / "pretrain.pt"
    pretrain(load_section("pretrain", tiny_params_file), tiny_store, out)
    return out
