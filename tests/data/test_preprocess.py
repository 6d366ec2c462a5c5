"""preprocess end to end on real files: bad inputs, layouts, CLI errors, kill-and-rerun."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from stica.cli import main
from stica.config import PreprocessConfig
from stica.data.encode import write_mp4
from stica.data.preprocess import preprocess
from stica.data.store import Store
from tests import fixtures as fx

REPO = Path(__file__).resolve().parents[2]


def _cfg(**kw):
    return PreprocessConfig(
        **{"fps": 30.0, "short_side": 32, "videos_per_shard": 4, "workers": 0, **kw}
    )


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """A generic-layout folder with every kind of bad input next to good ones."""
    root = tmp_path_factory.mktemp("messy")
    good = {
        "a/plain.mp4": lambda p: fx.write_video(p, seed=1),
        "a/no audio.mp4": lambda p: fx.write_video(p, seed=2, audio=False),
        "a/naïve vidéo 日本.mp4": lambda p: fx.write_video(p, seed=3),
        "a/odd.mkv": lambda p: fx.write_odd_size_mkv(p, size=(95, 127)),
        "b/portrait.mp4": lambda p: fx.write_video(p, size=(64, 48), seed=4),
        "b/rotated.mp4": lambda p: fx.write_rotated_mp4(p, 90),
        "b/4k.mp4": lambda p: write_mp4(
            p, np.full((4, 2160, 3840, 3), 90, np.uint8), None, fps=10, crf=40
        ),
    }
    bad = {
        "a/empty.mp4": (fx.write_zero_byte, "empty file"),
        "a/truncated.mp4": (fx.write_truncated, "cannot open"),
        "b/short.mp4": (lambda p: fx.write_video(p, seconds=0.2), "too short"),
    }
    not_videos = {  # skipped: content decides, not the .mp4 extension
        "a/text.mp4": (fx.write_text_as_mp4, "not a media file"),
        "b/audio only.mp4": (fx.write_audio_only_mp4, "no video stream"),
    }
    for rel, write in good.items():
        write(root / rel)
    for rel, (write, _) in {**bad, **not_videos}.items():
        write(root / rel)
    fx.write_random_middle(root / "b/garbled.mp4")
    fx.write_symlink_loops(root / "b")
    locked = root / "c" / "locked"
    fx.write_video(locked / "hidden.mp4", seed=9)
    fx.write_video(root / "c" / "ok.mp4", seed=8)
    locked.chmod(0)
    yield root, good, bad, not_videos
    locked.chmod(0o755)


def test_bad_inputs_are_rejected_and_good_ones_kept(messy, tmp_path):
    root, good, bad, not_videos = messy
    result = preprocess(root, tmp_path / "store", _cfg(), progress=False)
    store = Store(tmp_path / "store")
    paths = {r.path for r in store.records}
    rejected, skipped = dict(store.rejected), dict(store.skipped)
    assert set(good) | {"c/ok.mp4"} <= paths
    for rel, (_, reason) in bad.items():
        assert rel in rejected and reason in rejected[rel], (rel, rejected.get(rel))
        assert "\n" not in rejected[rel]
    for rel, (_, reason) in not_videos.items():
        assert rel in skipped and reason in skipped[rel], (rel, skipped.get(rel))
    assert rejected["b/loop.mp4"] == "symlink loop"
    assert "symlink loop" in rejected["b/again"]
    # the damaged middle is skipped, the rest kept, and the manifest says so
    garbled = next(r for r in store.records if r.path == "b/garbled.mp4")
    assert garbled.num_frames >= 9 and any(n.startswith("damaged") for n in garbled.notes)
    # every input is accounted for exactly once
    assert not (paths & set(rejected)) and not (paths & set(skipped))
    assert not (set(rejected) & set(skipped))
    if os.geteuid() == 0:  # root reads chmod 000 folders: the video is simply stored
        assert "c/locked/hidden.mp4" in paths
    else:
        assert "unreadable directory" in rejected["c/locked"]
    assert result.stored == len(store) and result.rejected == len(store.rejected)
    assert result.skipped == len(store.skipped) == 2
    assert result.skipped_by_reason == {"no video stream": 1, "not a media file": 1}
    assert "skipped 2" in result.summary_line() and "too short 1" in result.summary_line()
    assert result.without_audio == sum(not r.has_audio for r in store.records) >= 3
    assert store.get("a/no audio").has_audio is False
    rec = store.get("b/rotated")
    assert rec.num_frames == 15 and rec.has_audio is False
    with h5py.File(store.root / store.get("b/4k").shard) as f:
        assert f["jpeg"].size > 0
    assert "stored" in (store.root / "preprocess.log").read_text()


def test_every_layout_preprocesses(tmp_path):
    makers = {
        "ucf101": fx.make_ucf101,
        "hmdb51": fx.make_hmdb51,
        "kinetics": fx.make_kinetics,
        "esc50": fx.make_esc50,
        "dcase2014": fx.make_dcase2014,
    }
    for layout, make in makers.items():
        make(tmp_path / layout)
        preprocess(tmp_path / layout, tmp_path / f"{layout}.store", _cfg(), progress=False)
        store = Store(tmp_path / f"{layout}.store")
        assert store.meta.layout == layout and len(store) >= 3, layout
        assert all(0 <= r.label < len(store.meta.classes) for r in store.records)
        assert all(len(r.splits) == store.meta.num_splits for r in store.records)
        audio_only = layout in ("esc50", "dcase2014")
        assert store.meta.audio_only == audio_only
        assert all((r.num_frames == 0) == audio_only for r in store.records)
    esc = Store(tmp_path / "esc50.store")
    assert esc.meta.num_splits == 5 and all(r.has_audio for r in esc.records)


def _run_cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, capsys.readouterr().err


def test_cli_errors_are_one_line(tmp_path, capsys):
    code, err = _run_cli(["preprocess", str(tmp_path / "missing"), "--out", "x"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "does not exist" in err
    code, err = _run_cli(["preprocess", str(tmp_path), "--out", "x", "--bogus"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--bogus" in err
    code, err = _run_cli(["preprocess", str(tmp_path), "--out", "x", "--set", "fps=-1"], capsys)
    assert code == 2 and "preprocess.fps" in err and "Traceback" not in err


@pytest.mark.slow
def test_kill_and_rerun_gives_the_same_store(tmp_path):
    src = tmp_path / "in"
    for i in range(30):
        fx.write_video(src / f"c{i % 3}" / f"v{i:02d}.mp4", seconds=1.0, seed=i, audio=i % 4 > 0)
    fx.write_text_as_mp4(src / "c0" / "bad.mp4")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [
        sys.executable,
        "-m",
        "stica",
        "preprocess",
        str(src),
        "--no-progress",
        "--set",
        "videos_per_shard=2",
        "--set",
        "short_side=32",
        "--workers",
        "1",
    ]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*args, "--out", str(killed)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline and len(list(killed.glob("shard-*.h5"))) < 3:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the pool worker dies too
    proc.wait()
    n_before = len(list(killed.glob("shard-*.h5")))
    assert not (killed / "meta.json").exists() and 3 <= n_before < 16

    subprocess.run([*args, "--out", str(killed)], env=env, check=True, capture_output=True)
    clean = tmp_path / "clean"
    subprocess.run([*args, "--out", str(clean)], env=env, check=True, capture_output=True)
    timing = json.loads((killed / "timing.json").read_text())
    assert timing["shards_kept"] >= 3  # the rerun resumed instead of starting over
    assert fx.store_content(killed) == fx.store_content(clean)
    assert len(Store(killed)) == 30 and len(list(killed.glob("*.tmp"))) == 0


def test_rerun_skips_finished_shards_and_params_change_rebuilds(tmp_path):
    fx.make_generic(tmp_path / "in", per_class=3)
    first = preprocess(tmp_path / "in", tmp_path / "s", _cfg(videos_per_shard=2), progress=False)
    again = preprocess(tmp_path / "in", tmp_path / "s", _cfg(videos_per_shard=2), progress=False)
    assert (first.shards_built, again.shards_built, again.shards_kept) == (3, 0, 3)
    changed = preprocess(
        tmp_path / "in", tmp_path / "s", _cfg(videos_per_shard=2, fps=15.0), progress=False
    )
    assert changed.shards_built == 3 and Store(tmp_path / "s").meta.fps == 15.0


def test_rerun_rebuilds_the_shard_of_an_input_rewritten_at_the_same_path(tmp_path):
    # A regenerated demo set (dvc keeps the persisted store) reuses every path: the content counts.
    fx.make_generic(tmp_path / "in", per_class=3)
    preprocess(tmp_path / "in", tmp_path / "s", _cfg(videos_per_shard=2), progress=False)
    before = fx.store_content(tmp_path / "s")
    victim = sorted((tmp_path / "in").rglob("*.mp4"))[0]
    time.sleep(0.01)  # a distinct mtime even on coarse clocks
    fx.write_video(victim, seconds=0.8, seed=99)
    again = preprocess(tmp_path / "in", tmp_path / "s", _cfg(videos_per_shard=2), progress=False)
    assert (again.shards_built, again.shards_kept) == (1, 2)
    assert fx.store_content(tmp_path / "s") != before


def test_timeout_guard_rejects_a_slow_input(tmp_path):
    fx.write_video(tmp_path / "in" / "a" / "v.mp4", seconds=1.0)
    result = preprocess(tmp_path / "in", tmp_path / "s", _cfg(timeout=1e-4), progress=False)
    store = Store(tmp_path / "s")
    assert result.stored == 0 and "timed out" in dict(store.rejected)["a/v.mp4"]


def test_store_inside_its_input_folder_is_left_out(tmp_path):
    fx.make_generic(tmp_path, per_class=2)
    first = preprocess(tmp_path, tmp_path / "store", _cfg(), progress=False)
    again = preprocess(tmp_path, tmp_path / "store", _cfg(), progress=False)
    store = Store(tmp_path / "store")
    assert len(store) == 4 and not store.rejected and not store.skipped
    assert store.meta.classes == ("jump", "run")
    assert (first.shards_built, again.shards_built, again.shards_kept) == (1, 0, 1)
