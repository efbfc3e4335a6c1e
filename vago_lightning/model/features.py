"""Pure torch audio features of XTTS v2: normalized log-mel spectrograms and DVAE codes.

The same numbers coqui-tts computes (`TorchMelSpectrogram` + `DiscreteVAE.get_codebook_indices`), as
plain modules with the mel statistics as a buffer, so they move with the model and can be tested alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


# ---------------------------------------------------------------------------------------------
# Many clips at once, with exactly the codes of one clip at a time


def _valid(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x [B, C, L] with every position at or past its row's length set to zero: what a convolution
    of that row alone reads there (its zero padding)."""
    keep = torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]
    return x * keep[:, None, :].to(x.dtype)


def _conv_lengths(conv: nn.Conv1d, lengths: torch.Tensor) -> torch.Tensor:
    (k,), (s,), (p,), (d,) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    return torch.div(lengths + 2 * p - d * (k - 1) - 1, s, rounding_mode="floor") + 1


def _masked(module: nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`module`(x) on a padded batch, each row exactly as it comes out alone: every layer's output
    past a row's own length is zeroed, so the next convolution reads zeros there as it reads its
    padding for the row alone. Knows coqui's DVAE encoder (Sequential, Conv1d, ReLU/SiLU, ResBlock)."""
    if isinstance(module, nn.Sequential):
        for child in module:
            x, lengths = _masked(child, x, lengths)
        return x, lengths
    if isinstance(module, nn.Conv1d):
        if module.padding_mode != "zeros":
            raise ValueError(f"cannot batch a {module.padding_mode}-padded convolution exactly")
        lengths = _conv_lengths(module, lengths)
        x = module(x)
        return _valid(x, lengths), lengths
    if isinstance(module, (nn.ReLU, nn.SiLU)):  # zero at zero: the zeroed positions stay zero
        return module(x), lengths
    if type(module).__name__ == "ResBlock" and isinstance(getattr(module, "net", None), nn.Sequential):
        y, out = _masked(module.net, x, lengths)  # coqui's ResBlock: net(x) + x, lengths unchanged
        return y + x, out
    raise ValueError(f"cannot batch {type(module).__name__} exactly")


@torch.no_grad()
def dvae_codes_many(dvae: nn.Module, mel: LogMelSpectrogram, wavs: list[torch.Tensor]) -> list[torch.Tensor]:
    """`dvae_codes` of each of `wavs` ([T_i] at 22,050 Hz, any lengths), as one padded batch, with
    exactly the codes each clip gets alone: the mel and the DVAE encoder are convolutional, so a
    padded clip would get other codes at its end. Instead each clip is reflect-padded as its own STFT
    does before the batch is padded with zeros, and past each clip's end every layer's output is zeroed
    as the clip's own zero padding would be (`_masked`). Group clips of similar lengths: the padding
    is computed and thrown away."""
    spectrogram = mel.mel.spectrogram
    if not spectrogram.center or spectrogram.pad_mode != "reflect" or spectrogram.pad:
        raise ValueError("dvae_codes_many expects a centered, reflect-padded mel")
    half = spectrogram.n_fft // 2
    device = mel.mel_stats.device
    framed = [F.pad(w.to(device).float()[None, None], (half, half), mode="reflect")[0, 0] for w in wavs]
    longest = max(len(f) for f in framed)
    batch = torch.stack([F.pad(f, (0, longest - len(f))) for f in framed])
    frames = torch.tensor([len(w) // spectrogram.hop_length + 1 for w in wavs], device=device)
    with torch.autocast(device.type, enabled=False):
        spec = torchaudio.functional.spectrogram(
            batch,
            spectrogram.pad,
            spectrogram.window,
            spectrogram.n_fft,
            spectrogram.hop_length,
            spectrogram.win_length,
            spectrogram.power,
            spectrogram.normalized,
            center=False,  # done above, clip by clip
            onesided=spectrogram.onesided,
        )
        mels = torch.log(torch.clamp(mel.mel.mel_scale(spec), min=1e-5)) / mel.mel_stats[None, :, None]
        mels = _valid(mels, frames)  # past its end a clip alone has no frames: zeros, as its padding
        if getattr(dvae, "normalization", None) is not None:
            raise ValueError("dvae_codes_many expects a DVAE without input normalization (XTTS has none)")
        logits, lengths = _masked(dvae.encoder, mels, frames)
        training = dvae.codebook.training
        dvae.codebook.train(False)  # as get_codebook_indices: a training codebook would move its codes
        try:
            _, codes, _ = dvae.codebook(logits.permute(0, 2, 1))  # coqui's nearest-code search, as alone
        finally:
            dvae.codebook.train(training)
    return [c[:n] for c, n in zip(codes, lengths.tolist())]
