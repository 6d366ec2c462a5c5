"""The real DVC pipeline end to end on the tiny profile: `dvc repro` runs every stage, a second
`dvc repro` does nothing, and changing one finetune param reruns only finetune."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, tiny_params, write_params

STAGES = {
    "synth",
    "preprocess",
    "pretrain",
    "features_pretrained",
    "features_random",
    "finetune",
    "retrieve",
    "audio_eval",
}


def _dvc(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )


def _leaves(tree) -> list:
    if isinstance(tree, dict):
        return [leaf for v in tree.values() for leaf in _leaves(v)]
    return [tree]


def _ran(output: str) -> set[str]:
    return {s for s in STAGES if f"Running stage '{s}'" in output}


@pytest.mark.slow
def test_dvc_repro_end_to_end(tmp_path):
    work = tmp_path / "repo"
    work.mkdir()
    # the pipeline as committed; deps point at the package's source, copied beside it
    for name in ("dvc.yaml", "stica", "stages", "profiles"):
        src = REPO_ROOT / name
        copy = shutil.copytree if src.is_dir() else shutil.copy
        copy(src, work / name)
    write_params(work / "params.yaml", tiny_params())
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    assert _dvc(work, "init", "-q").returncode == 0
    _dvc(work, "config", "core.analytics", "false")

    first = _dvc(work, "repro")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert _ran(first.stdout) == STAGES

    names = ("retrieval", "finetune", "audio_eval", "pretrain")
    metrics = {n: json.loads((work / "metrics" / f"{n}.json").read_text()) for n in names}
    records = {
        n: json.loads((work / "metrics" / f"{n}.provenance.json").read_text()) for n in names
    }
    for name in ("retrieval", "finetune", "audio_eval"):
        m = records[name]
        assert m["manifest_hash"] and m["environment"]["versions"]["torch"], name
    assert set(metrics["retrieval"]["recall"]) == {"R@1", "R@5"}
    assert "random_init" in metrics["retrieval"]["recall"]["R@1"]
    assert "random_init" in metrics["audio_eval"]["top1"]
    assert (work / "plots" / "retrieval_gallery.png").stat().st_size > 0
    assert (work / "models" / "pretrain.pt").exists()
    shown = _dvc(work, "metrics", "show")
    assert shown.returncode == 0 and "retrieval.json" in shown.stdout
    assert "provenance" not in shown.stdout and "environment" not in shown.stdout
    # one screen: the metrics are numbers only, a handful per file
    shown = _dvc(work, "metrics", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    leaves = {n: _leaves(json.loads((work / "metrics" / f"{n}.json").read_text())) for n in names}
    for name, values in leaves.items():
        assert values and all(v is None or isinstance(v, int | float) for v in values), name
    assert sum(len(v) for v in leaves.values()) <= 30, {n: len(v) for n, v in leaves.items()}

    second = _dvc(work, "repro")
    assert second.returncode == 0
    assert _ran(second.stdout) == set(), second.stdout

    params = yaml.safe_load((work / "params.yaml").read_text())
    params["finetune"]["lr"] = params["finetune"]["lr"] / 2
    write_params(work / "params.yaml", params)
    third = _dvc(work, "repro")
    assert third.returncode == 0, third.stdout[-3000:]
    assert _ran(third.stdout) == {"finetune"}
