"""Same seed, same machine, same thread count -> same weights and features (issue 12).

These run the committed demo profile's model, batch and crops: the order-nondeterministic kernel
(the backward of advanced indexing, see stica.determinism) only goes parallel from 32768 gradient
elements, which the tiny profile never reaches, so it was deterministic by luck. Two threads, as
on the 2-core demo machine (one thread would hide the problem too).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from stica.eval.features_io import read_features
from stica.eval.metrics import provenance_path
from stica.train.checkpoint import load_checkpoint
from stica.train.pretrain import resume_path
from tests.conftest import REPO_ROOT, tiny_params, write_params

STICA = [sys.executable, "-m", "stica"]
THREADS = 2
ENV = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
EPOCHS, STEPS_PER_EPOCH = 3, 2  # 64 train videos, the demo's global batch of 32


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(STICA + args, capture_output=True, text=True, timeout=300, env=ENV)


def _rows(live: Path) -> list[dict[str, str]]:
    """The steps of a live log (--live): one {metric: value} per step, from its loss curves."""
    curves = []
    for name in ("loss", "loss_va", "loss_vv"):
        try:
            with open(live / "plots" / "metrics" / f"{name}.tsv", newline="") as f:
                curves.append(list(csv.DictReader(f, delimiter="\t")))
        except FileNotFoundError:
            return []
    n = min(len(c) for c in curves)
    return [{k: v for c in curves for k, v in c[i].items()} for i in range(n)]


@pytest.fixture(scope="module")
def demo_params(tmp_path_factory) -> Path:
    """The committed params.yaml (demo profile) as is, but for a smaller synthetic set and epochs."""
    params = tiny_params(
        synth={"classes": 4, "train_per_class": 16, "test_per_class": 1},
        preprocess={"fps": 10.0, "short_side": 48},  # the demo's clip: 8 frames of 48 px at 10 fps
    )
    committed = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["pretrain"] = {**committed["pretrain"], "epochs": EPOCHS}
    params["features"] = {**committed["features"], "clips_per_video": 2}  # the demo batch of 20
    return write_params(tmp_path_factory.mktemp("demo") / "params.yaml", params)


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory, demo_params) -> Path:
    from stica.config import load_section
    from stica.data.preprocess import preprocess
    from stica.data.synth import generate

    root = tmp_path_factory.mktemp("demo_store")
    generate(load_section("synth", demo_params), root / "videos", workers=0, progress=False)
    preprocess(root / "videos", root / "store", load_section("preprocess", demo_params), False)
    return root / "store"


def _pretrain(store: Path, params: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", str(store), "--out", str(out), "--params", str(params), *extra]


@pytest.fixture(scope="module")
def straight(demo_store, demo_params, tmp_path_factory) -> Path:
    """An uninterrupted run: checkpoint ``straight.pt``, live log ``live`` and ``metrics.json``."""
    d = tmp_path_factory.mktemp("straight")
    r = _run(
        _pretrain(demo_store, demo_params, d / "straight.pt")
        + ["--live", str(d / "live"), "--metrics", str(d / "metrics.json")]
    )
    assert r.returncode == 0, r.stderr
    return d / "straight.pt"


def _assert_same_training_state(a_path: Path, b_path: Path) -> None:
    a, b = load_checkpoint(a_path, kind="pretrain"), load_checkpoint(b_path, kind="pretrain")
    assert a["step"] == b["step"] == EPOCHS * STEPS_PER_EPOCH
    differ = [k for k, v in a["model"].items() if not torch.equal(v, b["model"][k])]
    assert not differ, f"{len(differ)} of {len(a['model'])} weights differ, e.g. {differ[:3]}"
    # the optimizer's state too (SGD's momentum buffers, AdamW's moments and step counts)
    state_a, state_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert state_a.keys() == state_b.keys()
    for i, s in state_a.items():
        assert s.keys() == state_b[i].keys(), i
        for name, value in s.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(state_b[i][name])), (i, name)


def test_two_runs_with_the_same_seed_give_identical_checkpoints(
    demo_store, demo_params, straight, tmp_path
):
    again = tmp_path / "again.pt"
    log_csv = tmp_path / "live"
    r = _run(_pretrain(demo_store, demo_params, again, "--live", str(log_csv)))
    assert r.returncode == 0, r.stderr
    _assert_same_training_state(straight, again)
    losses = ("loss", "loss_va", "loss_vv")
    first = [[row[k] for k in losses] for row in _rows(straight.parent / "live")]
    assert first == [[row[k] for k in losses] for row in _rows(log_csv)]

    # it trained (weights moved from the seed's initialisation) at the demo's sizes, threaded
    from stica.config import load_section
    from stica.models.stica import build_model

    ckpt = load_checkpoint(straight, kind="pretrain")
    torch.manual_seed(ckpt["params"]["seed"])
    init = build_model(ckpt["model_config"]).state_dict()
    moved = [k for k, v in init.items() if v.is_floating_point() and k.endswith("weight")]
    assert all(not torch.equal(init[k], ckpt["model"][k]) for k in moved)
    demo_model = load_section("pretrain", REPO_ROOT / "params.yaml").model
    assert ckpt["model_config"] == dataclasses.asdict(demo_model)
    assert ckpt["determinism"] == {"deterministic": True, "cpu_threads": THREADS, "device": "cpu"}
    metrics = provenance_path(straight.parent / "metrics.json").read_text()
    assert '"deterministic": true' in metrics and f'"cpu_threads": {THREADS}' in metrics


def test_sigkill_mid_epoch_then_resume_gives_the_same_weights(
    demo_store, demo_params, straight, tmp_path
):
    out, log_csv = tmp_path / "killed.pt", tmp_path / "live"
    cmd = _pretrain(demo_store, demo_params, out, "--live", str(log_csv))
    proc = subprocess.Popen(
        STICA + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
    )
    deadline = time.time() + 240
    # the first step of epoch 2 done: epoch 1's checkpoint is on disk, epoch 2 is half done
    while len(_rows(log_csv)) <= STEPS_PER_EPOCH and proc.poll() is None:
        assert time.time() < deadline, "pretraining made no progress"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL  # killed, no chance to checkpoint
    done = len(_rows(log_csv))
    state = load_checkpoint(resume_path(out), kind="pretrain")
    assert not out.exists() and state["step"] % STEPS_PER_EPOCH == 0 and done > state["step"]

    r = _run(cmd + ["--resume"])
    assert r.returncode == 0, r.stderr
    assert f"resuming from {resume_path(out)} at epoch" in r.stderr
    assert "will differ" not in r.stderr
    _assert_same_training_state(straight, out)
    assert len(_rows(log_csv)) == EPOCHS * STEPS_PER_EPOCH  # the lost steps were redone once


def test_extract_features_twice_gives_identical_features(
    demo_store, demo_params, straight, tmp_path
):
    outs = [tmp_path / "a.h5", tmp_path / "b.h5"]
    for out in outs:
        r = _run(
            ["extract-features", str(demo_store), "--ckpt", str(straight), "--out", str(out)]
            + ["--params", str(demo_params)]
        )
        assert r.returncode == 0, r.stderr
    a, b = (read_features(out) for out in outs)
    assert len(a) == 68 and a.dim == 64  # every video; the demo trunk's 8 x width 8
    assert np.array_equal(a.features, b.features)
    assert np.array_equal(a.audio_features, b.audio_features)


def test_a_stop_mid_epoch_resumes_with_the_same_dropout_masks(tiny_store, tmp_path):
    """Creating a DataLoader iterator consumes a draw of torch's global generator, and a resumed
    run creates one more mid-epoch: dropout (the paper profile's heads) must not depend on it."""
    from stica.config import load_section
    from stica.train.pretrain import pretrain

    params = tiny_params(pretrain={"epochs": 2, "model": {"head_dropout": 0.3}})
    config = load_section("pretrain", write_params(tmp_path / "params.yaml", params))
    pretrain(config, tiny_store, tmp_path / "straight.pt")
    pretrain(config, tiny_store, tmp_path / "resumed.pt", max_steps=3)  # epoch 2 of 2 steps
    assert load_checkpoint(resume_path(tmp_path / "resumed.pt"))["step"] == 3
    pretrain(config, tiny_store, tmp_path / "resumed.pt", resume=True)
    a = load_checkpoint(tmp_path / "straight.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed.pt")["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())
