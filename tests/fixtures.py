"""Helpers that write tiny real media files and dataset layouts for tests (importable module).

Everything is real: H.264/AAC mp4 and every other codec/container of ``write_av`` written with
PyAV's own encoders and muxers, PCM wav written with :mod:`wave`; the one exception is a 12 kB
Theora .ogv (``THEORA_OGV``), which PyAV can decode but not encode. Sizes are tiny so that a test
folder of a few dozen files is written in about a second.
"""

from __future__ import annotations

import csv
import json
import os
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from stica.data.encode import write_mp4

SR = 24000
FPS = 30


# ------------------------------------------------------------------------------------------------
# Content
# ------------------------------------------------------------------------------------------------


def moving_frames(num_frames: int, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A bright square moving over a coloured background; frame i has mean red level ~ i.

    Shape:
        returns (num_frames, height, width, 3) uint8
    """
    rng = np.random.default_rng(seed)
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    frames[..., 1:] = rng.integers(0, 100, size=3)[1:]
    side = max(2, min(height, width) // 4)
    for i in range(num_frames):
        frames[i, ..., 0] = (i * 8) % 200
        y = (i * 3) % max(1, height - side)
        x = (i * 5) % max(1, width - side)
        frames[i, y : y + side, x : x + side] = 255
    return frames


def tone(
    seconds: float, sample_rate: int = SR, freq: float = 440.0, amp: float = 0.3
) -> np.ndarray:
    """Shape: returns (round(seconds * sample_rate),) float32 in [-1, 1]."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_video(
    path: str | Path,
    seconds: float = 0.5,
    size: tuple[int, int] = (48, 64),
    fps: int = FPS,
    audio: bool = True,
    sample_rate: int = SR,
    seed: int = 0,
) -> Path:
    """A real H.264 mp4 (plus mono AAC when ``audio``) of ``seconds`` at ``fps``; size (H, W)."""
    frames = moving_frames(max(1, round(seconds * fps)), size[0], size[1], seed)
    sound = tone(seconds, sample_rate, freq=220 + 40 * (seed % 10)) if audio else None
    return write_mp4(path, frames, sound, fps=fps, sample_rate=sample_rate)


def write_audio_only_mp4(path: str | Path, seconds: float = 0.5, sample_rate: int = SR) -> Path:
    return write_mp4(path, None, tone(seconds, sample_rate), sample_rate=sample_rate)


def write_wav(path: str | Path, seconds: float = 0.5, sample_rate: int = 16000, seed: int = 0):
    """A 16-bit PCM mono wav (ESC-50 and DCASE inputs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (tone(seconds, sample_rate, freq=300 + 50 * (seed % 10)) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return path


def write_rotated_mp4(path: str | Path, degrees: int, size=(48, 64), seconds=0.5) -> Path:
    """A landscape-coded mp4 with a display-matrix rotation (phone portrait videos).

    The top-left quarter of every coded frame is white, the rest black.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    frame = np.zeros((h, w, 3), np.uint8)
    frame[: h // 2, : w // 2] = 255
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.height, s.width, s.pix_fmt = h, w, "yuv420p"
        s.set_display_rotation(degrees)
        for i in range(round(seconds * FPS)):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_odd_size_mkv(path: str | Path, size=(95, 127), seconds: float = 0.5) -> Path:
    """Odd frame sizes cannot be 4:2:0 H.264; lossless FFV1 4:4:4 in Matroska stores them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=FPS)
        s.height, s.width, s.pix_fmt = size[0], size[1], "yuv444p"
        for i, frame in enumerate(moving_frames(round(seconds * FPS), *size)):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_vfr_mp4(path: str | Path, times: list[float], size=(32, 32)) -> Path:
    """Variable frame rate: frame k is shown from ``times[k]`` and has grey level 20 * (k + 1)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=1000)
        s.codec_context.time_base = Fraction(1, 1000)
        s.height, s.width, s.pix_fmt = size[0], size[1], "yuv420p"
        s.options = {"crf": "10"}
        for k, t in enumerate(times):
            vf = av.VideoFrame.from_ndarray(
                np.full((*size, 3), 20 * (k + 1), np.uint8), format="rgb24"
            )
            vf.pts = round(t * 1000)
            vf.time_base = Fraction(1, 1000)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_flash_video(
    path: str | Path, flash_frames: list[int], seconds: float = 3.0, fps: int = FPS
) -> Path:
    """Dark video with white flash frames at ``flash_frames`` and a click in the audio at the
    same instants (start of each flash frame)."""
    n = round(seconds * fps)
    frames = np.full((n, 48, 64, 3), 20, np.uint8)
    audio = np.zeros(round(seconds * SR), np.float32)
    click = np.hanning(64).astype(np.float32) * 0.9  # short, centred 32 samples after its start
    for f in flash_frames:
        frames[f] = 255
        s = round(f / fps * SR)
        audio[s : s + click.size] = click[: audio.size - s]
    return write_mp4(path, frames, audio, fps=fps)


