"""Each supported layout, from tiny real fixtures: detection, labels, splits, problems."""

import pytest

from stica.data.layouts import discover, hash_split, walk_files
from stica.errors import SticaError
from tests import fixtures as fx


def test_generic_hashed_split(tmp_path):
    fx.make_generic(tmp_path, classes=("jump", "run"), per_class=3)
    (tmp_path / "README.txt").write_text("ignored: not a media extension")
    d = discover(tmp_path, "auto", test_fraction=0.5)
    assert d.layout == "generic" and d.classes == ("jump", "run") and d.num_splits == 1
    assert [it.path for it in d.items] == sorted(it.path for it in d.items)
    assert len(d.items) == 6
    for it in d.items:
        assert it.label_name == it.path.split("/")[0]
        assert it.splits == (hash_split(it.path, 0.5),)


def test_generic_split_folders(tmp_path):
    fx.make_generic(tmp_path, per_class=1, split_dirs=True)
    d = discover(tmp_path)
    assert d.layout == "generic"
    assert {(it.path.split("/")[0], it.splits[0]) for it in d.items} == {
        ("train", "train"),
        ("test", "test"),
    }
    assert {it.label_name for it in d.items} == {"jump", "run"}


def test_ucf101(tmp_path):
    fx.make_ucf101(tmp_path)
    d = discover(tmp_path)
    assert d.layout == "ucf101" and d.num_splits == 2
    assert d.classes == ("ApplyEyeMakeup", "Basketball")
    assert len(d.items) == 4 and not d.problems
    g1 = next(it for it in d.items if it.path.endswith("v_Basketball_g01_c01.avi"))
    assert g1.path.startswith("UCF-101/") and g1.label == 1 and g1.splits == ("train", "test")


def test_hmdb51(tmp_path):
    fx.make_hmdb51(tmp_path)
    d = discover(tmp_path)
    assert d.layout == "hmdb51" and d.classes == ("brush_hair", "cartwheel")
    splits = {it.path.rsplit("_", 1)[-1]: it.splits[0] for it in d.items if "cartwheel" in it.path}
    assert splits == {"0.avi": "train", "1.avi": "test", "2.avi": ""}


def test_kinetics(tmp_path):
    fx.make_kinetics(tmp_path)
    d = discover(tmp_path)
    assert d.layout == "kinetics" and d.classes == ("abseiling", "juggling")
    got = {it.path: (it.label_name, it.splits[0]) for it in d.items}
    assert got == {
        "train/abseiling/aaaaaaaaaaa_000010_000020.mp4": ("abseiling", "train"),
        "train/juggling/bbbbbbbbbbb_000000_000010.mp4": ("juggling", "train"),
        "ccccccccccc.mp4": ("abseiling", "test"),
    }
    assert len(d.problems) == 1 and "missingmiss" in d.problems[0][0]


def test_esc50(tmp_path):
    fx.make_esc50(tmp_path)
    d = discover(tmp_path)
    assert d.layout == "esc50" and d.audio_only and d.num_splits == 5
    assert d.classes == ("dog", "rain")
    first = d.items[0]  # fold 1 is the test set of split 1 only
    assert first.path == "audio/1-100001-A-1.wav"
    assert first.splits == ("test", "train", "train", "train", "train")


def test_dcase2014(tmp_path):
    fx.make_dcase2014(tmp_path)
    d = discover(tmp_path)
    assert d.layout == "dcase2014" and d.audio_only and d.classes == ("bus", "park")
    assert len(d.items) == 4


def test_forced_layout_and_missing_folder(tmp_path):
    fx.make_dcase2014(tmp_path)
    # forced: the wavs become inputs; decoding then skips them ("no video stream")
    assert [it.path for it in discover(tmp_path, "generic").items] == [
        "bus/bus00.wav",
        "bus/bus01.wav",
        "park/park00.wav",
        "park/park01.wav",
    ]
    with pytest.raises(SticaError, match="input folder not found"):
        discover(tmp_path / "nope")


def test_symlink_loops_are_reported_not_followed_forever(tmp_path):
    fx.make_generic(tmp_path, per_class=1)
    fx.write_symlink_loops(tmp_path / "jump")
    problems = []
    files = walk_files(tmp_path, problems)
    assert files == ["jump/jump_0.mp4", "run/run_0.mp4"]
    reasons = dict(problems)
    assert reasons["jump/loop.mp4"] == "symlink loop"
    assert "symlink loop" in reasons["jump/again"]


def test_every_file_is_an_item_unplaced_sidecar_or_skipped(tmp_path):
    fx.make_ucf101(tmp_path)
    (tmp_path / "ucfTrainTestlist" / "README").write_text("split notes\n")
    (tmp_path / "UCF-101" / "Basketball" / ".DS_Store").write_bytes(b"\0")
    fx.write_video(tmp_path / "UCF-101" / "Unknown" / "v.rm")  # no such class in classInd.txt
    d = discover(tmp_path)
    assert d.sidecars == [
        "ucfTrainTestlist/classInd.txt",
        "ucfTrainTestlist/testlist01.txt",
        "ucfTrainTestlist/testlist02.txt",
        "ucfTrainTestlist/trainlist01.txt",
        "ucfTrainTestlist/trainlist02.txt",
    ]
    assert dict(d.unplaced) == {
        "ucfTrainTestlist/README": "not inside the video folder",
        "UCF-101/Unknown/v.rm": "not inside a known class folder",
    }
    assert d.skipped == [("UCF-101/Basketball/.DS_Store", "hidden file")]
    assert len(d.items) == 4 and not d.problems


def test_kinetics_prefers_the_video_over_its_thumbnail(tmp_path):
    fx.make_kinetics(tmp_path)
    thumb = tmp_path / "train" / "abseiling" / "aaaaaaaaaaa_000010_000020.jpg"
    thumb.write_bytes(b"\xff\xd8\xff")  # sorts before the .mp4 of the same name
    fx.write_video(tmp_path / "unlisted.webm")
    d = discover(tmp_path)
    assert "train/abseiling/aaaaaaaaaaa_000010_000020.mp4" in {it.path for it in d.items}
    assert dict(d.unplaced) == {
        "train/abseiling/aaaaaaaaaaa_000010_000020.jpg": "not listed in the CSV files",
        "unlisted.webm": "not listed in the CSV files",
    }
    assert d.sidecars == ["train.csv", "validate.csv"]


def test_a_store_inside_its_input_is_not_input(tmp_path):
    fx.make_generic(tmp_path, per_class=1)
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "shard-00000.h5").write_bytes(b"\x89HDF")
    (tmp_path / "classes.json").write_text("{}")  # stica synth's description: a sidecar
    d = discover(tmp_path, exclude=(tmp_path / "store",))
    assert [it.path for it in d.items] == ["jump/jump_0.mp4", "run/run_0.mp4"]
    assert d.sidecars == ["classes.json"] and not d.unplaced
