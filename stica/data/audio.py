"""Audio front ends: batched log filterbanks on the training device, and volume jitter.

Two front ends, chosen by ``pretrain.audio.frontend`` through :func:`build_frontend` (the one
place every consumer gets its front end from):

- ``librosa`` (SPEC "Audio input"): 257 mel bands, 20 ms Hann window, 10 ms hop, n_fft 1024 at
  24 kHz, centred frames, i.e. ``1 + S // hop`` frames (101 for 1 s, 201 for 2 s). The STFT is
  ``torch.stft`` and the filter bank ``librosa.filters.mel`` (Slaney scale and norm), so the
  output matches ``librosa.feature.melspectrogram`` up to float precision before the log.
- ``gdt``: what the official GDT/STiCA code feeds its audio network, python_speech_features'
  ``logfbank(wav, 24000, winlen=0.02, winstep=0.01, nfilt=257, nfft=1024)`` on raw int16 sample
  values: pre-emphasis 0.97, uncentred rectangular frames with the last one zero-padded
  (``1 + ceil((S - win) / hop)``: 99 for 1 s, 199 for 2 s, the paper's 257x199), power spectrum
  ``|rfft|^2 / n_fft``, triangular filters on the HTK mel scale, zero bands set to float64 eps
  before the log (with 257 filters on 513 bins many low filters are empty).

Both take (B, S) waveforms, float in [-1, 1] or int16, and return (B, 1, bands, frames).
"""

from __future__ import annotations

import math
import warnings
from decimal import ROUND_HALF_UP, Decimal

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stica import perf
from stica.config import AudioConfig

INT16_SCALE = 32768.0
# log(mel + eps): keeps silent frames and the empty low bands finite (with 257 bands on 513 FFT
# bins the lowest mel filters are narrower than one bin and librosa leaves some of them at zero)
LOG_EPS = 1e-6
# python_speech_features replaces zero filterbank energies by numpy's float64 eps before the log
GDT_EMPTY_BAND = float(np.finfo(np.float64).eps)  # 2.22e-16; log = -36.04
GDT_PREEMPHASIS = 0.97


