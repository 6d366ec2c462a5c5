"""The real DVC pipeline end to end on the tiny profile: `dvc repro` runs every stage (with the
live logs), `dvc metrics show` lists only numbers, a second `dvc repro` does nothing, and
`dvc exp run --set-param` of one finetune param reruns only finetune and `dvc exp show` lists it."""

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


def _leaves(tree, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted name, value) of every leaf: the columns of `dvc metrics show`."""
    if isinstance(tree, dict):
        return [leaf for k, v in tree.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    return [(prefix[:-1], tree)]


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
    assert set(metrics["retrieval"]) == {"R@1", "R@5", "linear_top1"}
    assert "random_init" in metrics["retrieval"]["R@1"]
    assert "random_init" in metrics["audio_eval"]["top1"]
    assert (work / "plots" / "retrieval_gallery.png").stat().st_size > 0
    assert (work / "models" / "pretrain.pt").exists()
    # the live logs (DVCLive layout) of pretraining and finetuning
    live = work / "dvclive"
    assert (live / "pretrain" / "params.yaml").exists()
    steps = (live / "pretrain" / "plots" / "metrics" / "loss.tsv").read_text().splitlines()
    assert steps[0] == "step\tloss" and len(steps) == 1 + records["pretrain"]["pretrain"]["steps"]
    assert (live / "finetune" / "plots" / "metrics" / "split1" / "pretrained").is_dir()

    shown = _dvc(work, "metrics", "show")
    assert shown.returncode == 0 and "retrieval.json" in shown.stdout
    assert "provenance" not in shown.stdout and "environment" not in shown.stdout
    # one screen: every metric file DVC shows holds numbers only, and few columns in all
    shown = _dvc(work, "metrics", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    files = json.loads(shown.stdout)[""]["data"]
    assert set(files) == {f"metrics/{n}.json" for n in names} | {"dvclive/pretrain/metrics.json"}
    columns = set()
    for path, content in files.items():
        leaves = dict(_leaves(content["data"]))
        assert all(v is None or isinstance(v, int | float) for v in leaves.values()), path
        columns |= set(leaves)
    assert len(columns) <= 30, sorted(columns)

    second = _dvc(work, "repro")
    assert second.returncode == 0
    assert _ran(second.stdout) == set(), second.stdout

    # an experiment: commit the baseline, change one finetune param from the command line
    git = ["git", "-c", "user.name=stica", "-c", "user.email=stica@example.org"]
    subprocess.run(["git", "add", "-A"], cwd=work, check=True)
    subprocess.run([*git, "commit", "-qm", "baseline"], cwd=work, check=True)
    lr = yaml.safe_load((work / "params.yaml").read_text())["finetune"]["lr"] / 2
    third = _dvc(work, "exp", "run", "--name", "half-lr", "--set-param", f"finetune.lr={lr}")
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert _ran(third.stdout) == {"finetune"}
    shown = _dvc(work, "exp", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    exps = [
        rev
        for row in json.loads(shown.stdout)
        for group in row.get("experiments") or []
        for rev in group["revs"]
    ]
    (exp,) = [e for e in exps if e["name"] == "half-lr"]
    assert exp["data"]["params"]["params.yaml"]["data"]["finetune"]["lr"] == lr
    exp_metrics = exp["data"]["metrics"]
    assert exp_metrics["dvclive/pretrain/metrics.json"]["data"]["step"] >= 1
    assert "top1" in exp_metrics["metrics/finetune.json"]["data"]