# ------------------------------------------------------------------------------------------------
# Real-world codecs, containers and quirks (all written with PyAV's own encoders and muxers)
# ------------------------------------------------------------------------------------------------

# A Theora/Vorbis .ogv (PyAV's FFmpeg build has a Theora decoder but no encoder): 0.5 s of motion
# at 10 fps, then 16 empty "frame unchanged" packets, as libtheora writes for a still scene.
# Made once with FFmpeg 5.1 + libtheora: ffmpeg -f lavfi -i testsrc=size=64x48:rate=10:duration=0.5
# -f lavfi -i sine=frequency=440:sample_rate=22050:duration=3 -vf tpad=stop_mode=clone:stop=25
# -c:v libtheora -q:v 4 -g 250 -c:a libvorbis -ac 1 -q:a 0 -fflags +bitexact theora_vorbis.ogv
THEORA_OGV = Path(__file__).parent / "data" / "media" / "theora_vorbis.ogv"


def _encode_audio(encode, ctx, samples: np.ndarray, sample_rate: int, layout: str, t0=0.0):
    """Feed ``samples`` (S,) float in [-1, 1] to the audio encoder ``ctx`` in frames of its
    frame size (converted to its sample format and ``layout``); ``encode(frame)`` muxes."""
    resampler = av.AudioResampler(format=ctx.format.name, layout=layout, rate=sample_rate)
    src = av.AudioFrame.from_ndarray(
        np.asarray(samples, np.float32)[None, :], format="flt", layout="mono"
    )
    src.sample_rate, src.pts, src.time_base = sample_rate, 0, Fraction(1, sample_rate)
    fifo = av.AudioFifo()
    for frame in resampler.resample(src) + resampler.resample(None):
        frame.pts = None
        fifo.write(frame)
    n = ctx.frame_size or 1024
    start = round(t0 * sample_rate)
    while (frame := fifo.read(n)) is not None:
        frame.pts, frame.time_base = start, Fraction(1, sample_rate)
        start += frame.samples
        encode(frame)
    encode(None)


