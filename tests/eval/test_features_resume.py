"""extract-features' partial folder (issue 9): each finished chunk is written once as its own file,
and a stopped run resumes from those files, on a real tiny store and checkpoint.

A run is stopped in-process by letting the real ``_save_chunk`` write N chunks and raising before
the next (where a kill could land); the SIGKILL of a real process is in
test_extract_and_audio_eval.py."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from stica.config import load_section
from stica.eval import features
from stica.eval.features import extract_features, partial_path
from stica.eval.features_io import read_features

CHUNK = 6  # the tiny store's 24 videos: chunks from videos 0, 6, 12, 18


class Stopped(Exception):
    pass


@pytest.fixture(scope="module")
def configs(tiny_params_file):
    config = dataclasses.replace(load_section("features", tiny_params_file), chunk_videos=CHUNK)
    return config, load_section("pretrain", tiny_params_file)


@pytest.fixture(scope="module")
def reference(tiny_store, tiny_checkpoint, configs, tmp_path_factory):
    out = tmp_path_factory.mktemp("features") / "straight.h5"
    extract_features(tiny_store, str(tiny_checkpoint), *configs, out)
    return read_features(out)


@pytest.fixture
def saves(monkeypatch):
    """The first video of every chunk the run saves, in order; ``saves.stop_after = n`` stops
    the run (no output) once n chunks are on disk."""

    class Saves(list):
        stop_after: int | None = None

    saved = Saves()
    real = features._save_chunk

    def save(folder, first, *arrays):
        if saved.stop_after is not None and len(saved) == saved.stop_after:
            raise Stopped
        real(folder, first, *arrays)
        saved.append(first)

    monkeypatch.setattr(features, "_save_chunk", save)
    return saved


def _run(store, ckpt, configs, out):
    extract_features(store, str(ckpt), *configs, out)
    return read_features(out)


def _stop_after(chunks, saves, store, ckpt, configs, out):
    saves.stop_after = chunks
    with pytest.raises(Stopped):
        extract_features(store, str(ckpt), *configs, out)
    assert saves == [CHUNK * i for i in range(chunks)] and not out.exists()
    saves.clear()
    saves.stop_after = None


def _chunk_files(out):
    return sorted(partial_path(out).glob("chunk-*.pt"))


def _assert_same(got, want):
    np.testing.assert_array_equal(got.features, want.features)
    np.testing.assert_array_equal(got.audio_features, want.audio_features)
    np.testing.assert_array_equal(got.clip_features, want.clip_features)


def test_each_chunk_is_written_once(
    tiny_store, tiny_checkpoint, configs, reference, tmp_path, monkeypatch
):
    written = []  # every file the run writes into the partial folder, in order
    stats = []  # (inode, mtime) of the chunk files after each save
    real_write, real_save = features._write_atomic, features._save_chunk

    def write(path, fn):
        real_write(path, fn)
        written.append(path.name)

    def save(folder, first, *arrays):
        real_save(folder, first, *arrays)
        stats.append({p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()})

    monkeypatch.setattr(features, "_write_atomic", write)
    monkeypatch.setattr(features, "_save_chunk", save)
    out = tmp_path / "f.h5"
    _assert_same(_run(tiny_store, tiny_checkpoint, configs, out), reference)

    chunks = [f"chunk-{first:09d}.pt" for first in range(0, 24, CHUNK)]
    assert written == [features.FINGERPRINT, *chunks]
    for before, after in itertools.pairwise(stats):
        # a later save leaves every earlier file as it was, and adds one file
        assert {k: after[k] for k in before} == before and len(after) == len(before) + 1
    assert not partial_path(out).exists()


@pytest.mark.parametrize("damage", ["truncated", "misplaced", "stray temp file"])
def test_a_stopped_run_resumes_after_its_last_whole_chunk(
    damage, tiny_store, tiny_checkpoint, configs, reference, saves, tmp_path
):
    out = tmp_path / "f.h5"
    _stop_after(3, saves, tiny_store, tiny_checkpoint, configs, out)
    last = _chunk_files(out)[-1]
    assert last.name == "chunk-000000012.pt"
    if damage == "truncated":  # a crash mid-write: the last chunk is lost, not the run
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    elif damage == "misplaced":  # readable, but not the chunk of videos 12..17
        last.write_bytes(_chunk_files(out)[0].read_bytes())
    else:
        last.with_name(last.name + ".tmp").write_bytes(b"half a chunk")
    got = _run(tiny_store, tiny_checkpoint, configs, out)
    assert saves == ([18] if damage == "stray temp file" else [12, 18])
    _assert_same(got, reference)
    assert not partial_path(out).exists()


def test_changed_inputs_start_over(tiny_store, tiny_checkpoint, configs, saves, tmp_path):
    features_config, pretrain = configs
    out = tmp_path / "f.h5"
    _stop_after(2, saves, tiny_store, tiny_checkpoint, configs, out)
    # another batch size: another fingerprint, though the chunks' files would fit
    changed = (dataclasses.replace(features_config, batch_size=4), pretrain)
    _run(tiny_store, tiny_checkpoint, changed, out)
    assert saves == [0, 6, 12, 18]
    assert not partial_path(out).exists()


def test_an_unreadable_fingerprint_starts_over(
    tiny_store, tiny_checkpoint, configs, reference, saves, tmp_path
):
    out = tmp_path / "f.h5"
    _stop_after(2, saves, tiny_store, tiny_checkpoint, configs, out)
    (partial_path(out) / features.FINGERPRINT).write_text('{"checkpoint": ')
    _assert_same(_run(tiny_store, tiny_checkpoint, configs, out), reference)
    assert saves == [0, 6, 12, 18]


def test_a_partial_file_of_the_older_layout_starts_over(
    tiny_store, tiny_checkpoint, configs, reference, saves, tmp_path
):
    """Before the folder, one file held every finished chunk (and a temp file beside it)."""
    out = tmp_path / "f.h5"
    old = partial_path(out)
    torch.save({"fingerprint": {}, "video": [torch.zeros(6, 32)]}, old)
    old.with_name(old.name + ".tmp").write_bytes(b"half a file")
    _assert_same(_run(tiny_store, tiny_checkpoint, configs, out), reference)
    assert saves == [0, 6, 12, 18]
    assert not old.exists() and not old.with_name(old.name + ".tmp").exists()
