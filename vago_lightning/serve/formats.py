"""The response formats of OpenAI's speech endpoint, from float chunks at 24 kHz.

`pcm` (16-bit little-endian mono, no header) and `wav` stream chunk by chunk; a streamed WAV
header cannot know the length, so it says "unknown" (0xFFFFFFFF) as streaming servers do, and
players read to the end. `flac`, `mp3` and `opus` are encoded once the audio is complete, by the
libsndfile that soundfile ships (mp3 and opus only where that build has the codec).
"""

from __future__ import annotations

import io
import struct

import numpy as np
import soundfile as sf

from ..constants import OUTPUT_RATE

STREAMED = ("pcm", "wav")
# format: (libsndfile format, subtype, media type)
ENCODED = {
    "flac": ("FLAC", "PCM_16", "audio/flac"),
    "mp3": ("MP3", "MPEG_LAYER_III", "audio/mpeg"),
    "opus": ("OGG", "OPUS", "audio/ogg"),
}
MEDIA_TYPES = {"pcm": "audio/pcm", "wav": "audio/wav", **{k: v[2] for k, v in ENCODED.items()}}
OPENAI_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")


def available_formats() -> list[str]:
    """The formats this machine can answer in (aac has no encoder in libsndfile)."""
    have = sf.available_formats()
    return [
        *STREAMED,
        *(name for name, (fmt, subtype, _) in ENCODED.items() if fmt in have and subtype in sf.available_subtypes(fmt)),
    ]


def pcm16(chunk: np.ndarray) -> bytes:
    return (np.clip(chunk, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def wav_stream_header(rate: int = OUTPUT_RATE) -> bytes:
    """A 44-byte PCM WAV header whose RIFF and data sizes say 'unknown length'."""
    unknown = 0xFFFFFFFF
    return (
        b"RIFF"
        + struct.pack("<I", unknown)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", unknown)
    )


def encode(audio: np.ndarray, response_format: str) -> bytes:
    """A whole answer in flac, mp3 or opus."""
    fmt, subtype, _ = ENCODED[response_format]
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1.0, 1.0), OUTPUT_RATE, format=fmt, subtype=subtype)
    return buffer.getvalue()