def write_av(
    path: str | Path,
    fmt: str,
    vcodec: str | None,
    acodec: str | None = None,
    seconds: float = 1.0,
    size: tuple[int, int] = (48, 64),
    fps: int = 25,
    pix_fmt: str = "yuv420p",
    sample_rate: int = SR,
    layout: str = "mono",
    audio_bit_rate: int | None = None,
    seed: int = 0,
) -> Path:
    """A real file in container ``fmt`` with ``vcodec`` video (moving square) and/or ``acodec``
    audio (a tone) of ``seconds``; size (H, W)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as c:
        vs = as_ = None
        if vcodec:
            vs = c.add_stream(vcodec, rate=fps)
            vs.height, vs.width, vs.pix_fmt = size[0], size[1], pix_fmt
        if acodec:
            as_ = c.add_stream(acodec, rate=sample_rate)
            as_.layout = layout
            if audio_bit_rate:
                as_.bit_rate = audio_bit_rate
        if vs is not None:
            for i, frame in enumerate(moving_frames(round(seconds * fps), *size, seed=seed)):
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
                vf.pts = i
                for p in vs.encode(vf):
                    c.mux(p)
            for p in vs.encode():
                c.mux(p)
        if as_ is not None:
            mux = lambda f: c.mux(as_.encode(f))  # noqa: E731
            _encode_audio(mux, as_.codec_context, tone(seconds, sample_rate), sample_rate, layout)
    return path


def write_audio_format_switch(path: str | Path, seconds: float = 2.0) -> Path:
    """MPEG-TS (mpeg2video + MP2) whose audio switches halfway from mono 48 kHz to stereo
    44.1 kHz, as broadcast captures do; the second half's tone is 880 Hz, the first's 440 Hz."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    half = seconds / 2
    with av.open(str(path), "w", format="mpegts") as c:
        vs = c.add_stream("mpeg2video", rate=FPS)
        vs.height, vs.width, vs.pix_fmt = 48, 64, "yuv420p"
        a = c.add_stream("mp2", rate=48000)
        a.layout = "mono"
        for i, frame in enumerate(moving_frames(round(seconds * FPS))):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            for p in vs.encode(vf):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        _encode_audio(
            lambda f: c.mux(a.encode(f)), a.codec_context, tone(half, 48000), 48000, "mono"
        )
        # a second encoder's packets, muxed into the same stream from ``half`` seconds on
        second = av.CodecContext.create("mp2", "w")
        second.sample_rate, second.layout, second.format = 44100, "stereo", "s16"
        second.time_base = Fraction(1, 44100)
        second.open()

        def mux_second(frame):
            for p in second.encode(frame):
                p.stream = a
                p.pts = p.dts = round(float(p.pts * Fraction(1, 44100)) / a.time_base)
                p.time_base = a.time_base
                c.mux(p)

        _encode_audio(mux_second, second, tone(half, 44100, freq=880.0), 44100, "stereo", half)
    return path


def write_empty_packets_nut(path: str | Path, moving: float = 0.4, still: float = 0.6) -> Path:
    """``moving`` s of video then empty packets (the "frame unchanged" of Theora and AVI
    capture tools) for ``still`` s, in NUT: FFmpeg's muxers for Ogg/AVI/Matroska drop empty
    packets written through PyAV, NUT keeps them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="nut") as c:
        vs = c.add_stream("mpeg4", rate=FPS)
        vs.height, vs.width, vs.pix_fmt = 48, 64, "yuv420p"
        n = round(moving * FPS)
        for i, frame in enumerate(moving_frames(n)):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            for p in vs.encode(vf):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        for i in range(n, n + round(still * FPS)):
            empty = av.Packet(b"")
            empty.stream, empty.time_base = vs, Fraction(1, FPS)
            empty.pts = empty.dts = i
            empty.duration = 1
            c.mux(empty)
    return path


def write_cover_art_audio(path: str | Path, fmt: str, acodec: str, seconds: float = 1.0) -> Path:
    """An audio file with an attached picture (album art): a one-frame MJPEG "video" stream."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as c:
        a = c.add_stream(acodec, rate=SR)
        a.layout = "mono"
        v = c.add_stream("mjpeg", rate=1)
        v.width, v.height, v.pix_fmt = 32, 32, "yuvj420p"
        v.disposition = av.stream.Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 200, np.uint8), format="rgb24")
        picture.pts = 0
        for p in v.encode(picture.reformat(format="yuvj420p")):
            c.mux(p)
        for p in v.encode():
            c.mux(p)
        _encode_audio(lambda f: c.mux(a.encode(f)), a.codec_context, tone(seconds), SR, "mono")
    return path


