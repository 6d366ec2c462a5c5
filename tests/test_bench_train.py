"""`stica bench train` on the tiny profile: every strategy runs a real step; the table and JSON hold
what Table 1f needs (no timing assertions: speed is the benchmark's business, not the tests')."""

from __future__ import annotations

import json
import subprocess
import sys

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
    assert "feature-crop path" in r.stdout
