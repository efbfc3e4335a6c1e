"""Audio I/O and clip checks: soundfile decoding (no FFmpeg), 22,050 Hz mono, FLAC encoding."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..constants import MAX_WAV_SAMPLES, SAMPLE_RATE
from ..errors import AudioError, DataError


@dataclass
class Clip:
    wav: np.ndarray  # float32 [T] at 22,050 Hz, mono
    source_rate: int
    source_channels: int
    source_subtype: str

    @property
    def seconds(self) -> float:
        return len(self.wav) / SAMPLE_RATE

    @property
    def converted(self) -> bool:
        return self.source_rate != SAMPLE_RATE or self.source_channels != 1


def load_clip(path: Path, start: float | None = None, end: float | None = None) -> Clip:
    """Decode `path` (or its [start, end) seconds) to 22,050 Hz mono float32, or raise AudioError."""
    if not path.is_file():
        raise AudioError("missing_file", f"{path} does not exist")
    try:
        info = sf.info(str(path))
        first = int(round((start or 0.0) * info.samplerate))
        last = int(round(end * info.samplerate)) if end is not None else info.frames
        data, rate = sf.read(str(path), start=first, stop=min(last, info.frames), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise AudioError("undecodable", f"{path}: {err}") from None
    if data.size == 0:
        raise AudioError("undecodable", f"{path}: no audio frames")
    declared = max(info.frames, wav_declared_frames(path) or 0)
    wanted = (min(int(round(end * info.samplerate)), declared) if end is not None else declared) - first
    if len(data) < wanted:
        raise AudioError(
            "truncated",
            f"{path}: the header says {wanted / info.samplerate:.2f} s, only "
            f"{len(data) / info.samplerate:.2f} s decode (a file cut short); export it again",
        )
    if not np.isfinite(data).all():
        raise AudioError("non_finite", f"{path}: NaN or infinite samples")
    wav = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        import torch  # here, not at the top: `prepare --help` and the corpus readers need no torch
        import torchaudio.functional as AF

        wav = AF.resample(
            torch.from_numpy(wav),
            rate,
            SAMPLE_RATE,
            lowpass_filter_width=64,
            rolloff=0.9475937167399596,
            resampling_method="sinc_interp_kaiser",
            beta=14.769656459379492,
        ).numpy()
    return Clip(np.clip(wav, -1.0, 1.0).astype(np.float32), rate, data.shape[1], info.subtype)


def wav_declared_frames(path: Path) -> int | None:
    """The frame count a WAV header declares (its data chunk's size), or None for other files and
    streamed WAVs that leave it open. libsndfile counts what is there, so a file cut short would
    pass for a shorter clip with the whole sentence's text."""
    if path.suffix.lower() != ".wav":
        return None
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            kind, size = chunk[:4], int.from_bytes(chunk[4:8], "little")
            if kind == b"fmt ":
                fmt = f.read(size)
                block_align = int.from_bytes(fmt[12:14], "little") if len(fmt) >= 14 else None
                f.seek(size % 2, 1)
            elif kind == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            else:
                f.seek(size + size % 2, 1)


@dataclass
class ClipLimits:
    min_seconds: float = 1.0
    max_samples: int = MAX_WAV_SAMPLES
    silence_dbfs: float = -50.0  # RMS below this is a silent clip
    clipped_fraction: float = 0.01  # more than 1% of samples at full scale is heavy clipping


def check_clip(clip: Clip, limits: ClipLimits) -> None:
    """Raise AudioError for a clip the trainer should not see."""
    n = len(clip.wav)
    if n < limits.min_seconds * SAMPLE_RATE:
        raise AudioError("too_short", f"{clip.seconds:.2f} s < {limits.min_seconds} s")
    if n > limits.max_samples:
        raise AudioError("too_long", f"{clip.seconds:.2f} s > {limits.max_samples / SAMPLE_RATE:.2f} s (XTTS limit)")
    rms = float(np.sqrt(np.mean(np.square(clip.wav, dtype=np.float64))))
    dbfs = 20 * np.log10(max(rms, 1e-12))
    if dbfs < limits.silence_dbfs:
        raise AudioError("silent", f"RMS {dbfs:.1f} dBFS < {limits.silence_dbfs} dBFS")
    clipped = float(np.mean(np.abs(clip.wav) >= 0.999))
    if clipped > limits.clipped_fraction:
        raise AudioError("clipped", f"{clipped:.1%} of samples at full scale")


def encode_flac(clip: Clip) -> bytes:
    """FLAC at 22,050 Hz mono: 16-bit when the source was 16-bit 22,050 Hz mono (bit-exact), else 24-bit."""
    subtype = "PCM_16" if (clip.source_subtype == "PCM_16" and not clip.converted) else "PCM_24"
    buffer = io.BytesIO()
    sf.write(buffer, clip.wav, SAMPLE_RATE, format="FLAC", subtype=subtype)
    return buffer.getvalue()


def decode_flac(data: bytes) -> np.ndarray:
    wav, rate = sf.read(io.BytesIO(data), dtype="float32")
    if rate != SAMPLE_RATE:
        raise DataError(f"shard audio at {rate} Hz, expected {SAMPLE_RATE}: run prepare again")
    return wav
