"""Decode one media file with PyAV: frames resampled to a fixed rate, audio to mono int16.

Time line: every timestamp is measured from the first decoded video frame (``t0``), so that the
audio, whose first packet may start earlier or later (AAC encoder priming, edit lists), is placed
on the same clock as the frames. Video is resampled by timestamps, which is variable-frame-rate
safe: output frame ``i`` (time ``t0 + i / fps``) is the latest decoded frame with ``pts <= t``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

# Decode errors tolerated per stream before a file is called corrupt (a few damaged packets in a
# long file are common and only cost a repeated frame).
MAX_PACKET_ERRORS = 16
TIME_EPS = 1e-6  # seconds: an output time equal to a pts up to float error belongs to that frame


class DecodeError(Exception):
    """A file that cannot be turned into frames/audio; ``str(e)`` is a one-line reason."""


@dataclass
class Decoded:
    """What :func:`decode_media` keeps of one file.

    ``frames`` holds whatever ``frame_sink`` returned per output frame (by default the
    (H, W, 3) uint8 RGB arrays); ``audio`` is (S,) int16 mono at the requested rate, spanning
    exactly ``num_frames / fps`` seconds for videos.
    """

    frames: list = field(default_factory=list)
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    duration: float = 0.0
    has_audio: bool = False
    size: tuple[int, int] = (0, 0)  # (H, W) of stored frames

    @property
    def num_frames(self) -> int:
        return len(self.frames)


def output_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(H, W) with the shorter side equal to ``short_side`` and the aspect ratio kept."""
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


def _one_line(e: BaseException) -> str:
    # FFmpeg errors carry the file name and errno in str(e); the reason alone reads better
    text = getattr(e, "strerror", None) or str(e)
    text = " ".join(str(text).split()) or e.__class__.__name__
    return text[:200]


