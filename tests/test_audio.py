import librosa
import numpy as np
import pytest
import torch

from stica.config import AudioConfig
from stica.data.audio import INT16_SCALE, LOG_EPS, build_frontend, volume_jitter

SR = 24000


def tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def logmel():
    return build_frontend(AudioConfig(frontend="librosa"))


def test_matches_librosa_on_a_tone(logmel):
    y = tone(0.5) + 0.1 * tone(0.5, 3000.0)
    ref = librosa.feature.melspectrogram(
        y=y,
        sr=SR,
        n_fft=1024,
        hop_length=240,
        win_length=480,
        window="hann",
        center=True,
        n_mels=257,
    )
    got = logmel.power_mel(torch.from_numpy(y)[None])[0].numpy()
    assert got.shape == ref.shape == (257, 51)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-6 * ref.max())
    log_got = logmel(torch.from_numpy(y)[None])[0, 0].numpy()
    np.testing.assert_allclose(log_got, np.log(ref + LOG_EPS), atol=1e-3)
    # the tone's energy sits in the band holding 440 Hz
    mel_freqs = librosa.mel_frequencies(n_mels=257 + 2, fmax=SR / 2)[1:-1]
    peak_band = int(log_got[:, 25].argmax())
    assert abs(mel_freqs[peak_band] - 440.0) < 30.0


@pytest.mark.parametrize("seconds,frames", [(1.0, 101), (2.0, 201), (0.5, 51)])
def test_frame_count(logmel, seconds, frames):
    n = int(seconds * SR)
    out = logmel(torch.zeros(3, n))
    assert out.shape == (3, 1, 257, frames)
    assert logmel.num_frames(n) == frames == 1 + n // logmel.hop_length
    assert torch.isfinite(out).all()


def test_int16_input_is_scaled(logmel):
    y = torch.from_numpy(tone(0.2))[None]
    as_int = (y * INT16_SCALE).round().to(torch.int16)
    torch.testing.assert_close(logmel(as_int), logmel(as_int.float() / INT16_SCALE))
    # and not read as raw integers (which would add log(32768²) ≈ 20.8 to every loud band)
    assert (logmel(as_int) - logmel(y)).abs().median() < 1e-3


def test_batch_rows_independent(logmel):
    a, b = torch.from_numpy(tone(0.2))[None], torch.from_numpy(tone(0.2, 1000.0))[None]
    both = logmel(torch.cat([a, b]))
    torch.testing.assert_close(both[1:], logmel(b), atol=1e-4, rtol=1e-5)


def test_bad_input_shape(logmel):
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        logmel(torch.zeros(1, 1, 100))


def test_volume_jitter_range_and_determinism():
    wave = torch.ones(64, 10)
    out = volume_jitter(wave, torch.Generator().manual_seed(0))
    gain = out[:, 0]
    assert (gain >= 0.9).all() and (gain <= 1.1).all() and gain.std() > 0.01
    assert torch.equal(out, out[:, :1].expand_as(out))  # one gain per waveform
    again = volume_jitter(wave, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    with pytest.raises(ValueError):
        volume_jitter(wave, torch.Generator(), 1.2, 1.1)
