"""Write real H.264/AAC mp4 files with PyAV (the demo set and the test fixtures use this)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AAC_FRAME = 1024  # samples per AAC frame


def write_mp4(
    path: str | Path,
    frames: np.ndarray | None,
    audio: np.ndarray | None = None,
    fps: float = 30.0,
    sample_rate: int = 24000,
    crf: int = 18,
) -> Path:
    """Encode ``frames`` (T, H, W, 3) uint8 RGB as H.264 and ``audio`` (S,) float in [-1, 1] as
    mono AAC into one mp4. Either stream may be ``None`` (video-only or audio-only files).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if frames is None and audio is None:
        raise ValueError("write_mp4 needs frames, audio or both")
    with av.open(str(path), mode="w", format="mp4") as container:
        vstream = astream = None
        if frames is not None:
            frames = np.ascontiguousarray(frames, dtype=np.uint8)
            if frames.ndim != 4 or frames.shape[-1] != 3:
                raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
            rate = Fraction(fps).limit_denominator(1001)
            vstream = container.add_stream("libx264", rate=rate)
            vstream.height, vstream.width = frames.shape[1], frames.shape[2]
            vstream.pix_fmt = "yuv420p"
            vstream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
        if audio is not None:
            astream = container.add_stream("aac", rate=sample_rate)
            astream.layout = "mono"
        if vstream is not None:
            for i, frame in enumerate(frames):
                vframe = av.VideoFrame.from_ndarray(frame, format="rgb24")
                vframe.pts = i
                for packet in vstream.encode(vframe):
                    container.mux(packet)
            for packet in vstream.encode():
                container.mux(packet)
        if astream is not None:
            samples = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
            for start in range(0, len(samples), AAC_FRAME):
                chunk = samples[start : start + AAC_FRAME]
                aframe = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
                aframe.sample_rate = sample_rate
                aframe.pts = start
                aframe.time_base = Fraction(1, sample_rate)
                for packet in astream.encode(aframe):
                    container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    return path
