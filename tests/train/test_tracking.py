"""Live tracking: DVCLive and the plain writer produce the same files; resuming drops the rows
logged after the checkpoint."""

from __future__ import annotations

import json

import pytest
from ruamel.yaml import YAML

from stica.train.tracking import ENV_SWITCH, Tracker, dvclive_enabled

PARAMS = {"lr": 0.1, "weight_decay": 1e-05, "model": {"width": 4}, "milestones": (6, 10)}


def _run(folder, use_dvclive, steps=range(1, 5), resume_step=None):
    tracker = Tracker(folder, PARAMS, resume_step=resume_step, use_dvclive=use_dvclive)
    for step in steps:
        tracker.log(step, {"loss": 1.0 / step, "split1/pretrained/acc": 0.1 * step})
    tracker.close()
    return tracker


def _files(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_text()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("use_dvclive", [True, False])
def test_layout(tmp_path, use_dvclive):
    if use_dvclive:
        pytest.importorskip("dvclive")
    folder = tmp_path / "live"
    tracker = _run(folder, use_dvclive)
    assert tracker.backend == ("dvclive" if use_dvclive else "files")
    files = _files(folder)
    assert set(files) == {
        "metrics.json",
        "params.yaml",
        "plots/metrics/loss.tsv",
        "plots/metrics/split1/pretrained/acc.tsv",
    }
    assert json.loads(files["metrics.json"]) == {
        "loss": 0.25,
        "split1": {"pretrained": {"acc": pytest.approx(0.4)}},
        "step": 4,
    }
    assert files["plots/metrics/loss.tsv"].splitlines() == [
        "step\tloss",
        "1\t1.0",
        "2\t0.5",
        "3\t0.3333333333333333",
        "4\t0.25",
    ]
    assert YAML(typ="safe").load(files["params.yaml"]) == {
        "lr": 0.1,
        "weight_decay": 1e-05,
        "model": {"width": 4},
        "milestones": [6, 10],
    }


def test_both_backends_write_the_same_files(tmp_path):
    pytest.importorskip("dvclive")
    _run(tmp_path / "a", True)
    _run(tmp_path / "b", False)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert set(a) == set(b)
    for name in a:
        if name.endswith(".json"):
            assert json.loads(a[name]) == json.loads(b[name])
        elif name.endswith(".yaml"):
            assert YAML(typ="safe").load(a[name]) == YAML(typ="safe").load(b[name])
        else:
            assert a[name] == b[name], name


@pytest.mark.parametrize("use_dvclive", [True, False])
def test_resume_drops_rows_after_the_checkpoint(tmp_path, use_dvclive):
    if use_dvclive:
        pytest.importorskip("dvclive")
    folder = tmp_path / "live"
    _run(folder, use_dvclive, steps=range(1, 6))  # killed after logging step 5
    _run(folder, use_dvclive, steps=range(4, 7), resume_step=3)  # checkpoint was at step 3
    rows = (folder / "plots/metrics/loss.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows] == ["step", "1", "2", "3", "4", "5", "6"]
    assert json.loads((folder / "metrics.json").read_text())["step"] == 6
    # a fresh start (no resume) clears the previous run
    _run(folder, use_dvclive, steps=[1])
    assert (folder / "plots/metrics/loss.tsv").read_text().splitlines() == ["step\tloss", "1\t1.0"]


def test_switch_off(monkeypatch):
    monkeypatch.setenv(ENV_SWITCH, "0")
    assert not dvclive_enabled()


def test_dvclive_failing_to_start_falls_back(tmp_path, monkeypatch):
    """dvclive 3.49 raises in a git repository without commits (as `dvc repro` right after
    `git init` has it): the run goes on with the plain writer."""
    pytest.importorskip("dvclive")
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / ".dvc").mkdir()  # a DVC repo too, as dvclive looks for one
    (repo / ".dvc" / "config").write_text("")
    monkeypatch.chdir(repo)
    tracker = _run(repo / "live", True)
    assert tracker.backend == "files"
    assert json.loads((repo / "live" / "metrics.json").read_text())["step"] == 4


def test_resume_after_a_half_written_line(tmp_path):
    """SIGKILL can cut the last row short: resuming drops it and appends on a fresh line."""
    folder = tmp_path / "live"
    _run(folder, False, steps=range(1, 4))
    path = folder / "plots/metrics/loss.tsv"
    path.write_text(path.read_text() + "4\t0.2")  # no value end, no newline
    _run(folder, False, steps=range(4, 6), resume_step=3)
    rows = path.read_text().splitlines()
    assert rows == ["step\tloss", "1\t1.0", "2\t0.5", "3\t0.3333333333333333", "4\t0.25", "5\t0.2"]
