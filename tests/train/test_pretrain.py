"""Pretraining: exact resume after SIGTERM, checkpoint contents, bad params."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ruamel.yaml import YAML

from stica.eval.metrics import provenance_path
from stica.train.checkpoint import CheckpointError, load_checkpoint, load_state_strict
from stica.train.pretrain import LIVE_METRICS, resume_path
from tests.conftest import tiny_params, write_params

STICA = [sys.executable, "-m", "stica"]


def _run(args, **kw):
    return subprocess.run(STICA + args, capture_output=True, text=True, timeout=300, **kw)


def _rows(live: Path) -> int:
    """Steps in the live log (rows of its loss curve)."""
    try:
        return max(0, len((live / "plots" / "metrics" / "loss.tsv").read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


@pytest.fixture(scope="module")
def long_params(tmp_path_factory) -> Path:
    # 16 train videos / batch 8 = 2 steps per epoch; 8 epochs = 16 steps; dropout (as the paper
    # profile's head) must draw the same masks after a resume mid-epoch
    params = tiny_params(pretrain={"epochs": 8, "model": {"head_dropout": 0.3}})
    return write_params(tmp_path_factory.mktemp("p") / "params.yaml", params)


@pytest.mark.slow
def test_sigterm_then_resume_gives_the_same_weights(tiny_store, long_params, tmp_path):
    straight = tmp_path / "straight.pt"
    r = _run(["pretrain", str(tiny_store), "--out", str(straight), "--params", str(long_params)])
    assert r.returncode == 0, r.stderr

    out, live = tmp_path / "resumed.pt", tmp_path / "live"
    cmd = ["pretrain", str(tiny_store), "--out", str(out), "--params", str(long_params)]
    proc = subprocess.Popen(STICA + cmd + ["--live", str(live)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while _rows(live) < 5 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err  # stopped by the signal, mid-training
    stopped_at = _rows(live)
    assert 5 <= stopped_at < 16
    assert not out.exists() and resume_path(out).exists()
    state = load_checkpoint(resume_path(out), kind="pretrain")
    assert state["step"] == stopped_at

    r = _run(cmd + ["--resume", "--live", str(live)])
    assert r.returncode == 0, r.stderr
    assert f"resuming from {resume_path(out)}" in r.stderr
    assert not resume_path(out).exists()
    assert _rows(live) == 16  # the resumed run appended the remaining steps only
    steps = [r.split("\t")[0] for r in (live / "plots/metrics/loss.tsv").read_text().splitlines()]
    assert steps == ["step", *map(str, range(1, 17))]

    a = load_checkpoint(straight, kind="pretrain")
    b = load_checkpoint(out, kind="pretrain")
    assert a["step"] == b["step"] == 16
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_checkpoint_holds_what_later_stages_need(tiny_store, tiny_params_file, tmp_path):
    out = tmp_path / "p.pt"
    r = _run(
        ["pretrain", str(tiny_store), "--out", str(out), "--params", str(tiny_params_file)]
        + ["--metrics", str(tmp_path / "m.json"), "--live", str(tmp_path / "live")]
    )
    assert r.returncode == 0, r.stderr
    ckpt = load_checkpoint(out, kind="pretrain")
    from stica.data.store import Store
    from stica.models.stica import build_model

    assert ckpt["manifest_hash"] == Store(tiny_store).manifest_hash()
    assert ckpt["params"]["num_frames"] == 8
    assert {"torch", "torchvision", "av"} <= set(ckpt["versions"])
    model = build_model(ckpt["model_config"])
    load_state_strict(model, ckpt["model"], str(out))  # the unwrapped state dict, strictly
    assert not any(k.startswith("module.") for k in ckpt["model"])
    assert _rows(tmp_path / "live") == 4
    live = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert live["step"] == 4 and set(live) == {"step", *LIVE_METRICS}
    # YAML 1.2, as DVC reads it (dvclive writes 1e-05, which YAML 1.1 readers take for a string)
    logged = YAML(typ="safe").load((tmp_path / "live" / "params.yaml").read_text())
    assert logged == ckpt["params"]
    # the pretext diagnostic: held-out audio->video matching, trained vs its initial weights
    pretext = json.loads(provenance_path(tmp_path / "m.json").read_text())["pretext"]
    held_out = [r for r in Store(tiny_store).records if r.split == "test" and r.has_audio]
    assert pretext["clips"] == len(held_out) and pretext["chance"] == pytest.approx(
        1 / len(held_out)
    )
    for key in ("audio_to_video_top1", "video_to_audio_top1", "audio_to_video_class_top1"):
        assert 0 <= pretext[key]["pretrained"] <= 1 and 0 <= pretext[key]["random_init"] <= 1
    for key in ("audio_mean_cosine", "video_mean_cosine"):  # the collapse diagnostic
        assert -1 <= pretext[key]["pretrained"] <= 1 and -1 <= pretext[key]["random_init"] <= 1
    # a class match is a weaker requirement than an instance match
    for init in ("pretrained", "random_init"):
        instance = pretext["audio_to_video_top1"][init]
        assert pretext["audio_to_video_class_top1"][init] >= instance
    with pytest.raises(CheckpointError, match="expected .finetune."):
        load_checkpoint(out, kind="finetune")
    # throughput (issue 9): in the metrics file, with the details in the provenance record
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["samples_per_s"] > 0 and 0 <= metrics["data_wait_fraction"] < 1
    assert "peak_gpu_memory_mb" in metrics and metrics["peak_gpu_memory_mb"] is None  # CPU
    speed = json.loads(provenance_path(tmp_path / "m.json").read_text())["pretrain"]["throughput"]
    assert speed["steps"] == 4 and speed["samples"] == 4 * 8  # 2 epochs x 2 steps of batch 8
    assert speed["processes"] == 1
    assert speed["samples_per_s_per_process"] == pytest.approx(metrics["samples_per_s"])
    assert metrics["samples_per_s"] == pytest.approx(32 / speed["wall_seconds"], rel=1e-2)
    assert 0 < speed["wall_seconds"] <= metrics["seconds"]
    assert speed["compile"] is False and speed["channels_last"] is False  # auto, on the CPU
    assert "samples/s, " in r.stderr and "waiting for data" in r.stderr


def test_strict_load_names_the_mismatch(tmp_path):
    from stica.config import ModelConfig
    from stica.models.stica import build_model

    small = build_model(ModelConfig(width=4, head_hidden=16, embed_dim=8, transformer_heads=2))
    wider = build_model(ModelConfig(width=8, head_hidden=16, embed_dim=8, transformer_heads=2))
    with pytest.raises(CheckpointError, match="of another shape"):
        load_state_strict(small, wider.state_dict(), "x.pt")
    state = dict(small.state_dict())
    state.pop(next(iter(state)))
    with pytest.raises(CheckpointError, match="1 missing"):
        load_state_strict(small, state, "x.pt")


def test_non_checkpoint_files_are_refused(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a loadable stica checkpoint"):
        load_checkpoint(text)
    pickled = tmp_path / "pickle.pt"
    torch.save({"format": "stica-checkpoint/1", "obj": Path("x")}, pickled)  # needs unpickling
    with pytest.raises(CheckpointError, match="not a loadable"):
        load_checkpoint(pickled)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("bogus=1", "unknown param 'pretrain.bogus'"),
        ("batch_size=0", "pretrain.batch_size"),
        ("crops.space_medium_size=9", "'pretrain.crops.space_medium_size' = 9 is larger"),
    ],
)
def test_bad_params_are_one_line_and_exit_2(
    tiny_store, tiny_params_file, tmp_path, override, message
):
    out = tmp_path / "p.pt"
    r = _run(
        ["pretrain", str(tiny_store), "--out", str(out), "--params", str(tiny_params_file)]
        + ["--set", override]
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not out.exists()


def test_missing_store_is_exit_2(tmp_path):
    r = _run(["pretrain", str(tmp_path / "nope"), "--out", str(tmp_path / "p.pt")])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on Linux")
def test_two_process_torchrun_pretraining(tiny_store, tiny_params_file, tmp_path):
    """The multi-GPU launch path, on CPU: torchrun, 2 gloo processes, DDP, one checkpoint."""
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "stica"]
        + ["pretrain", str(tiny_store), "--out", str(out), "--params", str(tiny_params_file)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "on 2 process(es)" in r.stderr
    ckpt = load_checkpoint(out, kind="pretrain")
    assert ckpt["step"] == 4
