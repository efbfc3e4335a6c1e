"""Pure torch losses of the XTTS GPT: separate text and mel cross-entropies, as coqui computes them.

`gpt_losses` runs coqui's own `GPT.forward`. With `prompt_masking="coqui"` the mel loss is the one
coqui returns, quirk included: the prompt region is masked for the last item of the batch only, in
perceiver units (samples / 256) instead of code units (samples / 1024). With `"per_item"` the mel
loss is recomputed from the same logits with the prompt region of every item masked in code units.
With `cond_idxs=None` (validation) the two are identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

PromptMasking = Literal["coqui", "per_item"]


@dataclass
class LossWeights:
    text_ce: float = 0.01
    mel_ce: float = 1.0


def mel_targets(codes: torch.Tensor, wav_lengths: torch.Tensor, stride: int, stop_token: int) -> torch.Tensor:
    """The mel targets `GPT.forward` builds: codes, stop-token padding, then -1 past each clip's end.

    Returns [B, max_code_len + 2], aligned with the mel logits' last axis.
    """
    code_lengths = torch.ceil(wav_lengths / stride).long() + 3
    max_len = int(code_lengths.max())
    if max_len > codes.shape[-1]:
        codes = F.pad(codes, (0, max_len - codes.shape[-1]))
    codes = F.pad(codes[:, :max_len], (0, 1), value=stop_token)
    positions = torch.arange(codes.shape[-1], device=codes.device)[None]
    codes = torch.where(positions >= (code_lengths - 3)[:, None], torch.full_like(codes, stop_token), codes)
    targets = F.pad(codes, (0, 1), value=stop_token)
    positions = torch.arange(targets.shape[-1], device=codes.device)[None]
    return torch.where(positions > code_lengths[:, None], torch.full_like(targets, -1), targets)


def mask_prompt_per_item(targets: torch.Tensor, cond_idxs: torch.Tensor, stride: int) -> torch.Tensor:
    """Ignore, for every item, the targets whose codes overlap its prompt slice [start, end) in samples."""
    targets = targets.clone()
    for item, (start, end) in enumerate(cond_idxs.tolist()):
        targets[item, start // stride : -(-end // stride)] = -1
    return targets


def gpt_losses(
    gpt,
    text: torch.Tensor,
    text_lengths: torch.Tensor,
    codes: torch.Tensor,
    wav_lengths: torch.Tensor,
    cond_mels: torch.Tensor,
    cond_idxs: torch.Tensor | None,
    prompt_masking: PromptMasking = "coqui",
):
    """Unweighted (text CE, mel CE) of coqui's GPT on one batch.

    `cond_idxs` is never modified (coqui's forward divides it in place, so it gets a copy).
    """
    coqui_idxs = cond_idxs.clone() if (cond_idxs is not None and prompt_masking == "coqui") else None
    loss_text, loss_mel, mel_logits = gpt(
        text, text_lengths, codes, wav_lengths, cond_mels=cond_mels, cond_idxs=coqui_idxs
    )
    if prompt_masking == "coqui" or cond_idxs is None:
        return loss_text, loss_mel  # without cond_idxs nothing is masked: both variants agree
    targets = mask_prompt_per_item(
        mel_targets(codes, wav_lengths, gpt.code_stride_len, gpt.stop_audio_token),
        cond_idxs,
        gpt.code_stride_len,
    )
    return loss_text, F.cross_entropy(mel_logits.float(), targets, ignore_index=-1, label_smoothing=gpt.label_smoothing)


def weighted(loss_text: torch.Tensor, loss_mel: torch.Tensor, weights: LossWeights) -> dict[str, torch.Tensor]:
    """The three logged losses, weighted as coqui logs them."""
    text_ce = loss_text * weights.text_ce
    mel_ce = loss_mel * weights.mel_ce
    return {"loss_text_ce": text_ce, "loss_mel_ce": mel_ce, "loss": text_ce + mel_ce}
