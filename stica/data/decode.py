"""Decode one media file with PyAV: frames resampled to a fixed rate, audio to mono int16.

Time line: every timestamp is measured from the first decoded video frame (``t0``), so that the
audio, whose first packet may start earlier or later (AAC encoder priming, edit lists), is placed
on the same clock as the frames. Video is resampled by timestamps, which is variable-frame-rate
safe: output frame ``i`` (time ``t0 + i / fps``) is the latest decoded frame with ``pts <= t``.

Real files break every assumption, so nothing here trusts the container's metadata:

- the length is what decodes (raw ``.m1v`` streams report 0.1 s for a minute of video);
- frames without timestamps get times from the frame durations or the stream's rate;
- a timestamp that jumps (concatenated ``.mpg``/``.vob`` parts restart at zero, broadcast captures
  wrap) is a discontinuity: the clock is shifted so the next frame follows the previous one;
- empty packets with a timestamp (Theora and AVI "dropped"/duplicate frames) hold the previous
  frame instead of being sent to the decoder, which refuses them;
- undecodable packets are skipped and counted, a damaged tail ends the file early, and either is
  written into ``Decoded.notes`` (then the manifest) instead of losing the video;
- the audio resampler is rebuilt when the audio's format, layout or rate changes mid-stream;
- cover art (a picture attached to an audio file) and text that FFmpeg renders as ANSI art are
  not videos, and a single decoded frame is a still image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from stica.data import probe

TIME_EPS = 1e-6  # seconds: an output time equal to a pts up to float error belongs to that frame
# A frame more than this far after the previous one, or this far before it, is a timestamp
# discontinuity rather than a long still (VFR) or a reordering glitch.
MAX_FORWARD_GAP = 30.0  # seconds
MAX_BACKWARD_STEP = 0.5  # seconds
AUDIO_RESYNC = 0.1  # seconds of drift between audio timestamps and samples placed before resync
FALLBACK_RATE = 25.0  # frames/s assumed for a stream without timestamps nor a usable rate


class DecodeError(Exception):
    """A file that cannot be turned into frames/audio; ``str(e)`` is a one-line reason.

    ``skipped`` marks inputs that are not videos at all (text, audio, a still picture): they are
    listed apart from the videos that could not be stored (``rejected``).
    """

    def __init__(self, reason: str, skipped: bool = False):
        super().__init__(reason)
        self.skipped = skipped


class _StillImage(DecodeError):
    def __init__(self):
        super().__init__("still image (a single frame, not a video)", skipped=True)


@dataclass
class Decoded:
    """What :func:`decode_media` keeps of one file.

    ``frames`` holds whatever ``frame_sink`` returned per output frame (by default the
    (H, W, 3) uint8 RGB arrays); ``audio`` is (S,) int16 mono at the requested rate, spanning
    exactly ``num_frames / fps`` seconds for videos. ``notes`` are one-line remarks on what had
    to be repaired (damage, discontinuities, missing timestamps, audio format changes).
    """

    frames: list = field(default_factory=list)
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    duration: float = 0.0
    has_audio: bool = False
    size: tuple[int, int] = (0, 0)  # (H, W) of stored frames
    notes: list[str] = field(default_factory=list)

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
    container = _open(path)
    attempt = 0  # a video stream that turns out to hold one picture: try the next one
    while True:
        with container:
            vstream, astream = _streams(container, audio_only, attempt)
            if audio_only:
                return _decode_audio_only(container, astream, sample_rate, max_duration)
            more = attempt + 1 < len(probe.video_candidates(container))
            try:
                return _decode_video(
                    container,
                    vstream,
                    astream,
                    fps,
                    short_side,
                    sample_rate,
                    max_duration,
                    frame_sink,
                )
            except _StillImage:
                if not more:
                    raise
        attempt += 1
        container = _open(path)


def probe_input(path: str | Path, audio_only: bool = False) -> None:
    """Check, without decoding, that ``path`` is something preprocessing would decode (a video;
    audio for audio-only layouts); raises :class:`DecodeError` saying what it is otherwise.

    Used for files a layout cannot place: only a real video there is worth a "rejected".
    """
    with _open(Path(path)) as container:
        _streams(container, audio_only)
        name = container.format.name
        if not audio_only and (name == "image2" or name.endswith("_pipe")):
            raise DecodeError("still image (not a video)", skipped=True)


def _open(path: Path):
    """``av.open`` with one-line reasons: an empty or unreadable file is rejected, so is one
    that cannot be opened but carries a media signature (damaged); anything else was never
    media (skipped)."""
    try:
        with open(path, "rb") as fh:
            if not fh.read(1):
                raise DecodeError("empty file (0 bytes)")
    except OSError as e:
        raise DecodeError(f"cannot read: {_one_line(e)}") from None
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:
        if probe.looks_like_media(path):
            raise DecodeError(f"cannot open: {_one_line(e)}") from None
        raise DecodeError("not a media file", skipped=True) from None


def _streams(container, audio_only: bool, attempt: int = 0):
    """(video stream, audio stream) to decode (the ``attempt``-th video candidate); raises a
    skipped :class:`DecodeError` for inputs that are not videos (or not audio, for audio-only
    layouts)."""
    astream = next(iter(container.streams.audio), None)
    if audio_only:
        if astream is None:
            raise DecodeError(probe.no_audio_reason(container), skipped=True)
        return None, astream
    candidates = probe.video_candidates(container)
    if not candidates:
        raise DecodeError(probe.no_video_reason(container), skipped=True)
    vstream = candidates[attempt]
    if probe.is_text_art(vstream):
        raise DecodeError("not a media file (text that FFmpeg renders as video)", skipped=True)
    return vstream, astream


class _FrameResampler:
    """Emits output frames at ``t0 + i / fps`` from decoded frames by timestamps.

    Times passed in are the stream's; ``shift`` (changed at each discontinuity) maps them onto a
    continuous clock.
    """

    def __init__(self, fps, short_side, limit, sink, nominal_gap):
        self.fps, self.short_side, self.limit, self.sink = fps, short_side, limit, sink
        self.nominal_gap = nominal_gap  # seconds between frames by the stream's declared rate
        self.t0 = None
        self.shift = 0.0
        self.discontinuities = 0
        self.current = None  # (time, av.VideoFrame)
        self.converted = None  # sink output of ``current`` (converted once, maybe emitted often)
        self.hold_until = -math.inf  # end of the empty "repeat the last frame" packets seen
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

    def clock(self, t: float) -> float:
        """Stream time -> continuous time, starting a new segment at a discontinuity."""
        t += self.shift
        if self.current is not None:
            prev = self.current[0]
            if t > prev + MAX_FORWARD_GAP or t < prev - MAX_BACKWARD_STEP:
                step = self.last_gap or self.nominal_gap
                self.shift += prev + step - t
                self.discontinuities += 1
                t = prev + step
        return t

    def push(self, t: float, frame: av.VideoFrame) -> bool:
        """Feed a decoded frame at continuous time ``t``; False once no more output is needed."""
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

    def hold(self, t_end: float) -> None:
        """An empty packet says "the previous frame still shows until ``t_end``" (stream time)."""
        if self.current is not None:
            t_end += self.shift
            if t_end <= self.current[0] + MAX_FORWARD_GAP:
                self.hold_until = max(self.hold_until, t_end)

    def finish(self, frame_duration: float | None) -> None:
        if self.current is None:
            return
        gap = frame_duration or self.last_gap or self.nominal_gap
        end = max(self.current[0] + gap, self.hold_until)
        # an output time within rounding of the end still belongs to the last frame
        n_total = math.floor((end - self.t0) * self.fps + 1e-6)
        if n_total > len(self.outputs):
            self._emit_until(self.t0 + n_total / self.fps)
        if not self.outputs:  # a single very short frame still gives one output frame
            self.outputs.append(self._convert(self.current[1]))


class _AudioTrack:
    """Resamples decoded audio frames to mono int16 at ``sample_rate``, whatever they come as.

    The resampler is built for the first frame's format/layout/rate; a frame that differs (a
    broadcast capture switching from stereo to 5.1, damage that confuses the decoder) flushes it
    and builds a new one instead of failing the file.
    """

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate
        self.resampler = None
        self.setup = None  # (format, layout, rate) of the frames the resampler was built for
        self.changes = 0
        self.errors = 0
        self.chunks: list[tuple[float | None, np.ndarray]] = []  # (stream time or None, samples)
        self.total = 0
        self.missing = 0  # samples of silence put where timestamps showed lost audio

    def _add(self, t, frames) -> None:
        for out in frames:
            chunk = out.to_ndarray().reshape(-1)
            self.chunks.append((t, chunk))
            self.total += chunk.size
            t = None  # only the first resampled chunk of a frame carries its time

    def push(self, frame: av.AudioFrame, t: float | None) -> None:
        setup = (frame.format.name, frame.layout.name, frame.sample_rate)
        try:
            if setup != self.setup:
                if self.resampler is not None:
                    self.changes += 1
                    self._add(None, self.resampler.resample(None))
                self.resampler = av.AudioResampler(
                    format="s16", layout="mono", rate=self.sample_rate
                )
                self.setup = setup
            self._add(t, self.resampler.resample(frame))
        except (av.FFmpegError, ValueError):
            self.errors += 1
            self.resampler = self.setup = None  # start afresh with the next frame

    def flush(self) -> None:
        if self.resampler is not None:
            try:
                self._add(None, self.resampler.resample(None))
            except (av.FFmpegError, ValueError):
                self.errors += 1

    def note(self) -> str | None:
        if not self.changes:
            return None
        return f"audio format changed {self.changes}x mid-stream (resampler rebuilt)"

    def place(self, t0: float, n_samples: int) -> np.ndarray | None:
        """The audio on the video clock: sample 0 is at stream time ``t0``.

        Chunks follow one another. A timestamp is trusted only when it moves forward: where it
        says samples are missing (damaged or lost packets) by more than ``AUDIO_RESYNC``, the
        gap becomes silence so the rest stays in sync (``self.missing`` counts it); a jump past
        ``MAX_FORWARD_GAP`` or back by more than ``MAX_BACKWARD_STEP`` is a discontinuity (the
        video's are bridged the same way) and re-anchors the clock; repeated or slightly earlier
        timestamps (some muxers stamp every packet 0) are ignored.

        Shape:
            returns (n_samples,) int16, or None when the file has no decodable audio.
        """
        if not self.total:
            return None
        sr = self.sample_rate
        out = np.zeros(n_samples, np.int16)
        first_time = next((t for t, _ in self.chunks if t is not None), t0)
        pos = round((first_time - t0) * sr)  # > 0: audio starts after the first frame
        anchor = 0  # samples added to timestamp positions after a discontinuity
        last_t = None
        self.missing = 0
        for t, chunk in self.chunks:
            if t is not None and last_t is not None and t <= last_t:
                if t < last_t - MAX_BACKWARD_STEP:  # timestamps restart: keep going on
                    anchor += pos - (round((t - t0) * sr) + anchor)
                    last_t = t
            elif t is not None:
                drift = round((t - t0) * sr) + anchor - pos
                if drift > MAX_FORWARD_GAP * sr:
                    anchor -= drift
                elif drift > AUDIO_RESYNC * sr and last_t is not None:
                    self.missing += drift
                    pos += drift
                last_t = t
            lo, hi = max(pos, 0), min(pos + chunk.size, n_samples)
            if hi > lo:
                out[lo:hi] = chunk[lo - pos : hi - pos]
            pos += chunk.size
        return out


def _frame_time(frame) -> float | None:
    if frame.pts is None or frame.time_base is None:
        return None
    return float(frame.pts * frame.time_base)


def _packet_end(packet) -> float | None:
    ts = packet.pts if packet.pts is not None else packet.dts
    if ts is None or packet.time_base is None:
        return None
    return float((ts + (packet.duration or 0)) * packet.time_base)


def _nominal_rate(vstream) -> float:
    for rate in (vstream.average_rate, vstream.guessed_rate, vstream.base_rate):
        if rate and 1 <= float(rate) <= 240:
            return float(rate)
    return FALLBACK_RATE


def _decode_video(container, vstream, astream, fps, short_side, sample_rate, max_duration, sink):
    limit = math.floor(max_duration * fps + 1e-6) if max_duration > 0 else 1 << 62
    nominal_gap = 1.0 / _nominal_rate(vstream)
    resampler = _FrameResampler(fps, short_side, max(limit, 1), sink, nominal_gap)
    audio = _AudioTrack(sample_rate) if astream is not None else None
    packets = {"video": 0, "audio": 0}
    errors = {"video": 0, "audio": 0}
    flagged = 0  # packets or frames the demuxer/decoder marked corrupt but still delivered
    last_error = None
    stopped_at = None  # stream time where an unreadable tail began
    frame_duration = None
    want_video = True
    n_video = 0
    untimed = 0  # frames without a timestamp
    last_raw = None  # stream time of the previous video frame
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
                and float(packet.pts * packet.time_base) + resampler.shift
                > resampler.t0 + limit / fps + 1
            ):
                break  # enough video decoded; audio beyond the kept span is not needed
            if packet.size == 0 and packet.buffer_ptr:
                # an empty packet from the file (not the end-of-stream flush): "frame unchanged"
                end = _packet_end(packet)
                if kind == "video" and end is not None:
                    resampler.hold(end if packet.duration else end + nominal_gap)
                continue
            if packet.size:
                packets[kind] += 1
                flagged += bool(packet.is_corrupt)
            try:
                frames = packet.decode()
            except (av.FFmpegError, ValueError) as e:
                errors[kind] += 1
                last_error = e
                continue
            for frame in frames:
                if kind == "video":
                    flagged += bool(frame.is_corrupt)
                    step = (
                        float(frame.duration * frame.time_base)
                        if frame.duration and frame.time_base is not None
                        else None
                    )
                    raw = _frame_time(frame)
                    if raw is None:
                        untimed += 1
                        raw = 0.0 if last_raw is None else last_raw + (step or nominal_gap)
                    last_raw = raw
                    n_video += 1
                    if step:
                        frame_duration = step
                    if want_video and not resampler.push(resampler.clock(raw), frame):
                        want_video = False
                else:
                    audio.push(frame, _frame_time(frame))
    except (av.FFmpegError, ValueError) as e:
        if n_video == 0:
            raise DecodeError(f"cannot decode: {_one_line(e)}") from None
        # a damaged tail: keep what decoded cleanly
        stopped_at = max(0.0, last_raw + resampler.shift - (resampler.t0 or 0.0))
        last_error = e
    if audio is not None:
        audio.flush()
    if n_video == 0:
        detail = f": {_one_line(last_error)}" if last_error is not None else ""
        raise DecodeError(f"no decodable video frames{detail}")
    if n_video == 1 and packets["video"] == 1 and not errors["video"]:
        raise _StillImage()
    if want_video:
        resampler.finish(frame_duration)
    decoded = Decoded(frames=resampler.outputs, size=tuple(resampler.size))
    decoded.duration = decoded.num_frames / fps
    n_samples = round(decoded.num_frames / fps * sample_rate)
    placed = audio.place(resampler.t0, n_samples) if audio is not None else None
    decoded.has_audio = placed is not None
    decoded.audio = placed if placed is not None else np.zeros(0, np.int16)
    decoded.notes = _notes(packets, errors, flagged, stopped_at, untimed, resampler, audio)
    claimed = _claimed_duration(container, vstream)
    if (
        max_duration <= 0
        and stopped_at is None
        and claimed - decoded.duration > max(0.5, claimed / 4)
    ):
        decoded.notes.append(
            f"damaged: ends at {decoded.duration:.2f} s, the header says {claimed:.2f} s (cut short?)"
        )
    return decoded


def _claimed_duration(container, vstream) -> float:
    """The video's length by the file's header (0 when it does not say); only compared with
    what decoded, never used as the length."""
    if vstream.duration is not None and vstream.time_base is not None:
        return float(vstream.duration * vstream.time_base)
    return container.duration / 1e6 if container.duration else 0.0


def _notes(packets, errors, flagged, stopped_at, untimed, resampler, audio) -> list[str]:
    notes = []
    if errors["video"] or errors["audio"] or flagged:
        parts = [
            f"{errors[k]} of {packets[k]} {k} packets undecodable"
            for k in ("video", "audio")
            if errors[k]
        ]
        if flagged:
            parts.append(f"{flagged} packets/frames flagged corrupt")
        notes.append(f"damaged: {', '.join(parts)} (skipped, the rest kept)")
    if stopped_at is not None:
        notes.append(f"damaged: unreadable after {stopped_at:.2f} s (the part before kept)")
    if untimed:
        notes.append(f"no timestamps on {untimed} frames (times from the frame rate)")
    if resampler.discontinuities:
        notes.append(f"{resampler.discontinuities} timestamp discontinuities bridged")
    if audio is not None and audio.missing:
        notes.append(
            f"damaged: {audio.missing / audio.sample_rate:.2f} s of audio missing"
            " (silence where the timestamps show lost packets)"
        )
    if audio is not None and (note := audio.note()):
        notes.append(note)
    return notes


def _decode_audio_only(container, astream, sample_rate, max_duration) -> Decoded:
    track = _AudioTrack(sample_rate)
    errors = packets = 0
    limit = round(max_duration * sample_rate) if max_duration > 0 else None
    try:
        for packet in container.demux(astream):
            if packet.size == 0 and packet.buffer_ptr:
                continue
            packets += bool(packet.size)
            try:
                frames = packet.decode()
            except (av.FFmpegError, ValueError):
                errors += 1
                continue
            for frame in frames:
                track.push(frame, None)
            if limit is not None and track.total >= limit:
                break
    except av.FFmpegError as e:
        if not track.total:
            raise DecodeError(f"cannot decode audio: {_one_line(e)}") from None
    track.flush()
    if not track.total:
        raise DecodeError("no decodable audio")
    audio = np.concatenate([c for _, c in track.chunks]).astype(np.int16, copy=False)
    if limit is not None:
        audio = audio[:limit]
    if audio.size == 0:
        raise DecodeError("no decodable audio")
    notes = (
        [f"damaged: {errors} of {packets} audio packets undecodable (skipped)"] if errors else []
    )
    if note := track.note():
        notes.append(note)
    return Decoded(audio=audio, duration=audio.size / sample_rate, has_audio=True, notes=notes)
