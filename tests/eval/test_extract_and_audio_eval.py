"""extract-features and audio-eval on a real tiny store and a real tiny checkpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from stica.data.store import Store
from stica.eval.features import partial_path
from stica.eval.features_io import read_features
from stica.eval.metrics import provenance_path
from tests import fixtures

STICA = [sys.executable, "-m", "stica"]


def _run(args, timeout=300):
    return subprocess.run(STICA + args, capture_output=True, text=True, timeout=timeout)


def test_features_file_for_every_video(tiny_store, tiny_checkpoint, tiny_params_file, tmp_path):
    out = tmp_path / "f.h5"
    r = _run(
        ["extract-features", str(tiny_store), "--ckpt", str(tiny_checkpoint)]
        + ["--out", str(out), "--params", str(tiny_params_file)]
    )
    assert r.returncode == 0, r.stderr
    fs = read_features(out)
    store = Store(tiny_store)
    assert list(fs.video_ids) == [rec.id for rec in store.records]
    assert list(fs.labels) == [rec.label for rec in store.records]
    assert sorted(set(fs.split)) == ["test", "train"]
    assert fs.features.dtype == np.float32 and fs.dim == 32  # the small trunk: 8 x width 4
    np.testing.assert_allclose(np.linalg.norm(fs.features, axis=1), 1.0, rtol=1e-5)
    assert fs.has_audio.all() and np.all(np.linalg.norm(fs.audio_features, axis=1) > 0.99)
    # every clip's own feature, normalised; the video feature is their normalised mean
    assert fs.clip_features.shape == (len(store), 2, fs.dim)  # tiny profile: 2 clips per video
    np.testing.assert_allclose(np.linalg.norm(fs.clip_features, axis=2), 1.0, rtol=2e-3)
    assert fs.manifest_hash == store.manifest_hash() and fs.checkpoint == str(tiny_checkpoint)
    assert not partial_path(out).exists()

    # the random-init baseline has the same architecture but other features
    rand = tmp_path / "r.h5"
    r = _run(
        ["extract-features", str(tiny_store), "--ckpt", "random"]
        + ["--out", str(rand), "--params", str(tiny_params_file)]
    )
    assert r.returncode == 0, r.stderr
    other = read_features(rand)
    assert other.dim == fs.dim and not np.allclose(other.features, fs.features)

    info = _run(["info", str(out), "--json"])
    assert info.returncode == 0 and json.loads(info.stdout)["videos"] == len(store)
    info = _run(["info", str(tiny_checkpoint)])
    assert info.returncode == 0 and "pretrain checkpoint" in info.stdout


@pytest.mark.slow
def test_killed_extraction_resumes(tiny_store, tiny_checkpoint, tiny_params_file, tmp_path):
    args = ["extract-features", str(tiny_store), "--ckpt", str(tiny_checkpoint)]
    args += ["--params", str(tiny_params_file), "--set", "chunk_videos=2", "--set", "batch_size=2"]
    straight = tmp_path / "straight.h5"
    assert _run([*args, "--out", str(straight)]).returncode == 0

    out = tmp_path / "killed.h5"
    proc = subprocess.Popen(STICA + args + ["--out", str(out)], stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # killed once its first chunk is on disk (one file per finished chunk in the partial folder)
    while not _chunks(out) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _chunks(out) and not out.exists()
    r = _run([*args, "--out", str(out)])
    assert r.returncode == 0 and "resuming feature extraction at video" in r.stderr
    got, want = read_features(out), read_features(straight)
    np.testing.assert_array_equal(got.features, want.features)
    np.testing.assert_array_equal(got.audio_features, want.audio_features)
    np.testing.assert_array_equal(got.clip_features, want.clip_features)
    assert not partial_path(out).exists()


def _chunks(out):
    return list(partial_path(out).glob("chunk-*.pt"))


def test_extract_features_bad_checkpoints(tiny_store, tmp_path):
    text = tmp_path / "model.pt"
    text.write_text("not a checkpoint")
    for ckpt in (str(text), str(tmp_path / "missing.pt")):
        r = _run(
            ["extract-features", str(tiny_store), "--ckpt", ckpt, "--out", str(tmp_path / "f.h5")]
        )
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "checkpoint" in r.stderr
        assert not (tmp_path / "f.h5").exists()


def test_audio_eval_reports_both_models_and_keeps_the_trunk_frozen(
    tiny_store, tiny_checkpoint, tiny_params_file, tmp_path
):
    out = tmp_path / "audio.json"
    r = _run(
        ["audio-eval", str(tiny_store), "--ckpt", str(tiny_checkpoint), "--out", str(out)]
        + ["--params", str(tiny_params_file)]
    )
    assert r.returncode == 0, r.stderr
    m = json.loads(provenance_path(out).read_text())
    assert m["samples"] == len(Store(tiny_store))
    assert m["protocol"]["subclips"] == 2
    for model in ("pretrained", "random_init"):
        assert 0.0 <= m[model]["top1"] <= 1.0 and m[model]["trunk_unchanged"] is True
        assert set(m[model]["per_fold"]) == {"test"}
    assert m["top1"]["pretrained"] == m["pretrained"]["top1"]
    assert json.loads(out.read_text()) == {"top1": m["top1"]}  # the metric: numbers only
    assert m["manifest_hash"] == Store(tiny_store).manifest_hash()


def test_audio_eval_esc50_folds(tiny_checkpoint, tiny_params_file, tmp_path):
    """An audio-only ESC-50 store: 5 folds, each the test set in turn."""
    store = tmp_path / "esc"
    r = _run(["preprocess", str(fixtures.make_esc50(tmp_path / "esc50")), "--out", str(store)])
    assert r.returncode == 0, r.stderr
    out = tmp_path / "esc.json"
    r = _run(
        ["audio-eval", str(store), "--ckpt", str(tiny_checkpoint), "--out", str(out)]
        + ["--params", str(tiny_params_file), "--no-baseline"]
    )
    assert r.returncode == 0, r.stderr
    m = json.loads(provenance_path(out).read_text())
    assert m["protocol"]["name"] == "esc50" and m["protocol"]["subclips"] == 2  # tiny profile
    assert set(m["pretrained"]["per_fold"]) == {"1", "2", "3", "4", "5"}
    assert m["random_init"] is None