def write_concatenated_mpg(path: str | Path, seconds=(1.0, 1.0)) -> Path:
    """MPEG-PS files joined byte by byte (``cat a.mpg b.mpg``, DVD .vob cells): the timestamps
    restart at each joint."""
    path = Path(path)
    parts = [
        write_av(
            path.with_name(f"{path.stem}.part{k}.mpg"),
            "mpeg",
            "mpeg1video",
            "mp2",
            seconds=s,
            sample_rate=44100,
            seed=k,
        )
        for k, s in enumerate(seconds)
    ]
    path.write_bytes(b"".join(p.read_bytes() for p in parts))
    for p in parts:
        p.unlink()
    return path


def write_cut(path: str | Path, writer, keep: float = 0.6) -> Path:
    """A real file written by ``writer(path)`` cut to ``keep`` of its bytes (an interrupted
    download of a format whose header comes first: the first part still plays)."""
    path = Path(writer(path))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_garbled(path: str | Path, writer, seed: int = 0, span=(0.4, 0.55)) -> Path:
    """A real file written by ``writer(path)`` with bytes ``span`` (fractions) overwritten by
    random bytes: damaged packets in the middle, intact ones around them."""
    path = Path(writer(path))
    data = bytearray(path.read_bytes())
    a, b = int(len(data) * span[0]), int(len(data) * span[1])
    data[a:b] = np.random.default_rng(seed).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


# ------------------------------------------------------------------------------------------------
# Bad inputs
# ------------------------------------------------------------------------------------------------


