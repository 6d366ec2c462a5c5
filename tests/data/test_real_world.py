"""Real-world media through `stica preprocess`: a folder like a user's downloads, where content,
not the extension, decides and no decodable video may be lost.

Every file is real and written here with PyAV (its FFmpeg build encodes all of these codecs and
containers) except the Theora .ogv: PyAV has no Theora encoder, so a 12 kB file made once with
FFmpeg + libtheora is committed (see ``fixtures.THEORA_OGV``). RealVideo 1/2 is written with
PyAV's rv10/rv20 encoders; RealVideo 3/4 (rv30/rv40) can only be decoded, not written.

One store is built for the whole folder; each case is then its own test.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from stica.cli import main
from stica.config import PreprocessConfig
from stica.data.clips import ClipReader
from stica.data.preprocess import preprocess
from stica.data.store import Store
from tests import fixtures as fx

FPS = 10.0  # stored frame rate: a 1 s input gives 10 frames


def _stored(seconds: float, audio: bool = True, note: str = "", tolerance: float = 0.15):
    return {"status": "stored", "seconds": seconds, "audio": audio, "note": note, "tol": tolerance}


def _skipped(reason: str):
    return {"status": "skipped", "reason": reason}


def _rejected(reason: str):
    return {"status": "rejected", "reason": reason}


def _text(text: str):
    return lambda p: p.write_text(text)


def _copy(src: Path):
    return lambda p: shutil.copyfile(src, p)


def _misnamed(p: Path):
    # a real mp4 whose name says otherwise
    fx.write_video(p.with_name("tmp.mp4"), seconds=1.0, seed=5).rename(p)


def _mka_single_picture(p: Path):
    # cover art in Matroska loses the attached-picture flag: one MJPEG frame beside long audio
    with av.open(str(p), "w", format="matroska") as c:
        v = c.add_stream("mjpeg", rate=1)
        v.width, v.height, v.pix_fmt = 32, 32, "yuvj420p"
        a = c.add_stream("aac", rate=fx.SR)
        a.layout = "mono"
        picture = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 90, np.uint8), format="rgb24")
        picture = picture.reformat(format="yuvj420p")
        picture.pts = 0
        c.mux(v.encode(picture) + v.encode())
        fx._encode_audio(lambda f: c.mux(a.encode(f)), a.codec_context, fx.tone(1.0), fx.SR, "mono")


def _thumbnail_first_mkv(p: Path):
    # a one-picture MJPEG stream (a thumbnail, no attached-picture flag in Matroska) before
    # the real H.264 video
    with av.open(str(p), "w", format="matroska") as c:
        thumb = c.add_stream("mjpeg", rate=1)
        thumb.width, thumb.height, thumb.pix_fmt = 32, 32, "yuvj420p"
        video = c.add_stream("libx264", rate=25)
        video.height, video.width, video.pix_fmt = 48, 64, "yuv420p"
        picture = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 200, np.uint8), format="rgb24")
        picture = picture.reformat(format="yuvj420p")
        picture.pts = 0
        c.mux(thumb.encode(picture) + thumb.encode())
        for i, frame in enumerate(fx.moving_frames(25)):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            c.mux(video.encode(vf))
        c.mux(video.encode())


def _garbled(fmt, vcodec, acodec, **kw):
    return lambda p: fx.write_garbled(p, lambda q: fx.write_av(q, fmt, vcodec, acodec, **kw))


# relative path -> (writer, expectation). The keys are every file in the folder except the
# layout's sidecar (classes.json): the test checks that nothing else exists, so each file is
# accounted for here.
CASES = {
    # --- codecs and containers (the extensions the old walker did not know are marked) --------
    "codecs/vp8.webm": (
        lambda p: fx.write_av(p, "webm", "libvpx", "libopus", sample_rate=48000),
        _stored(1.0),
    ),
    "codecs/vp9.webm": (
        lambda p: fx.write_av(p, "webm", "libvpx-vp9", "libopus", sample_rate=48000),
        _stored(1.0),
    ),
    "codecs/theora.ogv": (_copy(fx.THEORA_OGV), _stored(2.1)),  # 16 empty "unchanged" packets
    "codecs/ms-mpeg4-v3.avi": (
        # the msmpeg4 encoder stamps frame 1 at 3/25 s: 27 frame slots for 25 frames
        lambda p: fx.write_av(p, "avi", "msmpeg4", "libmp3lame", sample_rate=22050),
        _stored(1.1),
    ),
    "codecs/ms-mpeg4-v2.avi": (
        lambda p: fx.write_av(p, "avi", "msmpeg4v2", "mp2", sample_rate=44100),
        _stored(1.0),
    ),
    "codecs/wmv2.wmv": (
        lambda p: fx.write_av(p, "asf", "wmv2", "wmav2", sample_rate=22050, audio_bit_rate=64000),
        _stored(1.0),
    ),
    "codecs/wmv1.asf": (  # .asf: skipped by extension before
        lambda p: fx.write_av(p, "asf", "wmv1", "wmav2", sample_rate=22050, audio_bit_rate=64000),
        _stored(1.0),
    ),
    "codecs/sorenson.flv": (
        lambda p: fx.write_av(p, "flv", "flv", "libmp3lame", sample_rate=22050),
        _stored(1.0),
    ),
    "codecs/h264.f4v": (  # .f4v: skipped by extension before
        lambda p: fx.write_av(p, "f4v", "libx264", "aac"),
        _stored(1.0),
    ),
    "codecs/realvideo1.rm": (  # .rm: skipped by extension before; audio stamped 0 throughout
        lambda p: fx.write_av(p, "rm", "rv10", "real_144", sample_rate=8000),
        _stored(1.0),
    ),
    "codecs/realvideo2.rm": (
        lambda p: fx.write_av(p, "rm", "rv20", "ac3", sample_rate=48000),
        _stored(1.0),
    ),
    "codecs/mpeg2.vob": (  # .vob: skipped by extension before
        lambda p: fx.write_av(p, "vob", "mpeg2video", "mp2", sample_rate=48000),
        _stored(1.0),
    ),
    "codecs/mpeg1.mpg": (
        lambda p: fx.write_av(p, "mpeg", "mpeg1video", "mp2", sample_rate=44100),
        _stored(1.0),
    ),
    "codecs/h263.3gp": (
        lambda p: fx.write_av(p, "3gp", "h263", "aac", size=(96, 128)),
        _stored(1.0),
    ),
    "codecs/mjpeg.mov": (
        lambda p: fx.write_av(p, "mov", "mjpeg", "pcm_s16le", pix_fmt="yuvj420p"),
        _stored(1.0),
    ),
    "codecs/flash.swf": (  # .swf: not a "video extension" before
        lambda p: fx.write_av(p, "swf", "flv", "libmp3lame", sample_rate=22050),
        _stored(1.0),
    ),
    "codecs/mpeg4.m4v": (lambda p: fx.write_av(p, "mp4", "mpeg4", "aac"), _stored(1.0)),
    "codecs/hevc.mkv": (lambda p: fx.write_av(p, "matroska", "libx265", "flac"), _stored(1.0)),
    # --- what real files do ---------------------------------------------------------------------
    "quirks/raw elementary.m1v": (  # the container says 0.0002 s: count decoded frames
        lambda p: fx.write_av(p, "mpeg1video", "mpeg1video", seconds=2.0),
        _stored(2.0, audio=False),
    ),
    "quirks/no timestamps.h264": (  # 30 fps without a single timestamp
        lambda p: fx.write_av(p, "h264", "libx264", fps=30),
        _stored(1.0, audio=False, note="no timestamps"),
    ),
    "quirks/audio switches mono 48k to stereo 44k.ts": (
        fx.write_audio_format_switch,
        _stored(2.0, note="audio format changed"),
    ),
    "quirks/concatenated.mpg": (  # timestamps restart halfway
        fx.write_concatenated_mpg,
        _stored(2.0, note="discontinuit"),
    ),
    "quirks/variable frame rate.mp4": (
        lambda p: fx.write_vfr_mp4(p, [0.0, 0.1, 0.15, 0.5, 0.55, 0.8]),
        _stored(0.9, audio=False),
    ),
    "quirks/rotated.mp4": (lambda p: fx.write_rotated_mp4(p, 90), _stored(0.5, audio=False)),
    "quirks/empty packets.nut": (fx.write_empty_packets_nut, _stored(1.0, audio=False)),
    "quirks/thumbnail stream first.mkv": (_thumbnail_first_mkv, _stored(1.0, audio=False)),
    "quirks/a folder named x.mp4/inside.mp4": (
        lambda p: fx.write_video(p, seconds=1.0, seed=4),
        _stored(1.0),
    ),
    "quirks/mp4 named .txt.txt": (_misnamed, _stored(1.0)),
    "quirks/mp4 without extension": (_misnamed, _stored(1.0)),
    # --- damaged: the damaged part is skipped, the rest kept, the manifest says so --------------
    "damaged/middle.mp4": (
        _garbled("mp4", "libx264", "aac"),
        _stored(1.0, note="damaged"),
    ),
    "damaged/middle.ts": (
        _garbled("mpegts", "libx264", "aac"),
        _stored(1.0, note="damaged"),
    ),
    "damaged/middle.avi": (  # the MS-MPEG4 decoder conceals it: nothing to report, all kept
        _garbled("avi", "msmpeg4", "libmp3lame", sample_rate=22050),
        _stored(1.1),
    ),
    "damaged/cut short.mkv": (  # 2 s written, 60% of the bytes kept: the first part plays
        lambda p: fx.write_cut(
            p, lambda q: fx.write_av(q, "matroska", "libx264", "aac", seconds=2.0)
        ),
        _stored(1.2, note="damaged: ends at", tolerance=0.25),
    ),
    "damaged/truncated.mp4": (fx.write_truncated, _rejected("cannot open")),
    "damaged/zero bytes.avi": (fx.write_zero_byte, _rejected("empty file")),
    "damaged/too short.webm": (
        lambda p: fx.write_av(p, "webm", "libvpx", seconds=0.2),
        _rejected("too short"),
    ),
    # --- not videos: listed as skipped, with what they are --------------------------------------
    "other/album.flac": (
        lambda p: fx.write_cover_art_audio(p, "flac", "flac"),
        _skipped("no video stream (audio with cover art)"),
    ),
    "other/song.mp3": (
        lambda p: fx.write_cover_art_audio(p, "mp3", "libmp3lame"),
        _skipped("no video stream (audio with cover art)"),
    ),
    "other/cover in matroska.mka": (_mka_single_picture, _skipped("still image")),
    "other/voice.m4a": (fx.write_audio_only_mp4, _skipped("no video stream (audio only)")),
    "other/notes.txt": (_text("shopping list\n"), _skipped("not a media file")),
    "other/release.nfo": (_text("  *** RELEASE ***\n"), _skipped("not a media file")),
    "other/subtitles.srt": (
        _text("1\n00:00:01,000 --> 00:00:02,000\nHello\n\n"),
        _skipped("not a media file"),
    ),
    "other/thumbnail.jpg": (
        lambda p: av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8)).to_image().save(p),
        _skipped("still image"),
    ),
    "other/.DS_Store": (lambda p: p.write_bytes(b"\0\0\0\1Bud1"), _skipped("hidden file")),
    "other/.cache": (lambda p: fx.write_video(p / "x.mp4"), _skipped("hidden folder")),
    "README.md": (_text("# my videos\n"), _skipped("not a media file")),
    # --- a video the layout cannot place is rejected with the layout's reason -------------------
    "stray video.mp4": (lambda p: fx.write_video(p, seconds=1.0), _rejected("not inside a class")),
}


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    root = tmp_path_factory.mktemp("downloads")
    for rel, (write, _) in CASES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    (root / "classes.json").write_text("{}\n")  # the generic layout's sidecar (stica synth)
    out = root.parent / "downloads.store"
    cfg = PreprocessConfig(fps=FPS, short_side=32, videos_per_shard=8, workers=0)
    result = preprocess(root, out, cfg, progress=False)
    return root, Store(out), result


def _listing(root: Path) -> set[str]:
    """Every regular file under ``root``, and hidden folders as one entry (not searched)."""
    found = set()
    for folder, dirs, files in os.walk(root):
        rel = Path(folder).relative_to(root)
        for d in [d for d in dirs if d.startswith(".")]:
            found.add((rel / d).as_posix())
            dirs.remove(d)
        found.update((rel / f).as_posix() for f in files)
    return found


def test_every_file_is_stored_rejected_or_skipped_once(downloads):
    root, store, result = downloads
    stored = {r.path for r in store.records}
    rejected, skipped = dict(store.rejected), dict(store.skipped)
    assert not stored & set(rejected) and not stored & set(skipped)
    assert not set(rejected) & set(skipped)
    # everything on disk is listed somewhere, except the layout's own sidecar
    assert _listing(root) - {"classes.json"} == set(CASES)
    assert stored | set(rejected) | set(skipped) == set(CASES)
    assert (result.stored, result.rejected, result.skipped) == (
        len(stored),
        len(rejected),
        len(skipped),
    )


@pytest.mark.parametrize("rel", sorted(CASES))
def test_case(downloads, rel):
    _, store, _ = downloads
    expect = CASES[rel][1]
    if expect["status"] == "stored":
        record = next((r for r in store.records if r.path == rel), None)
        reasons = dict(store.rejected) | dict(store.skipped)
        assert record is not None, f"{rel} lost: {reasons.get(rel)}"
        assert abs(record.duration - expect["seconds"]) <= expect["tol"], record
        assert record.num_frames == round(record.duration * FPS)
        assert record.has_audio == expect["audio"], record
        if expect["note"]:
            assert any(expect["note"] in n for n in record.notes), record.notes
    else:
        listed = dict(store.rejected if expect["status"] == "rejected" else store.skipped)
        assert rel in listed, (rel, expect)
        assert listed[rel].startswith(expect["reason"]) and "\n" not in listed[rel]


def test_stored_frames_and_audio_are_real(downloads):
    """A sample of the odd inputs, read back: moving content, audio through the whole clip."""
    _, store, _ = downloads
    reader = ClipReader(store.root)
    for rel in ("codecs/realvideo1.rm", "quirks/concatenated.mpg", "codecs/theora.ogv"):
        rec = next(r for r in store.records if r.path == rel)
        clip = reader.read(rec.id, 0.0, rec.num_frames)
        frames = clip.frames.astype(float)  # (T, H, W, 3)
        assert frames.std(axis=0).mean() > 1, rel  # not one frozen picture
        audio = clip.audio.astype(float)
        quarters = np.array_split(np.abs(audio), 4)
        assert min(q.mean() for q in quarters) > 100, (rel, [q.mean() for q in quarters])
    # the switch from mono 48 kHz 440 Hz to stereo 44.1 kHz 880 Hz: both halves are there
    rec = next(r for r in store.records if r.path.startswith("quirks/audio switches"))
    audio = reader.read(rec.id, 0.0, rec.num_frames).audio.astype(float)
    sr = store.meta.sample_rate
    crossings = lambda x: np.count_nonzero(np.diff(np.sign(x)) != 0) / (x.size / sr) / 2  # noqa: E731
    first, second = audio[: audio.size // 2 - sr // 10], audio[audio.size // 2 + sr // 10 :]
    assert abs(crossings(first) - 440) < 30 and abs(crossings(second) - 880) < 60


def test_container_durations_are_not_trusted(downloads):
    root, store, _ = downloads
    with av.open(str(root / "quirks/raw elementary.m1v")) as c:
        assert c.duration is None or c.duration / 1e6 < 0.1  # what the container claims
    assert store.get("quirks/raw elementary").duration == pytest.approx(2.0, abs=0.15)


def test_summary_and_info_count_by_reason(downloads, capsys):
    _, store, result = downloads
    line = result.summary_line()
    assert f"skipped {result.skipped}" in line and "not a media file 4" in line
    assert "no video stream 3" in line and "too short 1" in line
    with pytest.raises(SystemExit) as e:
        main(["info", str(store.root), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert e.value.code == 0
    assert summary["skipped"] == result.skipped and summary["rejected"] == result.rejected
    assert summary["skipped_by_reason"]["not a media file"] == 4
    assert summary["rejected_by_reason"] == {
        "cannot open": 1,
        "empty file": 1,
        "not inside a class folder": 1,
        "too short": 1,
    }
    assert summary["damaged"] >= 2
    with pytest.raises(SystemExit):
        main(["info", str(store.root)])
    text = dict(line.split(None, 1) for line in capsys.readouterr().out.strip().splitlines())
    assert "not a media file 4" in text["skipped_by_reason"]
