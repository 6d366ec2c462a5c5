"""`stica bench train` on the tiny profile: every strategy runs a real step; the table and JSON hold
what Table 1f needs (no timing assertions: speed is the benchmark's business, not the tests')."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stica.bench import crops_for_map, train_strategies
from stica.config import FeatureCropConfig


def test_crop_plans_scale_with_the_map():
    assert crops_for_map("best", (512, 4, 7, 7)) == FeatureCropConfig(2, 6, 4, 4, 2, 3, 1, 2)
    assert crops_for_map("full", (512, 4, 7, 7)) == FeatureCropConfig(1, 7, 0, 1, 1, 4, 0, 1)
    names = {(s.mode, s.pooling) for s in train_strategies()}
    assert len(names) == 8 and len(train_strategies()) == 12  # 6 columns x 2 poolings


def test_bench_train_cli(tiny_params_file, tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [sys.executable, "-m", "stica", "bench", "train", "--params", str(tiny_params_file)]
        + ["--batch-size", "4", "--steps", "1", "--warmup", "0", "--json-out", str(out)]
        + ["--only", "two RGB", "--only", "paper best", "--only", "multi RGB 2+1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert {row["strategy"] for row in rows} == {
        "two RGB crops",
        "feature crops (paper best)",
        "multi RGB 2+1 small",
    }
    assert len(rows) == 6  # x avg and transformer pooling
    for row in rows:
        assert row["step_s"] > 0 and row["samples_per_s"] > 0
        if row["mode"] == "two_crops":
            assert row["ratio_to_two_crops"] == 1.0
    feature = [row for row in rows if row["mode"] == "feature_crops"]
    assert all(row["vv_terms"] > 2 for row in feature)  # eq. 6 over the crops, not just L1, L2
    assert result["crop_path"]["batched_s"] > 0 and result["crop_path"]["loop_s"] > 0
    assert result["crop_path"]["batched_device_ops"] > 0
    assert "feature-crop path" in r.stdout
    # the two views' traffic: at least reading the uint8 clips and writing two float32 views
    augment = result["augment"]
    views_gb = 2 * 4 * 3 * result["num_frames"] * result["crop_size"] ** 2 * 4 / 1e9
    assert augment["two_views_s"] > 0 and augment["device_ops"] > 0
    assert augment["device_tensor_gb"] > views_gb
    assert "augmentation (two large views)" in r.stdout


def test_bench_train_only_without_the_reference_still_has_ratios(tiny_params_file, tmp_path):
    """Regression: `--only "paper best"` filtered out the two-RGB-crop step every ratio is to
    (StopIteration); it is always measured now."""
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [sys.executable, "-m", "stica", "bench", "train", "--params", str(tiny_params_file)]
        + ["--batch-size", "4", "--steps", "1", "--warmup", "0", "--json-out", str(out)]
        + ["--only", "paper best", "--no-compile"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    rows = {(row["strategy"], row["pooling"]): row for row in result["rows"]}
    assert set(rows) == {
        (name, pooling)
        for name in ("two RGB crops", "feature crops (paper best)")
        for pooling in ("avg", "transformer")
    }
    for pooling in ("avg", "transformer"):
        ref = rows["two RGB crops", pooling]
        best = rows["feature crops (paper best)", pooling]
        assert ref["ratio_to_two_crops"] == 1.0
        assert best["ratio_to_two_crops"] == best["step_s"] / ref["step_s"]
    assert result["compile"] is False and result["cudnn_autotune"] is False


def test_bench_train_pooling_filter_keeps_its_reference(tiny_params_file, tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [sys.executable, "-m", "stica", "bench", "train", "--params", str(tiny_params_file)]
        + ["--batch-size", "4", "--steps", "1", "--warmup", "0", "--json-out", str(out)]
        + ["--only", "paper best", "--pooling", "transformer", "--no-compile"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(row["strategy"], row["pooling"]) for row in rows] == [
        ("two RGB crops", "transformer"),
        ("feature crops (paper best)", "transformer"),
    ]


def test_bench_train_store_times_real_steps_end_to_end(tiny_store, tiny_params_file, tmp_path):
    out = tmp_path / "store.json"
    r = subprocess.run(
        [sys.executable, "-m", "stica", "bench", "train", "--params", str(tiny_params_file)]
        + ["--store", str(tiny_store), "--batch-size", "4", "--steps", "5", "--warmup", "1"]
        + ["--set", "workers=1", "--set", "jpeg_decode=device", "--json-out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    # 16 train videos / batch 4: 4 steps per epoch, so the 6 steps run into a second epoch
    assert result["steps"] == 5 and result["batch_size"] == 4 and result["workers"] == 1
    # the worker ships JPEG files; every step (the compute-only ones too) decodes its batch
    assert result["jpeg_decode"] == "device" and "JPEG decoded on the device" in r.stdout
    assert result["end_to_end_samples_per_s"] > 0 and result["compute_only_samples_per_s"] > 0
    assert 0 <= result["data_wait_fraction"] < 1
    assert result["end_to_end_vs_compute"] == pytest.approx(
        result["end_to_end_samples_per_s"] / result["compute_only_samples_per_s"]
    )
    assert result["peak_gpu_memory_mb"] is None  # CPU
    assert "end to end" in r.stdout and "waiting for data" in r.stdout