def decode_media(
    path: str | Path,
    fps: float,
    short_side: int,
    sample_rate: int,
    max_duration: float = 0.0,
    audio_only: bool = False,
    frame_sink: Callable[[np.ndarray], object] | None = None,
) -> Decoded:
    """Decode ``path`` once: frames at ``fps`` resized to ``short_side`` (display rotation
    applied), audio resampled to ``sample_rate`` mono int16 on the same time line.

    ``audio_only`` ignores any video stream (ESC-50, DCASE): duration is then the audio's.
    ``max_duration`` > 0 keeps only the first that many seconds. Raises :class:`DecodeError`
    with a one-line reason for anything that is not decodable media.

    Shape:
        frames: num_frames items of frame_sink((H, W, 3) uint8); audio: (S,) int16 with
        S == round(num_frames / fps * sample_rate) for videos.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise DecodeError("empty file (0 bytes)")
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except DecodeError:
        raise
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:
        raise DecodeError(f"cannot open: {_one_line(e)}") from None
    with container:
        vstream = None if audio_only else next(iter(container.streams.video), None)
        astream = next(iter(container.streams.audio), None)
        if audio_only and astream is None:
            raise DecodeError("no audio stream")
        if not audio_only and vstream is None:
            raise DecodeError("no video stream")
        if audio_only:
            return _decode_audio_only(container, astream, sample_rate, max_duration)
        return _decode_video(
            container, vstream, astream, fps, short_side, sample_rate, max_duration, frame_sink
        )


class _FrameResampler:
    """Emits output frames at ``t0 + i / fps`` from decoded frames by timestamps."""

    def __init__(self, fps, short_side, limit, sink):
        self.fps, self.short_side, self.limit, self.sink = fps, short_side, limit, sink
        self.t0 = None
        self.current = None  # (time, av.VideoFrame)
        self.converted = None  # sink output of ``current`` (converted once, maybe emitted often)
        self.outputs: list = []
        self.size = (0, 0)
        self.last_gap = None

    def _convert(self, frame: av.VideoFrame):
        rotation = int(round(frame.rotation / 90.0)) % 4 if frame.rotation else 0
        h, w = frame.height, frame.width
        disp_h, disp_w = (w, h) if rotation % 2 else (h, w)
        out_h, out_w = output_size(disp_h, disp_w, self.short_side)
        store_h, store_w = (out_w, out_h) if rotation % 2 else (out_h, out_w)
        rgb = frame.reformat(
            width=store_w, height=store_h, format="rgb24", interpolation="AREA"
        ).to_ndarray()  # (H, W, 3)
        if rotation:
            # frame.rotation is counter-clockwise, as is np.rot90
            rgb = np.ascontiguousarray(np.rot90(rgb, k=rotation))
        self.size = rgb.shape[:2]
        return rgb if self.sink is None else self.sink(rgb)

    def _emit_until(self, t_end: float) -> None:
        """Emit the current frame for every output time strictly before ``t_end``."""
        while len(self.outputs) < self.limit:
            t_out = self.t0 + len(self.outputs) / self.fps
            if t_out >= t_end - TIME_EPS:
                break
            if self.converted is None:
                self.converted = self._convert(self.current[1])
            self.outputs.append(self.converted)

    def push(self, t: float, frame: av.VideoFrame) -> bool:
        """Feed a decoded frame; returns False once no more output is needed."""
        if self.t0 is None:
            self.t0 = t
        if self.current is not None:
            if t <= self.current[0]:  # out-of-order or duplicate timestamps: keep the latest
                self.current, self.converted = (self.current[0], frame), None
                return True
            self.last_gap = t - self.current[0]
            self._emit_until(t)
        self.current, self.converted = (t, frame), None
        return len(self.outputs) < self.limit

    def finish(self, frame_duration: float | None) -> None:
        if self.current is None:
            return
        gap = frame_duration or self.last_gap or 1.0 / self.fps
        end = self.current[0] + gap
        # an output time within rounding of the end still belongs to the last frame
        n_total = math.floor((end - self.t0) * self.fps + 1e-6)
        if n_total > len(self.outputs):
            self._emit_until(self.t0 + n_total / self.fps)
        if not self.outputs:  # a single very short frame still gives one output frame
            self.outputs.append(self._convert(self.current[1]))


def _frame_time(frame, fallback: float) -> float:
    if frame.pts is None or frame.time_base is None:
        return fallback
    return float(frame.pts * frame.time_base)


def _decode_video(container, vstream, astream, fps, short_side, sample_rate, max_duration, sink):
    limit = math.floor(max_duration * fps + 1e-6) if max_duration > 0 else 1 << 62
    resampler = _FrameResampler(fps, short_side, max(limit, 1), sink)
    audio_chunks: list[tuple[float, np.ndarray]] = []
    aresampler = (
        av.AudioResampler(format="s16", layout="mono", rate=sample_rate) if astream else None
    )
    errors = {"video": 0, "audio": 0}
    frame_duration = None
    want_video = True
    n_video = 0
    streams = [vstream] + ([astream] if astream is not None else [])
    try:
        for packet in container.demux(*streams):
            kind = packet.stream.type
            if kind == "video" and not want_video:
                continue
            if (
                kind == "audio"
                and not want_video
                and packet.pts is not None
                and packet.time_base is not None
                and float(packet.pts * packet.time_base) > resampler.t0 + limit / fps + 1
            ):
                break  # enough video decoded; audio beyond the kept span is not needed
            try:
                frames = packet.decode()
            except (av.FFmpegError, ValueError) as e:
                errors[kind] += 1
                if errors["video"] > MAX_PACKET_ERRORS:
                    raise DecodeError(f"corrupt video stream: {_one_line(e)}") from None
                continue
            for frame in frames:
                if kind == "video":
                    t = _frame_time(frame, n_video / fps)
                    n_video += 1
                    if frame.duration and frame.time_base is not None:
                        frame_duration = float(frame.duration * frame.time_base)
                    if want_video and not resampler.push(t, frame):
                        want_video = False
                else:
                    t = _frame_time(frame, 0.0)
                    for out in aresampler.resample(frame):
                        audio_chunks.append((t, out.to_ndarray().reshape(-1)))
                        t = None  # only the first resampled chunk of a frame carries its time
    except av.FFmpegError as e:
        if n_video == 0:
            raise DecodeError(f"cannot decode: {_one_line(e)}") from None
        # a damaged tail: keep what decoded cleanly
    if aresampler is not None:
        try:
            for out in aresampler.resample(None):
                audio_chunks.append((None, out.to_ndarray().reshape(-1)))
        except (av.FFmpegError, ValueError):
            pass
    if n_video == 0:
        raise DecodeError("no decodable video frames")
    if want_video:
        resampler.finish(frame_duration)
    decoded = Decoded(frames=resampler.outputs, size=tuple(resampler.size))
    decoded.duration = decoded.num_frames / fps
    n_samples = round(decoded.num_frames / fps * sample_rate)
    audio = _place_audio(audio_chunks, resampler.t0, sample_rate, n_samples)
    decoded.has_audio = audio is not None
    decoded.audio = audio if audio is not None else np.zeros(0, np.int16)
    return decoded


def _place_audio(chunks, t0: float, sample_rate: int, n_samples: int) -> np.ndarray | None:
    """Concatenate resampled chunks and shift them onto the video clock (``t0`` = sample 0).

    Shape:
        returns (n_samples,) int16, or None when the file has no decodable audio.
    """
    if not chunks:
        return None
    samples = np.concatenate([c for _, c in chunks]).astype(np.int16, copy=False)
    if samples.size == 0:
        return None
    first_time = next((t for t, _ in chunks if t is not None), t0)
    offset = round((first_time - t0) * sample_rate)  # > 0: audio starts after the first frame
    if offset > 0:
        samples = np.concatenate([np.zeros(offset, np.int16), samples])
    elif offset < 0:
        samples = samples[-offset:]
    out = np.zeros(n_samples, np.int16)
    n = min(n_samples, samples.size)
    out[:n] = samples[:n]
    return out


def _decode_audio_only(container, astream, sample_rate, max_duration) -> Decoded:
    aresampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
    chunks = []
    errors = 0
    limit = round(max_duration * sample_rate) if max_duration > 0 else None
    total = 0
    try:
        for packet in container.demux(astream):
            try:
                frames = packet.decode()
            except (av.FFmpegError, ValueError) as e:
                errors += 1
                if errors > MAX_PACKET_ERRORS:
                    raise DecodeError(f"corrupt audio stream: {_one_line(e)}") from None
                continue
            for frame in frames:
                for out in aresampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    chunks.append(chunk)
                    total += chunk.size
            if limit is not None and total >= limit:
                break
        for out in aresampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as e:
        if not chunks:
            raise DecodeError(f"cannot decode audio: {_one_line(e)}") from None
    if not chunks:
        raise DecodeError("no decodable audio")
    audio = np.concatenate(chunks).astype(np.int16, copy=False)
    if limit is not None:
        audio = audio[:limit]
    if audio.size == 0:
        raise DecodeError("no decodable audio")
    return Decoded(audio=audio, duration=audio.size / sample_rate, has_audio=True)
