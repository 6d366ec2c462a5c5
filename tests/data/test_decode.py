"""Decoding real files: timestamps resampling, resize, rotation, audio placement, bad files."""

import numpy as np
import pytest

from stica.data.decode import DecodeError, decode_media, output_size
from tests import fixtures as fx


def test_resample_and_resize(tmp_path):
    path = fx.write_video(tmp_path / "v.mp4", seconds=1.0, size=(48, 64))
    d = decode_media(path, fps=15, short_side=32, sample_rate=16000)
    assert d.num_frames == 15
    assert d.size == (32, 43)
    assert d.frames[0].shape == (32, 43, 3) and d.frames[0].dtype == np.uint8
    assert d.has_audio and d.audio.dtype == np.int16 and d.audio.shape == (16000,)
    # frame i at 15 fps is source frame 2i: red level (2i * 8) % 200
    reds = [int(f[..., 0].astype(int).mean().round()) for f in d.frames[:5]]
    assert reds[1] > reds[0] + 8 and reds[2] > reds[1] + 8


def test_variable_frame_rate_picks_latest_frame(tmp_path):
    times = [0.0, 0.1, 0.15, 0.5, 0.55]  # irregular display times
    path = fx.write_vfr_mp4(tmp_path / "vfr.mp4", times)
    d = decode_media(path, fps=10, short_side=32, sample_rate=16000)
    grey = [int(round(f.astype(float).mean())) for f in d.frames]
    # output t = 0, .1, .2, .3, .4, .5 -> frames 0, 1, 2, 2, 2, 3 (latest pts <= t)
    expected = [20, 40, 60, 60, 60, 80]
    assert len(grey) >= 6
    assert all(abs(g - e) <= 3 for g, e in zip(grey[:6], expected, strict=True)), grey
    assert not d.has_audio and d.audio.size == 0


@pytest.mark.parametrize("degrees", [90, -90])
def test_display_rotation_makes_portrait(tmp_path, degrees):
    path = fx.write_rotated_mp4(tmp_path / "r.mp4", degrees, size=(48, 64))
    d = decode_media(path, fps=30, short_side=24, sample_rate=16000)
    frame = d.frames[0]
    assert frame.shape == (32, 24, 3)  # portrait after honouring the display matrix
    # coded top-left white quarter: ccw 90 -> bottom-left, cw 90 -> top-right
    h, w = frame.shape[:2]
    corner = frame[h * 3 // 4 :, : w // 4] if degrees == 90 else frame[: h // 4, w * 3 // 4 :]
    assert corner.mean() > 200


def test_odd_size_and_portrait(tmp_path):
    odd = fx.write_odd_size_mkv(tmp_path / "odd.mkv", size=(95, 127))
    d = decode_media(odd, fps=30, short_side=40, sample_rate=16000)
    assert d.size == (40, 53) and d.num_frames == 15
    tall = fx.write_video(tmp_path / "tall.mp4", size=(64, 48))
    assert decode_media(tall, fps=30, short_side=24, sample_rate=16000).size == (32, 24)
    assert output_size(95, 127, 128) == (128, 171)


def test_audio_only_input(tmp_path):
    wav = fx.write_wav(tmp_path / "a.wav", seconds=0.5, sample_rate=44100)
    d = decode_media(wav, fps=30, short_side=32, sample_rate=24000, audio_only=True)
    assert d.num_frames == 0 and d.has_audio
    assert abs(d.audio.size - 12000) <= 2 and abs(d.duration - 0.5) < 1e-3
    with pytest.raises(DecodeError, match="no video stream"):
        decode_media(wav, fps=30, short_side=32, sample_rate=24000)


@pytest.mark.parametrize(
    "writer, reason, skipped",
    [
        (fx.write_zero_byte, "empty file", False),
        (fx.write_text_as_mp4, "not a media file", True),  # content decides, not ".mp4"
        (fx.write_truncated, "cannot open", False),  # an mp4 signature: a damaged video
    ],
)
def test_bad_files_raise_one_line(tmp_path, writer, reason, skipped):
    path = writer(tmp_path / "bad.mp4")
    with pytest.raises(DecodeError) as e:
        decode_media(path, fps=30, short_side=32, sample_rate=16000)
    assert reason in str(e.value) and "\n" not in str(e.value)
    assert e.value.skipped is skipped
