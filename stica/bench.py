"""Benchmarks. ``bench_loader``: clips/s read from a store vs decoded straight from the mp4s."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from stica.data.clips import ClipReader
from stica.data.decode import TIME_EPS, output_size
from stica.data.store import TIMING, Store
from stica.errors import SticaError


def decode_clip_direct(
    path: str | Path, start: float, num_frames: int, fps: float, short_side: int, sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """The baseline the store replaces: seek in the mp4, decode, resample by timestamps,
    resize to ``short_side``, and decode + resample the audio of the same span.

    Shape:
        returns frames (num_frames, H, W, 3) uint8 and audio (round(num_frames / fps * sr),) int16
    """
    span = num_frames / fps
    n_samples = round(span * sample_rate)
    with av.open(str(path)) as container:
        vstream = container.streams.video[0]
        astream = next(iter(container.streams.audio), None)
        container.seek(int(start / vstream.time_base), stream=vstream, backward=True)
        resampler = (
            av.AudioResampler(format="s16", layout="mono", rate=sample_rate) if astream else None
        )
        frames: list[np.ndarray] = []
        audio: list[np.ndarray] = []
        a_start = None
        current = None
        streams = [vstream] + ([astream] if astream is not None else [])
        for packet in container.demux(*streams):
            for frame in packet.decode():
                t = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
                if packet.stream.type == "audio":
                    if t + frame.samples / frame.sample_rate < start or t > start + span:
                        continue
                    for out in resampler.resample(frame):
                        a_start = t if a_start is None else a_start
                        audio.append(out.to_ndarray().reshape(-1))
                    continue
                # emit the previous frame for every output time before this frame's time
                while current is not None and len(frames) < num_frames:
                    t_out = start + len(frames) / fps
                    if t_out >= t - TIME_EPS:
                        break
                    frames.append(current)
                if len(frames) >= num_frames:
                    break
                h, w = output_size(frame.height, frame.width, short_side)
                current = frame.reformat(
                    width=w, height=h, format="rgb24", interpolation="AREA"
                ).to_ndarray()
            if len(frames) >= num_frames and (
                astream is None or sum(a.size for a in audio) >= n_samples + sample_rate // 10
            ):
                break
        while current is not None and len(frames) < num_frames:
            frames.append(current)  # clip past the end: repeat the last frame
    out = np.zeros(n_samples, np.int16)
    if audio:
        samples = np.concatenate(audio)
        skip = max(0, round((start - a_start) * sample_rate))
        samples = samples[skip : skip + n_samples]
        out[: samples.size] = samples
    return np.stack(frames), out


def bench_loader(
    store: str | Path | Store,
    videos_dir: str | Path | None = None,
    num_clips: int = 100,
    clip_frames: int = 30,
    audio_seconds: float = 1.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Clips/s from the store (JPEG decode included) vs from the source files with PyAV (seek +
    decode + resize), on the same random (video, start) pairs, in one run; plus the
    preprocessing speed recorded by the run that built the store."""
    store = store if isinstance(store, Store) else Store(store)
    timing_path = store.root / TIMING
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    if videos_dir is None:
        videos_dir = timing.get("input_dir")
        if videos_dir is None:
            raise SticaError(f"{store.root}: no input folder recorded; pass --videos-dir")
    videos_dir = Path(videos_dir)
    records = [r for r in store.records if r.num_frames > 0]
    if not records:
        raise SticaError(f"{store.root}: no video records to benchmark")
    missing = [r.path for r in records if not (videos_dir / r.path).is_file()]
    if missing:
        raise SticaError(f"source video not found under {videos_dir}: {missing[0]}")
    fps, sr = store.meta.fps, store.meta.sample_rate
    span = clip_frames / fps
    rng = np.random.default_rng(seed)
    picks = [records[i] for i in rng.integers(0, len(records), num_clips)]
    starts = [float(rng.uniform(0, max(0.0, r.duration - span))) for r in picks]
    # snap to stored frame times so both paths read exactly the same frames
    starts = [math.floor(s * fps) / fps for s in starts]

    reader = ClipReader(store)
    t0 = time.perf_counter()
    for rec, start in zip(picks, starts, strict=True):
        clip = reader.read(rec.id, start, clip_frames)
        if not math.isclose(audio_seconds, span):
            reader.read_audio(rec.id, start, audio_seconds)
        assert clip.frames.shape[0] == clip_frames
    store_s = time.perf_counter() - t0
    reader.close()

    t0 = time.perf_counter()
    for rec, start in zip(picks, starts, strict=True):
        frames, _ = decode_clip_direct(
            videos_dir / rec.path, start, clip_frames, fps, store.meta.short_side, sr
        )
        assert frames.shape[0] == clip_frames
    mp4_s = time.perf_counter() - t0

    result = {
        "clips": num_clips,
        "clip_frames": clip_frames,
        "audio_seconds": audio_seconds,
        "short_side": store.meta.short_side,
        "videos": len(records),
        "store_clips_per_s": num_clips / store_s,
        "mp4_clips_per_s": num_clips / mp4_s,
        "speedup": mp4_s / store_s,
        "preprocess_video_s_per_s": (
            timing["video_seconds"] / timing["wall_seconds"]
            if timing.get("wall_seconds") and timing.get("shards_kept", 0) == 0
            else None
        ),
        "preprocess_workers": timing.get("workers"),
    }
    return result


def format_loader_table(result: dict[str, Any]) -> str:
    rows = [
        (
            "clips",
            f"{result['clips']} x {result['clip_frames']} frames "
            f"@ short side {result['short_side']} + {result['audio_seconds']:g} s audio",
        ),
        ("store (HDF5 + JPEG)", f"{result['store_clips_per_s']:.1f} clips/s"),
        ("mp4 (PyAV seek+decode)", f"{result['mp4_clips_per_s']:.1f} clips/s"),
        ("speedup", f"{result['speedup']:.1f}x"),
    ]
    speed = result.get("preprocess_video_s_per_s")
    rows.append(
        (
            "preprocess",
            "n/a (store was resumed)"
            if speed is None
            else f"{speed:.1f} s of video per s ({result['preprocess_workers']} workers)",
        )
    )
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