def write_zero_byte(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_text_as_mp4(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not a video\n" * 20)
    return path


def write_truncated(path: str | Path, keep: float = 0.5, seed: int = 0) -> Path:
    """A real mp4 cut to ``keep`` of its bytes (the moov atom at the end is lost)."""
    path = write_video(path, seconds=1.0, seed=seed)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_random_middle(path: str | Path, seed: int = 0) -> Path:
    """A real mp4 whose middle third is overwritten with random bytes."""
    path = write_video(path, seconds=1.0, seed=seed)
    data = bytearray(path.read_bytes())
    a, b = len(data) // 3, 2 * len(data) // 3
    data[a:b] = np.random.default_rng(seed).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def write_symlink_loops(folder: str | Path) -> list[Path]:
    """A self-referencing file link and a folder link pointing at its own parent."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    self_link = folder / "loop.mp4"
    os.symlink(self_link.name, self_link)
    dir_link = folder / "again"
    os.symlink("..", dir_link)
    return [self_link, dir_link]


# ------------------------------------------------------------------------------------------------
# Layouts (a few tiny files each)
# ------------------------------------------------------------------------------------------------


def make_generic(root: str | Path, classes=("jump", "run"), per_class=2, split_dirs=False) -> Path:
    root = Path(root)
    for c_idx, cls in enumerate(classes):
        for i in range(per_class):
            splits = ("train", "test") if split_dirs else ("",)
            for split in splits:
                folder = root / split / cls if split else root / cls
                write_video(folder / f"{cls}_{i}.mp4", seed=c_idx * 10 + i, audio=i % 2 == 0)
    return root


def make_ucf101(root: str | Path) -> Path:
    """Two classes, 2 videos each, 2 official splits; lists in ``ucfTrainTestlist/``."""
    root = Path(root)
    classes = ["ApplyEyeMakeup", "Basketball"]
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    vids = {c: [f"{c}/v_{c}_g0{g}_c01.avi" for g in (1, 2)] for c in classes}
    for c_idx, c in enumerate(classes):
        for g, rel in enumerate(vids[c]):
            write_video((root / "UCF-101" / rel).with_suffix(".avi"), seed=c_idx * 2 + g)
    for split in (1, 2):
        train = [vids[c][(split - 1) % 2] for c in classes]
        test = [vids[c][split % 2] for c in classes]
        (lists / f"trainlist0{split}.txt").write_text(
            "".join(f"{v} {classes.index(v.split('/')[0]) + 1}\n" for v in train)
        )
        (lists / f"testlist0{split}.txt").write_text("".join(f"{v}\n" for v in test))
    return root


def make_hmdb51(root: str | Path) -> Path:
    """Two classes, 3 videos each (train / test / unused) in 1 split."""
    root = Path(root)
    splits_dir = root / "testTrainMulti_7030_splits"
    splits_dir.mkdir(parents=True, exist_ok=True)
    for c_idx, cls in enumerate(["brush_hair", "cartwheel"]):
        lines = []
        for i, code in enumerate((1, 2, 0)):
            name = f"{cls}_clip_{i}.avi"
            write_video(root / cls / name, seed=c_idx * 3 + i, audio=False)
            lines.append(f"{name} {code} \n")
        (splits_dir / f"{cls}_test_split1.txt").write_text("".join(lines))
    return root


def make_kinetics(root: str | Path) -> Path:
    """train.csv + validate.csv; one video named ID_start_end in a class folder, one flat ``ID``,
    one listed but missing."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = [
        ("abseiling", "aaaaaaaaaaa", 10, 20, "train"),
        ("juggling", "bbbbbbbbbbb", 0, 10, "train"),
        ("abseiling", "ccccccccccc", 5, 15, "validate"),
        ("juggling", "missingmiss", 0, 10, "validate"),
    ]
    write_video(root / "train" / "abseiling" / "aaaaaaaaaaa_000010_000020.mp4", seed=1)
    write_video(root / "train" / "juggling" / "bbbbbbbbbbb_000000_000010.mp4", seed=2)
    write_video(root / "ccccccccccc.mp4", seed=3)
    for name, subset in (("train.csv", "train"), ("validate.csv", "validate")):
        with (root / name).open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            w.writerows(r for r in rows if r[4] == subset)
    return root


def make_esc50(root: str | Path, folds: int = 5) -> Path:
    """One wav per fold, 2 categories."""
    root = Path(root)
    (root / "meta").mkdir(parents=True, exist_ok=True)
    rows = []
    for fold in range(1, folds + 1):
        target = fold % 2
        name = f"{fold}-10000{fold}-A-{target}.wav"
        write_wav(root / "audio" / name, seed=fold, sample_rate=44100)
        rows.append([name, fold, target, ["dog", "rain"][target], "False", f"10000{fold}", "A"])
    with (root / "meta" / "esc50.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        w.writerows(rows)
    return root


def make_dcase2014(root: str | Path, classes=("bus", "park"), per_class=2) -> Path:
    root = Path(root)
    for c_idx, cls in enumerate(classes):
        for i in range(per_class):
            write_wav(root / cls / f"{cls}{i:02d}.wav", seed=c_idx * 5 + i)
    return root


# ------------------------------------------------------------------------------------------------
# Reading stores back
# ------------------------------------------------------------------------------------------------


def store_content(root: str | Path) -> dict:
    """What must be identical between two builds of a store: the lists, meta.json and every
    shard, as bytes and dataset by dataset (timing.json and logs excluded)."""
    import h5py

    root = Path(root)
    out = {name: (root / name).read_bytes() for name in ("manifest.jsonl", "rejected.jsonl")}
    if (root / "skipped.jsonl").is_file():
        out["skipped.jsonl"] = (root / "skipped.jsonl").read_bytes()
    out["meta"] = json.loads((root / "meta.json").read_text())
    for shard in sorted(root.glob("shard-*.h5")):
        out[shard.name] = shard.read_bytes()  # deterministic HDF5: byte-identical shards
        with h5py.File(shard) as f:
            for key in f:
                out[f"{shard.name}/{key}"] = f[key][()].tobytes()
    return out
