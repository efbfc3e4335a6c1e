"""Pure torch audio features of XTTS v2: normalized log-mel spectrograms and DVAE codes.

The same numbers coqui-tts computes (`TorchMelSpectrogram` + `DiscreteVAE.get_codebook_indices`), as
plain modules with the mel statistics as a buffer, so they move with the model and can be tested alone.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn

from ..constants import SAMPLE_RATE


class LogMelSpectrogram(nn.Module):
    """80-band slaney mel, 0-8 kHz, power 2, log of clamp(1e-5), divided by the base's mel_stats."""

    def __init__(
        self,
        mel_stats: torch.Tensor,
        n_fft: int,
        hop_length: int = 256,
        win_length: int = 1024,
        sample_rate: int = SAMPLE_RATE,
        n_mels: int = 80,
        f_max: float = 8000.0,
    ):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            f_min=0.0,
            f_max=f_max,
            n_mels=n_mels,
            power=2,
            normalized=False,
            norm="slaney",
        )
        self.register_buffer("mel_stats", mel_stats.detach().clone().float())

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, T] (or [B, 1, T]) -> [B, 80, frames]; always computed in fp32."""
        if wav.ndim == 3:
            wav = wav.squeeze(1)
        with torch.autocast(wav.device.type, enabled=False):
            mel = self.mel(wav.float())
            return torch.log(torch.clamp(mel, min=1e-5)) / self.mel_stats[None, :, None]


def dvae_mel(mel_stats: torch.Tensor) -> LogMelSpectrogram:
    """The mel the DVAE reads: n_fft 1024, hop 256, win 1024."""
    return LogMelSpectrogram(mel_stats, n_fft=1024)


def conditioning_mel(mel_stats: torch.Tensor) -> LogMelSpectrogram:
    """The mel the GPT's conditioning encoder reads (v2, perceiver): n_fft 2048, hop 256, win 1024."""
    return LogMelSpectrogram(mel_stats, n_fft=2048)


@torch.no_grad()
def dvae_codes(dvae: nn.Module, mel: nn.Module, wav: torch.Tensor) -> torch.Tensor:
    """wav [B, T] at 22,050 Hz -> DVAE codes [B, ~T/1024] (int64), with the frozen DVAE.

    Always in fp32, also under mixed precision: a nearest-codebook search in bf16 can pick another
    code than `prepare` stored."""
    with torch.autocast(wav.device.type, enabled=False):
        return dvae.get_codebook_indices(mel(wav))


def code_count(num_samples: int) -> int:
    """How many codes `dvae_codes` gives for a clip of `num_samples` (centered hop-256 frames, two
    stride-2 convolutions with padding 1, each giving ceil(L/2))."""
    frames = num_samples // 256 + 1
    return -(-frames // 4)
