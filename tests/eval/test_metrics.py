import json

import numpy as np
import pytest

from stica.eval.metrics import baseline_block, environment, write_json


def test_environment_records_versions_and_hardware():
    env = environment()
    for key in ("python", "torch", "torchvision", "av", "faiss", "numpy", "h5py", "stica"):
        assert env["versions"][key], key
    assert env["hardware"]["cpu_count"] >= 1 and env["hardware"]["device"]


def test_baseline_block_ratio():
    block = baseline_block({"R@1": 0.6, "R@5": 0.9}, {"R@1": 0.3, "R@5": 0.0})
    assert block["R@1"] == {"pretrained": 0.6, "random_init": 0.3, "ratio": pytest.approx(2.0)}
    assert block["R@5"]["ratio"] is None
    assert baseline_block({"acc": 0.5}, None) == {"acc": {"pretrained": 0.5}}


def test_write_json_atomic_and_numpy_friendly(tmp_path):
    out = write_json(
        tmp_path / "m" / "x.json", {"a": np.float32(0.5), "b": np.arange(3), "c": float("nan")}
    )
    assert json.loads(out.read_text()) == {"a": 0.5, "b": [0, 1, 2], "c": None}
    before = out.read_text()
    with pytest.raises(TypeError):
        write_json(out, {"bad": object()})
    assert out.read_text() == before and [p.name for p in out.parent.iterdir()] == ["x.json"]


def test_write_metrics_numbers_beside_the_record(tmp_path):
    from stica.eval.metrics import provenance_path, write_metrics

    record = {
        "recall": {"R@1": {"pretrained": 0.5, "random_init": 0.25, "ratio": 2.0}},
        "mean": {"top1": np.float32(0.75), "top5": 1.0},
        "seconds": 12.5,
        "checkpoint": "models/pretrain.pt",
        "k": [1, 5],
    }
    keep = {"R@1": "recall.R@1", "top1": "mean.top1", "seconds": "seconds", "x": "absent.path"}
    out = write_metrics(tmp_path / "m.json", record, keep)
    assert json.loads(out.read_text()) == {
        "R@1": record["recall"]["R@1"],
        "top1": 0.75,
        "seconds": 12.5,
    }
    full = json.loads(provenance_path(out).read_text())
    assert provenance_path(out).name == "m.provenance.json"
    assert full["checkpoint"] == "models/pretrain.pt" and full["k"] == [1, 5]
    assert full["environment"]["versions"]["torch"]
    for bad in ("checkpoint", "k"):  # strings and lists are not metrics
        with pytest.raises(ValueError, match=bad):
            write_metrics(tmp_path / "bad.json", record, {bad: bad})
