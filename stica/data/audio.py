"""Audio front end: batched log-mel filterbanks on the training device, and volume jitter.

SPEC "Audio input": 257 mel bands, 20 ms Hann window, 10 ms hop, n_fft 1024 at 24 kHz, i.e. about
100 frames per second (1 + S // hop with centred frames: 101 for 1 s, 201 for 2 s; the paper's
257×199 for 2 s came from uncentred frames). The STFT is ``torch.stft`` and the filter bank is
``librosa.filters.mel`` (Slaney scale and norm, librosa's defaults), so the output matches
``librosa.feature.melspectrogram`` up to float precision before the log.
"""

from __future__ import annotations

import warnings

import librosa
import torch
from torch import nn

from stica.config import AudioConfig

INT16_SCALE = 32768.0
# log(mel + eps): keeps silent frames and the empty low bands finite (with 257 bands on 513 FFT
# bins the lowest mel filters are narrower than one bin and librosa leaves some of them at zero)
LOG_EPS = 1e-6


class LogMel(nn.Module):
    """Log mel filterbank of a batch of waveforms, computed on the input's device.

    Args:
        sample_rate: Hz.
        n_fft: FFT size (the Hann window of ``win_ms`` is zero-padded to it, centred).
        win_ms: window length in milliseconds.
        hop_ms: hop length in milliseconds.
        n_mels: number of mel bands.

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
    ) -> None:
        super().__init__()
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

    @classmethod
    def from_config(cls, config: AudioConfig) -> LogMel:
        return cls(config.sample_rate, config.n_fft, config.win_ms, config.hop_ms, config.n_mels)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples (centred STFT)."""
        return 1 + num_samples // self.hop_length

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
        return torch.log(self.power_mel(wave) + LOG_EPS).unsqueeze(1)  # (B, 1, n_mels, frames)


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
    return wave * gain.to(device=wave.device, dtype=wave.dtype)
