import h5py
import numpy as np
import pytest

from stica.errors import SticaError
from stica.eval.features_io import (
    check_same_manifest,
    check_same_videos,
    read_features,
    write_features,
)


def _args(n=6, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return dict(
        features=x,
        labels=np.arange(n) % 2,
        split=["train"] * (n - 2) + ["test"] * 2,
        video_ids=[f"class{i % 2}/vid_{i}" for i in range(n)],
    )


def _meta(**kw):
    meta = dict(manifest_hash="h" * 40, store="data/store", checkpoint="random")
    meta.update(kw)
    return meta


def test_roundtrip_with_audio_and_attrs(tmp_path):
    a = _args()
    audio = np.arange(6 * 3, dtype=np.float32).reshape(6, 3)
    has_audio = [True, False, True, True, False, True]
    path = write_features(
        tmp_path / "sub" / "f.h5",
        **a,
        **_meta(model_config={"pooling": "avg"}, versions={"torch": "2.14.1"}),
        class_names=["circle", "square"],
        audio_features=audio,
        has_audio=has_audio,
    )
    fs = read_features(path)
    np.testing.assert_array_equal(fs.features, a["features"])
    assert fs.features.dtype == np.float32 and fs.labels.dtype == np.int64
    assert list(fs.split) == a["split"] and list(fs.video_ids) == a["video_ids"]
    np.testing.assert_array_equal(fs.audio_features, audio)
    assert fs.has_audio.tolist() == has_audio
    assert fs.model_config == {"pooling": "avg"} and fs.versions == {"torch": "2.14.1"}
    assert fs.class_names == ("circle", "square") and fs.class_name(1) == "square"
    assert fs.checkpoint == "random" and fs.manifest_hash == "h" * 40
    assert (len(fs), fs.dim, int(fs.mask("test").sum())) == (6, 4, 2)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["f.h5"]  # no temp file left


def test_bad_input_is_refused_and_nothing_written(tmp_path):
    out = tmp_path / "f.h5"
    a = _args()
    with pytest.raises(SticaError, match="L2-normalised"):
        write_features(out, **{**a, "features": a["features"] * 2}, **_meta())
    with pytest.raises(SticaError, match="'labels' has shape"):
        write_features(out, **{**a, "labels": [0, 1]}, **_meta())
    with pytest.raises(SticaError, match="'split' has value 'val'"):
        write_features(out, **{**a, "split": ["val"] * 6}, **_meta())
    with pytest.raises(SticaError, match="not unique"):
        write_features(out, **{**a, "video_ids": ["x"] * 6}, **_meta())
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    out = write_features(tmp_path / "f.h5", **_args(seed=1), **_meta())
    before = out.read_bytes()
    real = h5py.Group.create_dataset

    def disk_full(self, name, *args, **kwargs):  # fault injection into h5py, mid-file
        if name == "video_ids":
            raise OSError("No space left on device")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_features(out, **_args(seed=2), **_meta())
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["f.h5"]


def test_invalid_files_give_one_line_errors(tmp_path):
    with pytest.raises(SticaError, match="not found"):
        read_features(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(SticaError, match="junk.h5: not an HDF5"):
        read_features(junk)
    path = write_features(tmp_path / "f.h5", **_args(), **_meta())
    with h5py.File(path, "a") as f:
        del f["labels"]
    with pytest.raises(SticaError, match="f.h5: missing dataset 'labels'"):
        read_features(path)
    path = write_features(tmp_path / "g.h5", **_args(), **_meta())
    with h5py.File(path, "a") as f:
        del f["video_ids"]
        f["video_ids"] = np.array([b"a", b"b"])
    with pytest.raises(SticaError, match=r"g.h5: 'video_ids' has shape \(2,\)"):
        read_features(path)


def test_manifest_checks(tmp_path):
    a = read_features(write_features(tmp_path / "a.h5", **_args(), **_meta()))
    b = read_features(write_features(tmp_path / "b.h5", **_args(seed=3), **_meta()))
    check_same_videos(a, b)
    check_same_manifest(a, "h" * 40)
    c = read_features(write_features(tmp_path / "c.h5", **_args(), **_meta(manifest_hash="z" * 40)))
    with pytest.raises(SticaError, match="different store"):
        check_same_manifest(a, c)
    with pytest.raises(SticaError, match="different store"):
        check_same_manifest(a, "q" * 40, "store data/x")
    d = read_features(
        write_features(tmp_path / "d.h5", **{**_args(), "labels": [1] * 6}, **_meta())
    )
    with pytest.raises(SticaError, match="different videos"):
        check_same_videos(a, d)