class LogMel(nn.Module):
    """Log mel filterbank of a batch of waveforms, computed on the input's device.

    Args:
        sample_rate: Hz.
        n_fft: FFT size (the Hann window of ``win_ms`` is zero-padded to it, centred).
        win_ms: window length in milliseconds.
        hop_ms: hop length in milliseconds.
        n_mels: number of mel bands.
        spec_norm: (mean, std); the output is ``(log-mel - mean) / std``.

    Shape:
        - input: (B, S) float in [-1, 1], or int16 (scaled by 1/32768)
        - output: (B, 1, n_mels, 1 + S // hop) float32
    """

    def __init__(
        self,
        sample_rate: int = 24000,
        n_fft: int = 1024,
        win_ms: float = 20.0,
        hop_ms: float = 10.0,
        n_mels: int = 257,
        spec_norm: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        self.spec_norm = (float(spec_norm[0]), float(spec_norm[1]))
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = round(sample_rate * win_ms / 1000)
        self.hop_length = round(sample_rate * hop_ms / 1000)
        self.n_mels = n_mels
        if not 1 <= self.win_length <= n_fft:
            raise ValueError(f"window of {self.win_length} samples does not fit n_fft={n_fft}")
        if self.hop_length < 1:
            raise ValueError(f"hop of {hop_ms} ms is shorter than one sample")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Empty filters detected": see LOG_EPS
            fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)
        # buffers follow the module to the training device; not persistent: derived from config
        self.register_buffer("mel_fb", torch.from_numpy(fb).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)

    def frames_for(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples (centred STFT)."""
        return 1 + num_samples // self.hop_length

    num_frames = frames_for

    def power_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """Mel power spectrogram (before the log), as librosa's melspectrogram.

        Shape:
            - wave: (B, S)
            - output: (B, n_mels, frames)
        """
        if wave.dim() != 2:
            raise ValueError(f"LogMel expects (B, S) waveforms, got shape {tuple(wave.shape)}")
        if wave.dtype == torch.int16:
            wave = wave.float() / INT16_SCALE
        wave = wave.float()
        spec = torch.stft(
            wave,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=True,
            pad_mode="constant",  # librosa's default padding
            return_complex=True,
        )  # (B, n_fft // 2 + 1, frames)
        power = spec.real.square() + spec.imag.square()
        return torch.matmul(self.mel_fb, power)  # (B, n_mels, frames)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = torch.log(self.power_mel(wave) + LOG_EPS)  # (B, n_mels, frames)
        return _normalise(spec, self.spec_norm).unsqueeze(1)  # (B, 1, n_mels, frames)


def _normalise(spec: torch.Tensor, spec_norm: tuple[float, float]) -> torch.Tensor:
    mean, std = spec_norm
    return spec if (mean, std) == (0.0, 1.0) else (spec - mean) / std


def round_half_up(x: float) -> int:
    """Round to the nearest integer, halves away from zero (python_speech_features' frame sizes)."""
    return int(Decimal(x).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def hz_to_htk_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def htk_mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def htk_filterbank(n_filters: int, n_fft: int, sample_rate: int) -> np.ndarray:
    """Triangular filters on the HTK mel scale from 0 Hz to Nyquist, python_speech_features style.

    ``n_filters + 2`` mel points are spaced linearly; each is snapped down to the FFT bin
    ``floor((n_fft + 1) * hz / sample_rate)``. Filter j rises over bins [b_j, b_j+1) and falls over
    [b_j+1, b_j+2), so filters whose points share one bin are empty (all zero).

    Shape:
        -> (n_filters, n_fft // 2 + 1) float64
    """
    mels = np.linspace(0.0, hz_to_htk_mel(sample_rate / 2), n_filters + 2)
    bins = np.floor((n_fft + 1) * htk_mel_to_hz(mels) / sample_rate)
    left, centre, right = bins[:-2, None], bins[1:-1, None], bins[2:, None]  # (n_filters, 1)
    k = np.arange(n_fft // 2 + 1, dtype=np.float64)[None]  # (1, bins)
    with np.errstate(divide="ignore", invalid="ignore"):  # empty slopes are masked out below
        rising = (k - left) / (centre - left)
        falling = (right - k) / (right - centre)
    up = (k >= left) & (k < centre)
    down = (k >= centre) & (k < right)
    return np.where(up, rising, 0.0) + np.where(down, falling, 0.0)


class GdtLogFbank(nn.Module):
    """GDT's audio input: python_speech_features ``logfbank`` on int16-valued samples, batched.

    Computed on the input's device in float64, as numpy computes it (autocast off), and returned
    as float32: pre-emphasis leaves the low bands 30 dB below the high ones, and the rectangular
    window's leakage puts float32 FFT round-off at ~1e-4 in their log energies.

    Args:
        sample_rate: Hz.
        n_fft: FFT size (each rectangular frame is zero-padded to it).
        win_ms: frame length in milliseconds (rounded half up to samples).
        hop_ms: frame step in milliseconds (rounded half up to samples).
        n_filters: number of HTK mel filters (``nfilt``).
        spec_norm: (mean, std); the output is ``(logfbank - mean) / std``.

    Shape:
        - input: (B, S) float in [-1, 1] (scaled by 32768 to int16 units), or int16 (as is)
        - output: (B, 1, n_filters, frames_for(S)) float32
    """

    def __init__(
        self,
        sample_rate: int = 24000,
        n_fft: int = 1024,
        win_ms: float = 20.0,
        hop_ms: float = 10.0,
        n_filters: int = 257,
        spec_norm: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = round_half_up(sample_rate * win_ms / 1000)
        self.hop_length = round_half_up(sample_rate * hop_ms / 1000)
        self.n_filters = n_filters
        self.spec_norm = (float(spec_norm[0]), float(spec_norm[1]))
        if not 1 <= self.win_length <= n_fft:
            raise ValueError(f"window of {self.win_length} samples does not fit n_fft={n_fft}")
        if self.hop_length < 1:
            raise ValueError(f"hop of {hop_ms} ms is shorter than one sample")
        fb = htk_filterbank(n_filters, n_fft, sample_rate)
        # transposed for (frames, bins) @ (bins, filters); derived from config, not persistent
        self.register_buffer("fbank_t", torch.from_numpy(fb.T.copy()), persistent=False)

    def frames_for(self, num_samples: int) -> int:
        """Frames for ``num_samples`` samples: one, or enough to cover them with the last padded."""
        if num_samples <= self.win_length:
            return 1
        return 1 + math.ceil((num_samples - self.win_length) / self.hop_length)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() != 2:
            raise ValueError(f"GdtLogFbank expects (B, S) waveforms, got shape {tuple(wave.shape)}")
        # MPS has no float64; everywhere else the spectrum is computed as numpy does
        dtype = torch.float32 if wave.device.type == "mps" else torch.float64
        # the official code feeds raw int16 values: float audio is scaled back to that range
        x = wave.to(dtype) if wave.dtype == torch.int16 else wave.to(dtype) * INT16_SCALE
        with perf.autocast(x.device, enabled=False):
            x = torch.cat([x[:, :1], x[:, 1:] - GDT_PREEMPHASIS * x[:, :-1]], dim=1)  # (B, S)
            n = self.frames_for(x.shape[1])
            padded = (n - 1) * self.hop_length + self.win_length
            x = F.pad(x, (0, padded - x.shape[1]))
            frames = x.unfold(1, self.win_length, self.hop_length)  # (B, n, win)
            spec = torch.fft.rfft(frames, n=self.n_fft)  # (B, n, n_fft // 2 + 1)
            power = (spec.real.square() + spec.imag.square()) / self.n_fft
            energy = torch.matmul(power, self.fbank_t.to(dtype))  # (B, n, n_filters)
            energy = torch.where(energy == 0, GDT_EMPTY_BAND, energy)
            spec = torch.log(energy).transpose(1, 2).float()  # (B, n_filters, n)
        return _normalise(spec, self.spec_norm).unsqueeze(1)  # (B, 1, n_filters, n)


def build_frontend(config: AudioConfig) -> LogMel | GdtLogFbank:
    """The audio front end ``config.frontend`` names; every consumer builds it here.

    The module maps (B, S) waveforms to (B, 1, bands, frames) and has ``frames_for(S)``.
    """
    kinds = {"gdt": GdtLogFbank, "librosa": LogMel}
    if config.frontend not in kinds:
        raise ValueError(f"unknown audio front end {config.frontend!r}")
    return kinds[config.frontend](
        config.sample_rate,
        config.n_fft,
        config.win_ms,
        config.hop_ms,
        config.n_mels,
        config.spec_norm,
    )


def volume_jitter(
    wave: torch.Tensor, generator: torch.Generator, low: float = 0.9, high: float = 1.1
) -> torch.Tensor:
    """Multiply each waveform by its own gain drawn from U(low, high) (training augmentation).

    The gains are drawn on the generator's device (so a CPU generator gives the same values
    whatever the input's device) and applied on the input's device.

    Shape:
        - wave: (B, S) float
        - output: (B, S)
    """
    if wave.dim() != 2:
        raise ValueError(f"volume_jitter expects (B, S) waveforms, got shape {tuple(wave.shape)}")
    if not 0 < low <= high:
        raise ValueError(f"volume_jitter needs 0 < low <= high, got ({low}, {high})")
    gain = torch.rand(wave.shape[0], 1, generator=generator, device=generator.device)
    gain = low + (high - low) * gain  # (B, 1)
    # non_blocking: a blocking copy to a GPU is a stream sync
    return wave * gain.to(wave.device, wave.dtype, non_blocking=True)
