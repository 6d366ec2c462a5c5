import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from stica.cli import cli
from stica.errors import SticaError
from stica.eval.features_io import write_features
from stica.eval.metrics import provenance_path


def _features(path, *, noise, seed=0, manifest="m" * 40, classes=4, train=8, test=3, dim=16):
    """Clustered features: small noise = well separated classes, large noise = near chance."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim))
    labels = np.concatenate(
        [np.repeat(np.arange(classes), train), np.repeat(np.arange(classes), test)]
    )
    x = centres[labels] + noise * rng.standard_normal((len(labels), dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    split = ["train"] * (classes * train) + ["test"] * (classes * test)
    return write_features(
        path,
        x,
        labels,
        split,
        [f"v{i:03d}" for i in range(len(labels))],
        manifest_hash=manifest,
        store="data/store",
        checkpoint="models/pretrain.pt",
        class_names=[f"class{c}" for c in range(classes)],
    )


def _invoke(args):
    return CliRunner().invoke(cli, ["retrieve", *args], catch_exceptions=True)


@pytest.mark.parametrize(
    "kargs", [["--k", "1", "5", "20"], ["--k", "1,5,20"], ["--k", "1", "--k", "5", "--k=20"]]
)
def test_retrieve_writes_metrics_with_baseline(tmp_path, kargs):
    feats = _features(tmp_path / "f.h5", noise=0.05)
    rand = _features(tmp_path / "r.h5", noise=5.0, seed=5)  # same videos, near-chance geometry
    out = tmp_path / "metrics" / "retrieval.json"
    result = _invoke([str(feats), *kargs, "--random-features", str(rand), "--out", str(out)])
    assert result.exit_code == 0, result.output
    m = json.loads(provenance_path(out).read_text())
    # dvc metrics show: the numbers only
    assert json.loads(out.read_text()) == {
        **m["recall"],
        "linear_top1": m["probes"]["video"]["linear top-1"],
    }
    assert m["k"] == [1, 5, 20]
    assert m["recall"]["R@1"]["pretrained"] == 1.0
    base = m["recall"]["R@1"]["random_init"]
    assert 0 <= base < 1.0 and m["recall"]["R@1"]["ratio"] == pytest.approx(1.0 / base)
    assert (m["num_queries"], m["num_gallery"]) == (12, 32)
    assert m["manifest_hash"] == "m" * 40
    video = m["probes"]["video"]
    assert (
        set(video) == {"kNN-1 top-1", "kNN-20 top-1", "linear top-1"} and "clip" not in m["probes"]
    )
    assert video["kNN-1 top-1"]["pretrained"] == video["linear top-1"]["pretrained"] == 1.0
    assert video["kNN-1 top-1"]["random_init"] < 1.0
    assert m["environment"]["versions"]["faiss"] and m["environment"]["hardware"]["cpu_count"]
    assert (tmp_path / "metrics" / "retrieve.log").exists()


def test_k_defaults_come_from_params(tmp_path):
    feats = _features(tmp_path / "f.h5", noise=0.05)
    params = tmp_path / "params.yaml"
    params.write_text("retrieve:\n  k: [2, 3]\n")
    out = tmp_path / "r.json"
    result = _invoke([str(feats), "--out", str(out), "--params", str(params)])
    assert result.exit_code == 0, result.output
    m = json.loads(provenance_path(out).read_text())
    assert list(m["recall"]) == ["R@2", "R@3"] and "random_init" not in m["recall"]["R@2"]


def test_bad_inputs_raise_sticaerror_and_write_nothing(tmp_path):
    feats = _features(tmp_path / "f.h5", noise=0.05)
    other = _features(tmp_path / "o.h5", noise=0.05, manifest="x" * 40)
    fewer = _features(tmp_path / "few.h5", noise=0.05, train=2)
    out = tmp_path / "out" / "r.json"
    cases = [
        ([str(feats), "--k", "33"], "larger than the gallery"),
        ([str(feats), "--random-features", str(other)], "different store"),
        ([str(feats), "--random-features", str(fewer)], "different videos"),
        ([str(tmp_path / "nope.h5")], "not found"),
    ]
    for args, message in cases:
        result = _invoke([*args, "--out", str(out)])
        assert isinstance(result.exception, SticaError), result.output
        assert message in str(result.exception)
        assert not out.exists()
    result = _invoke([str(feats), "--k", "0", "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()  # click's own range check


def test_cli_reports_one_line_and_exit_2(tmp_path, repo_root):
    """Through the real entry point: no traceback, one line on stderr, exit code 2."""
    only_train = write_features(
        tmp_path / "t.h5",
        np.eye(3, dtype=np.float32),
        [0, 1, 2],
        ["train"] * 3,
        ["a", "b", "c"],
        manifest_hash="m",
        store="s",
        checkpoint="random",
    )
    out = tmp_path / "r.json"
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    proc = subprocess.run(
        [sys.executable, "-m", "stica", "retrieve", str(only_train), "--k", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "test split is empty" in proc.stderr
    assert not out.exists()


def test_gallery_from_a_real_store(tmp_path):
    """End to end with the data store: preprocess tiny real mp4s, then the PNG gallery."""
    pytest.importorskip("stica.data.store")
    pytest.importorskip("stages.preprocess")
    from stica.data.encode import write_mp4
    from stica.data.store import Store
    from stica.eval.plots import gallery_size_px

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c, cls in enumerate(("jump", "run")):
            for i in range(3 if split == "train" else 1):
                frames = np.full((12, 48, 64, 3), 60 + 120 * c, np.uint8)
                frames += rng.integers(0, 20, frames.shape, dtype=np.uint8)
                write_mp4(tmp_path / "videos" / split / cls / f"{cls}{i}.mp4", frames, None)
    store_dir = tmp_path / "store"
    pre = CliRunner().invoke(
        cli,
        [
            "preprocess",
            str(tmp_path / "videos"),
            "--out",
            str(store_dir),
            "--workers",
            "0",
            "--no-progress",
        ],
    )
    assert pre.exit_code == 0, pre.output
    store = Store(store_dir)
    recs = list(store)
    x = np.eye(len(recs), 8, dtype=np.float32) + 0.5
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    feats = write_features(
        tmp_path / "f.h5",
        x,
        [r.label for r in recs],
        [r.splits[0] for r in recs],
        [r.id for r in recs],
        manifest_hash=store.manifest_hash(),
        store=str(store_dir),
        checkpoint="random",
        class_names=store.meta.classes,
    )
    out, png = tmp_path / "r.json", tmp_path / "gallery.png"
    result = _invoke([str(feats), "--k", "1", "5", "--out", str(out), "--gallery", str(png)])
    assert result.exit_code == 0, result.output
    from matplotlib.image import imread

    assert imread(png).shape[:2][::-1] == gallery_size_px(2, 5)
    wrong = write_features(
        tmp_path / "w.h5",
        x,
        [r.label for r in recs],
        [r.splits[0] for r in recs],
        [r.id for r in recs],
        manifest_hash="0" * 64,
        store=str(store_dir),
        checkpoint="random",
    )
    out2 = tmp_path / "r2.json"
    result = _invoke([str(wrong), "--store", str(store_dir), "--out", str(out2)])
    assert isinstance(result.exception, SticaError) and "different store" in str(result.exception)
    assert not out2.exists()
