"""The voice model behind the server, without any web code: load a folder in the XTTS-v2 release
layout, hold its voices, and stream speech sentence by sentence. One Engine is used by one thread at
a time (the queue in `queue.py` guarantees it); nothing here reads or writes a path a client named.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..constants import OUTPUT_RATE
from ..inference.precision import autocast, quantize_gpt_int8, remove_weight_norm, resolve_precision
from ..inference.streaming import stream_sentence
from ..inference.synthesis import Settings, load_xtts, split_sentences, token_limit, voice_from_references
from ..normalise import join_digit_groups

# A voice is a name: letters, digits and _ . - (no slash, so never a path), at most 64 characters.
VOICE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
PAUSE_SECONDS = 0.2  # silence between sentences, as `generate` joins them
TOKEN_MARGIN = 20  # split a piece again when its text tokens come this close to XTTS's 400 limit


@dataclass
class SpeechSettings(Settings):
    """`generate`'s sampling settings, and what streaming adds."""

    speed: float = 1.0
    stream_chunk_size: int = 20  # GPT tokens per streamed chunk (~0.93 s of speech)


class Engine:
    """An XTTS model and its voices: the export's named speakers (speakers_xtts.pth) and the ones given
    as recordings at start (their latents computed once, here)."""

    def __init__(
        self, model_dir: Path, voices: dict[str, list[Path]] | None = None, device: str = "cpu", precision="auto"
    ):
        self.model_dir = Path(model_dir)
        self.device = device
        self.precision = resolve_precision(precision, device)
        self.model = load_xtts(self.model_dir, device)
        remove_weight_norm(self.model.hifigan_decoder.waveform_decoder)  # the same weights, computed once
        if self.precision == "int8":
            quantize_gpt_int8(self.model.gpt.gpt)
        self.voices: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        manager = getattr(self.model, "speaker_manager", None)
        for name, entry in (manager.speakers if manager is not None else {}).items():
            self.voices[str(name)] = (entry["gpt_cond_latent"], entry["speaker_embedding"])
        for name, paths in (voices or {}).items():
            self.voices[name] = voice_from_references(self.model, [Path(p) for p in paths])
        self.languages = list(self.model.config.languages)
        self.max_text_tokens = self.model.args.gpt_max_text_tokens

    def pieces(self, text: str, language: str) -> list[str]:
        """The text cut at sentence ends into pieces the model takes: under the language's character
        limit (hu 224) and safely under XTTS's 400 text tokens."""
        limit = self.model.tokenizer.char_limits.get(language, 250)
        out: list[str] = []
        for piece in split_sentences(join_digit_groups(text), limit):  # 100 000 read as prepare reads it
            out += self._under_token_limit(piece, language)
        return out

    def _under_token_limit(self, piece: str, language: str) -> list[str]:
        tokens = len(self.model.tokenizer.encode(piece.lower(), lang=language))
        if tokens < self.max_text_tokens - TOKEN_MARGIN or " " not in piece:
            return [piece]
        cut = piece.rfind(" ", 0, len(piece) // 2 + 1)
        cut = cut if cut > 0 else piece.find(" ")
        return self._under_token_limit(piece[:cut].strip(), language) + self._under_token_limit(
            piece[cut:].strip(), language
        )

    @torch.inference_mode()
    def stream(self, text: str, voice: str, settings: SpeechSettings, stop: threading.Event) -> Iterator[np.ndarray]:
        """Float32 chunks at 24 kHz as the model makes them (`streaming.stream_sentence`: coqui's GPT
        sampling, each sample decoded once), sentence by sentence, PAUSE_SECONDS apart. Checks `stop`
        between chunks: a client that left ends it."""
        latents, speaker = self.voices[voice]
        pause = np.zeros(int(PAUSE_SECONDS * OUTPUT_RATE), dtype=np.float32)
        for i, piece in enumerate(self.pieces(text, settings.language)):
            if stop.is_set():
                return
            if i:
                yield pause
            torch.manual_seed(settings.seed)  # the same text, voice and seed give the same audio
            with token_limit(self.model, piece, settings.max_new_tokens), autocast(self.precision, self.device):
                chunks = stream_sentence(
                    self.model,
                    piece,
                    settings.language,
                    latents,
                    speaker,
                    chunk_tokens=settings.stream_chunk_size,
                    temperature=settings.temperature,
                    top_k=settings.top_k,
                    top_p=settings.top_p,
                    repetition_penalty=settings.repetition_penalty,
                    speed=settings.speed,
                )
                for chunk in chunks:
                    if stop.is_set():
                        chunks.close()
                        return
                    yield chunk.detach().float().cpu().numpy().reshape(-1)
