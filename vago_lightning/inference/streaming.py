"""Streamed speech from coqui-tts's `Xtts`: the GPT's latents decoded by HiFi-GAN as they come, each
output sample computed once. Pure torch and coqui; no web code.

coqui's `Xtts.inference_stream` decodes the whole sentence again at every chunk (a 100-token sentence in
chunks of 20 decodes 400 latents' worth) and cross-fades the chunk edges. `StreamingDecoder` decodes only
the new part of the sentence, with CONTEXT_FRAMES of decoder input on each side. HiFi-GAN is a stack of
convolutions whose receptive field is about 14 input frames each way (measured: a change at one frame
moves samples from -12.6 to +13.6 frames away), so every sample equals the one a single decode of the whole
sentence gives (within float rounding; tested), and the work grows linearly with the sentence.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

CONTEXT_FRAMES = 16  # decoder input frames of context on each side of a window (receptive field ~14)


class StreamingDecoder:
    """HiFi-GAN (`HifiDecoder`) over a growing sequence of GPT latents.

    `push(latents)` returns the samples that are final (no later latent can change them); `finish()`
    returns the rest. The frames are those of `HifiDecoder.forward` (its two linear interpolations,
    after coqui's `speed` interpolation), computed for the whole prefix each time (cheap); only the
    convolutions, the cost, run on windows."""

    def __init__(self, hifigan, speaker: torch.Tensor, length_scale: float = 1.0):
        self.hifigan = hifigan
        self.speaker = speaker
        self.scales = [length_scale] if length_scale != 1.0 else []
        self.scales.append(hifigan.ar_mel_length_compression / hifigan.output_hop_length)
        if hifigan.output_sample_rate != hifigan.input_sample_rate:
            self.scales.append(hifigan.output_sample_rate / hifigan.input_sample_rate)
        # Frames at the end of a prefix that the next latents may still change: a linear interpolation's
        # last outputs lean on its last input, through every interpolation in turn.
        self.unsettled = 0
        for scale in self.scales:
            self.unsettled = math.ceil((self.unsettled + 2) * scale) + 1
        self.latents: list[torch.Tensor] = []
        self.done = 0  # frames whose samples were returned

    def frames(self) -> torch.Tensor:
        """The decoder's input for all latents so far: [1, C, frames]."""
        z = torch.cat(self.latents).unsqueeze(0).transpose(1, 2)
        for scale in self.scales:
            if z.shape[-1] * scale < 1:  # too few latents yet (fast speech): no frame
                return z[..., :0]
            z = F.interpolate(z, scale_factor=[scale], mode="linear")
        return z

    def push(self, latents: torch.Tensor) -> torch.Tensor:
        """Add latents [n, C]; the samples [k] now final (maybe none)."""
        self.latents.append(latents)
        z = self.frames()
        end = z.shape[-1] - self.unsettled - CONTEXT_FRAMES  # right context must be settled too
        return self._decode(z, end) if end > self.done else z.new_zeros(0)

    def finish(self, latents: torch.Tensor | None = None) -> torch.Tensor:
        """The samples not returned yet, up to the end of the sentence (with its last `latents`)."""
        if latents is not None:
            self.latents.append(latents)
        if not self.latents:
            return torch.zeros(0)
        z = self.frames()
        return self._decode(z, z.shape[-1]) if z.shape[-1] > self.done else z.new_zeros(0)

    def _decode(self, z: torch.Tensor, end: int) -> torch.Tensor:
        low, high = max(0, self.done - CONTEXT_FRAMES), min(z.shape[-1], end + CONTEXT_FRAMES)
        wav = self.hifigan.waveform_decoder(z[..., low:high], g=self.speaker).reshape(-1)
        hop = wav.shape[0] // (high - low)  # 256 samples per frame in XTTS-v2
        start, self.done = self.done, end
        return wav[(start - low) * hop : (end - low) * hop]


@torch.inference_mode()
def stream_sentence(
    model,
    text: str,
    language: str,
    latents: torch.Tensor,
    speaker: torch.Tensor,
    chunk_tokens: int = 20,
    temperature: float = 0.75,
    top_k: int = 50,
    top_p: float = 0.85,
    repetition_penalty: float = 10.0,
    length_penalty: float = 1.0,
    speed: float = 1.0,
) -> Iterator[torch.Tensor]:
    """One sentence as float chunks at 24 kHz: the GPT sampled as coqui's `inference_stream` samples it
    (same calls, same settings), its latents decoded every `chunk_tokens` by a `StreamingDecoder`."""
    language = language.split("-")[0]  # as coqui: the country code off
    device = model.device
    tokens = torch.IntTensor(model.tokenizer.encode(text.strip().lower(), lang=language)).unsqueeze(0).to(device)
    fake_inputs = model.gpt.compute_embeddings(latents.to(device), tokens)
    generator = model.gpt.get_generator(
        fake_inputs=fake_inputs,
        top_k=top_k,
        top_p=top_p,
        temperature=temperature,
        do_sample=True,
        num_beams=1,
        num_return_sequences=1,
        length_penalty=float(length_penalty),
        repetition_penalty=float(repetition_penalty),
        output_attentions=False,
        output_hidden_states=True,
        return_dict_in_generate=True,
    )
    decoder = StreamingDecoder(model.hifigan_decoder, speaker.to(device), 1.0 / max(speed, 0.05))
    pending: list[torch.Tensor] = []
    try:
        for _token, latent in generator:
            pending.append(latent)
            if len(pending) >= chunk_tokens:
                wav = decoder.push(torch.cat(pending))
                pending = []
                if wav.numel():
                    yield wav
        wav = decoder.finish(torch.cat(pending) if pending else None)
        if wav.numel():
            yield wav
    finally:
        generator.close()  # a client that left: the GPT's generation ends here
