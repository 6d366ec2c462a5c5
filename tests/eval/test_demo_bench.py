"""`stica bench demo`'s per-seed record: a rerun with the same params gathers the saved metrics
(seeds can run as separate processes), other params compute them again."""

from __future__ import annotations

import dataclasses
import json
import shutil

from stica.config import load_section
from stica.eval.demo_bench import run_seed


def test_a_seed_is_computed_once_per_params(
    tiny_store, tiny_checkpoint, tiny_params_file, tmp_path
):
    sections = ("pretrain", "features", "retrieve", "audio_eval", "finetune")
    configs = {name: load_section(name, tiny_params_file) for name in sections}
    configs["finetune"] = dataclasses.replace(configs["finetune"], epochs=1)
    work = tmp_path / "seed0"
    work.mkdir()
    shutil.copy(tiny_checkpoint, work / "pretrain.pt")  # the tiny profile's seed-0 pretraining
    first = run_seed(0, tiny_store, configs, work, supervised=False)
    assert 0 <= first["retrieval R@1"]["pretrained"] <= 1
    assert json.loads((work / "metrics.json").read_text())["metrics"] == first

    for features in work.glob("features-*.h5"):
        features.unlink()
    assert run_seed(0, tiny_store, configs, work, supervised=False) == first
    assert not list(work.glob("features-*.h5"))  # gathered, nothing recomputed

    configs["retrieve"] = dataclasses.replace(configs["retrieve"], k=(1,))
    again = run_seed(0, tiny_store, configs, work, supervised=False)
    assert "retrieval R@5" not in again and list(work.glob("features-*.h5"))
