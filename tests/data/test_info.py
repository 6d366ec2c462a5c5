"""`stica info` on a store (text and --json), unknown paths, and `stica bench loader`."""

import json

import numpy as np
import pytest

from stica.bench import bench_loader, decode_clip_direct
from stica.cli import main
from stica.config import PreprocessConfig
from stica.data.clips import ClipReader
from stica.data.preprocess import preprocess
from tests import fixtures as fx


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("info")
    fx.make_generic(tmp / "in", per_class=2, split_dirs=True)  # 8 videos, half with audio
    fx.write_zero_byte(tmp / "in" / "train" / "jump" / "empty.mp4")
    preprocess(
        tmp / "in", tmp / "store", PreprocessConfig(fps=30.0, short_side=32, workers=0), False
    )
    return tmp


def _cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_info_json_and_text(store, capsys):
    code, out, _ = _cli(["info", str(store / "store"), "--json"], capsys)
    assert code == 0
    s = json.loads(out)
    assert (s["kind"], s["layout"], s["videos"], s["train"], s["test"]) == (
        "store",
        "generic",
        8,
        4,
        4,
    )
    assert s["with_audio"] == 4 and s["rejected"] == 1 and s["fps"] == 30.0
    assert s["short_side"] == 32 and s["sample_rate"] == 24000
    assert s["total_duration_s"] == pytest.approx(8 * 0.5)
    assert s["size_bytes"] > 0 and s["params"]["short_side"] == 32
    code, out, _ = _cli(["info", str(store / "store")], capsys)
    lines = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert code == 0 and lines["videos"] == "8" and lines["rejected"] == "1"
    assert lines["layout"] == "generic" and "MiB" in lines["size_bytes"]


def test_info_unknown_paths_are_one_line_errors(store, capsys):
    code, _, err = _cli(["info", str(store / "in")], capsys)
    assert code == 2 and "not a stica artifact" in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli(["info", str(store / "nope")], capsys)
    assert code == 2 and "no such file" in err


def test_bench_loader_reads_the_same_clips(store, tmp_path, capsys):
    result = bench_loader(store / "store", store / "in", num_clips=4, clip_frames=8)
    assert result["clips"] == 4 and result["speedup"] > 0
    assert result["preprocess_video_s_per_s"] > 0
    # the baseline decodes the very frames the store holds (up to JPEG loss)
    reader = ClipReader(store / "store")
    rec = reader.store.records[0]
    frames, audio = decode_clip_direct(store / "in" / rec.path, 0.2, 8, 30.0, 32, 24000)
    clip = reader.read(rec.id, 0.2, 8)
    assert frames.shape == clip.frames.shape
    assert np.abs(frames.astype(int) - clip.frames).mean() < 3
    assert audio.shape == clip.audio.shape
    out_json = tmp_path / "bench.json"
    code, out, _ = _cli(
        ["bench", "loader", str(store / "store"), "--clips", "2", "--json-out", str(out_json)],
        capsys,
    )
    assert code == 0 and "speedup" in out and json.loads(out_json.read_text())["clips"] == 2
