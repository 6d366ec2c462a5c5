"""The ``gdt`` audio front end against a direct numpy logfbank written here, loop by loop, from
python_speech_features' definition (as the official GDT code calls it: 24 kHz, 20 ms frames, 10 ms
step, 257 filters, n_fft 1024, on raw int16 sample values)."""

import math
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest
import torch

from stica.config import AudioConfig
from stica.data.audio import GdtLogFbank, LogMel, build_frontend, volume_jitter

SR = 24000
NFILT = 257
NFFT = 1024
EPS64 = np.finfo(np.float64).eps


def reference_logfbank(wav: np.ndarray, sr=SR, winlen=0.02, winstep=0.01, nfilt=NFILT, nfft=NFFT):
    """logfbank of a 1-D signal in float64: pre-emphasis, rectangular frames, |rfft|^2 / nfft,
    HTK triangular filters (built with explicit loops), zero energies -> eps, log.
    Returns (frames, nfilt) and the filter bank."""
    sig = np.asarray(wav, dtype=np.float64)
    sig = np.append(sig[0], sig[1:] - 0.97 * sig[:-1])

    def half_up(x):
        return int(Decimal(x).quantize(Decimal("1"), rounding=ROUND_HALF_UP))

    flen, fstep = half_up(winlen * sr), half_up(winstep * sr)
    nframes = 1 if len(sig) <= flen else 1 + int(math.ceil((len(sig) - flen) / fstep))
    padded = np.concatenate([sig, np.zeros((nframes - 1) * fstep + flen - len(sig))])
    frames = np.stack([padded[i * fstep : i * fstep + flen] for i in range(nframes)])
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft  # (frames, nfft // 2 + 1)

    def mel(hz):
        return 2595 * np.log10(1 + hz / 700.0)

    def hz(m):
        return 700 * (10 ** (m / 2595.0) - 1)

    points = np.linspace(mel(0), mel(sr / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * hz(points) / sr)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        for i in range(int(bins[j]), int(bins[j + 1])):
            fb[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            fb[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    feat = power @ fb.T
    feat = np.where(feat == 0, EPS64, feat)
    return np.log(feat), fb


def int16_audio(seconds: float, seed: int = 0, tone_hz: float | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = round(seconds * SR)
    x = 3000.0 * rng.standard_normal(n)
    if tone_hz is not None:
        x += 12000.0 * np.sin(2 * np.pi * tone_hz * np.arange(n) / SR)
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


@pytest.fixture(scope="module")
def gdt():
    return build_frontend(AudioConfig(frontend="gdt"))


def test_factory_picks_the_front_end():
    assert isinstance(build_frontend(AudioConfig(frontend="gdt")), GdtLogFbank)
    assert isinstance(build_frontend(AudioConfig()), LogMel)


@pytest.mark.parametrize("seconds,frames", [(2.0, 199), (1.0, 99), (0.5, 49), (0.01, 1)])
def test_shape_and_frames_for(gdt, seconds, frames):
    n = round(seconds * SR)
    out = gdt(torch.zeros(2, n))
    assert out.shape == (2, 1, NFILT, frames)
    assert gdt.frames_for(n) == frames
    assert out.dtype == torch.float32


def test_frames_for_matches_reference_frame_count(gdt):
    for n in (1, 479, 480, 481, 719, 720, 721, 24000, 24001, 47999):
        ref, _ = reference_logfbank(np.ones(n))
        assert gdt.frames_for(n) == ref.shape[0] == gdt(torch.ones(1, n)).shape[-1], n


def test_equals_numpy_logfbank_on_int16_samples(gdt):
    wav = int16_audio(2.0, seed=1, tone_hz=440.0)
    ref, fb = reference_logfbank(wav)  # (199, 257)
    got = gdt(torch.from_numpy(wav)[None])[0, 0].numpy().T  # (199, 257)
    assert got.shape == ref.shape == (199, NFILT)
    empty = fb.sum(axis=1) == 0
    assert 0 < empty.sum() < NFILT  # many of the 257 filters are empty on 513 bins, not all
    np.testing.assert_allclose(got[:, ~empty], ref[:, ~empty], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got[:, empty], np.log(EPS64), rtol=1e-6)
    np.testing.assert_allclose(ref[:, empty], np.log(EPS64))


def test_float_input_is_int16_units(gdt):
    """[-1, 1] floats (the datasets' int16 / 32768) give what the official int16 input gives."""
    wav = int16_audio(1.0, seed=2)
    as_float = torch.from_numpy(wav.astype(np.float32) / 32768.0)[None]
    torch.testing.assert_close(gdt(as_float), gdt(torch.from_numpy(wav)[None]))
    ref, fb = reference_logfbank(wav)
    full = fb.sum(axis=1) > 0
    got = gdt(as_float)[0, 0].numpy().T
    np.testing.assert_allclose(got[:, full], ref[:, full], atol=1e-4, rtol=0)


def test_volume_jitter_scales_the_int16_waveform(gdt):
    """Jitter multiplies the waveform before the front end, as the official wav * U(0.9, 1.1)."""
    wav = int16_audio(1.0, seed=3)
    x = torch.from_numpy(wav.astype(np.float32) / 32768.0)[None]
    jittered = volume_jitter(x, torch.Generator().manual_seed(0))
    gain = float(jittered[0, 100] / x[0, 100])
    ref, fb = reference_logfbank(wav.astype(np.float64) * gain)
    full = fb.sum(axis=1) > 0
    got = gdt(jittered)[0, 0].numpy().T
    np.testing.assert_allclose(got[:, full], ref[:, full], atol=1e-4, rtol=0)


def test_tone_lands_in_its_htk_band(gdt):
    freq = 2000.0
    wav = (12000 * np.sin(2 * np.pi * freq * np.arange(SR) / SR)).astype(np.int16)
    out = gdt(torch.from_numpy(wav)[None])[0, 0]  # (257, 99)
    # the filter whose centre bin is nearest the tone's bin: HTK mel points snapped to bins
    mel_max = 2595 * np.log10(1 + (SR / 2) / 700)
    points = np.linspace(0, mel_max, NFILT + 2)
    bins = np.floor((NFFT + 1) * 700 * (10 ** (points / 2595) - 1) / SR)
    centres = bins[1:-1]
    tone_bin = freq * NFFT / SR  # 85.33
    expected = {int(j) for j in np.flatnonzero(np.abs(centres - tone_bin) <= 1)}
    loudest = int(out[:, 10:90].mean(dim=1).argmax())
    assert loudest in expected, (loudest, expected)


def test_batched_equals_one_at_a_time(gdt):
    waves = torch.from_numpy(np.stack([int16_audio(1.0, seed=s) for s in range(3)]))
    both = gdt(waves)
    for i in range(3):
        torch.testing.assert_close(both[i : i + 1], gdt(waves[i : i + 1]), atol=1e-5, rtol=1e-6)


def test_spec_norm_standardises():
    wav = torch.from_numpy(int16_audio(1.0, seed=4))[None]
    plain = build_frontend(AudioConfig(frontend="gdt"))(wav)
    normed = build_frontend(AudioConfig(frontend="gdt", spec_norm=(1.93, 17.89)))(wav)
    torch.testing.assert_close(normed, (plain - 1.93) / 17.89)


def test_bad_input_shape(gdt):
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        gdt(torch.zeros(3, 1, 100))
