"""Speech metrics that do not depend on the model being judged: pure functions of a waveform.

Two real pretrained models that ship their weights inside their PyPI wheels, so they work offline:
- resemblyzer (a GE2E speaker encoder): speaker similarity, the cosine of a clip's embedding to the
  mean embedding of reference clips;
- silero-vad (a voice activity detector): where the speech is, hence the speech ratio, the leading
  and trailing silence, and the speaking rate (letters and digits per second of speech).

Used by `compare` and `generate` (every sample), `SampleAudio` (TensorBoard) and `prepare` (clips of
another speaker). Thresholds were chosen from measurements on this project's espeak-ng speech (see
the README, "How the judge decides"): the same voice scores 0.88-0.97 against its references,
another voice (hu+f3) 0.66-0.71, white noise about 0.51.

Both models are loaded once per process, and run on one CPU thread: silero runs a small model per
32 ms window, and more threads only add overhead (measured 3-4x slower on two).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from math import gcd

import numpy as np

RATE = 16000  # both models read 16 kHz
EMBEDDING_SIZE = 256
# Thresholds (measured; see the module docstring and the README).
MIN_EMBEDDING_SPEECH = 0.5  # s of detected speech below which a speaker embedding means little
NO_SPEECH_SECONDS = 0.3  # less detected speech than this: no_speech
NO_SPEECH_RATIO = 0.1  # or speech in less than 10% of the clip (espeak speech: 0.79-0.97; noise: 0.0)
TOO_FAST, TOO_SLOW = 1.25, 0.75  # speaking rate over the references' rate (espeak -s 200: 1.26-1.40)
OUTLIER_MARGIN = 0.10  # another speaker: 0.10 below the corpus's typical similarity to its centroid

_lock = threading.RLock()
_models: dict = {}


@contextlib.contextmanager
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _model(name: str, device: str = "cpu"):
    """The speaker encoder (on `device`) or the VAD, loaded once per process (a DataLoader worker
    loads its own)."""
    key = (name, device, os.getpid())
    with _lock:
        if key not in _models:
            _models[key] = _load_encoder(device) if name == "encoder" else _load_vad()
        return _models[key]


def _load_encoder(device: str = "cpu"):
    try:
        with warnings.catch_warnings():
            # resemblyzer imports webrtcvad (pkg_resources) and an old scipy path: their deprecations.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            from resemblyzer import VoiceEncoder, normalize_volume
    except ImportError as err:  # Windows without a C compiler for webrtcvad (see the README)
        from .log import say

        say(f"speaker similarity is not available: resemblyzer does not import ({err}); see the README, Windows")
        return None
    return VoiceEncoder(device=device, verbose=False), normalize_volume


def _load_vad():
    import torch

    threads = torch.get_num_threads()  # importing silero_vad sets the whole process to one thread
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load on torch 2.11
            from silero_vad import get_speech_timestamps, load_silero_vad

            return load_silero_vad(onnx=False), get_speech_timestamps
    finally:
        torch.set_num_threads(threads)


def to_16k(wav: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 at 16 kHz (polyphase resampling; no FFmpeg involved)."""
    wav = np.nan_to_num(np.asarray(wav, dtype=np.float32).reshape(-1))
    if rate == RATE or len(wav) == 0:
        return wav
    from scipy.signal import resample_poly

    g = gcd(int(rate), RATE)
    return resample_poly(wav, RATE // g, int(rate) // g).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Where the speech is


def speech_segments(wav: np.ndarray, rate: int) -> list[tuple[float, float]]:
    """[(start, end)] in seconds of the speech silero-vad finds."""
    import torch

    x = to_16k(wav, rate)
    if len(x) < 512:  # shorter than one VAD window
        return []
    model, timestamps = _model("vad")
    with _lock, _one_thread(), torch.inference_mode():
        found = timestamps(
            torch.from_numpy(np.ascontiguousarray(x)),
            model,
            threshold=0.5,
            sampling_rate=RATE,
            min_speech_duration_ms=250,
            min_silence_duration_ms=100,
            speech_pad_ms=30,
        )
    return [(t["start"] / RATE, t["end"] / RATE) for t in found]


@dataclass
class SpeechTiming:
    seconds: float  # the clip's length
    speech_seconds: float
    speech_ratio: float
    leading_silence: float
    trailing_silence: float
    segments: list[tuple[float, float]] = field(repr=False, default_factory=list)

    @property
    def no_speech(self) -> bool:
        return self.speech_seconds < NO_SPEECH_SECONDS or self.speech_ratio < NO_SPEECH_RATIO


def speech_timing(wav: np.ndarray, rate: int) -> SpeechTiming:
    seconds = len(np.asarray(wav).reshape(-1)) / rate
    segments = speech_segments(wav, rate)
    speech = float(sum(end - start for start, end in segments))
    return SpeechTiming(
        seconds=seconds,
        speech_seconds=speech,
        speech_ratio=min(1.0, speech / seconds) if seconds else 0.0,
        leading_silence=segments[0][0] if segments else seconds,
        trailing_silence=max(0.0, seconds - segments[-1][1]) if segments else seconds,
        segments=segments,
    )


def spoken_characters(text: str) -> int:
    """Letters and digits: what is spoken (spaces and punctuation are not)."""
    return sum(ch.isalnum() for ch in text)


def speaking_rate(text: str, speech_seconds: float) -> float:
    """Letters and digits of `text` per second of detected speech; NaN without speech."""
    return spoken_characters(text) / speech_seconds if speech_seconds > 0 else math.nan


# ---------------------------------------------------------------------------------------------
# Who speaks


def speaker_embedding(
    wav: np.ndarray, rate: int, timing: SpeechTiming | None = None, whole: bool = False
) -> np.ndarray | None:
    """The GE2E embedding (256 values, unit length) of the speech in a clip: its detected speech
    when there is enough of it, else the whole clip (so that noise gets the low similarity it
    deserves rather than none); None for a silent clip. `whole`: embed the whole clip without a VAD
    pass (for clips known to be mostly speech: the same similarities, measured, at half the cost)."""
    x = to_16k(wav, rate)
    if not np.any(x):
        return None
    timing = None if whole else (timing or speech_timing(x, RATE))
    if timing is not None and timing.speech_seconds >= MIN_EMBEDDING_SPEECH:
        x = np.concatenate([x[int(s * RATE) : int(e * RATE)] for s, e in timing.segments])
    # resemblyzer's embed_utterance, with its mel computed in torch: the same embedding within 1e-5,
    # without the import of librosa and numba that its own mel costs (about 2 s a process).
    return speaker_embeddings([x], RATE)[0]


def speaker_embeddings(wavs: Sequence[np.ndarray], rate: int, device: str = "cpu") -> list[np.ndarray | None]:
    """resemblyzer's `embed_utterance` of each of `wavs` (whole, no VAD pass), with the partial
    utterances of all of them in one pass of the encoder (`embed_utterance` runs one per clip): the
    same embeddings within float rounding, in a fraction of the encoder's time per clip on a GPU, and
    less on a CPU. Thread-safe: prepare calls it from several threads."""
    import torch

    loaded = _model("encoder", device)
    if loaded is None:
        return [None] * len(wavs)
    encoder, normalize_volume = loaded
    partials, counts = [], []
    for wav in wavs:
        x = to_16k(wav, rate)
        if not np.any(x):
            counts.append(0)
            continue
        x = normalize_volume(x, -30, increase_only=True)
        # What embed_utterance does before its encoder pass, at its defaults (1.3 partials a second).
        wav_slices, mel_slices = encoder.compute_partial_slices(len(x), rate=1.3, min_coverage=0.75)
        if wav_slices[-1].stop >= len(x):
            x = np.pad(x, (0, wav_slices[-1].stop - len(x)), "constant")
        mel = _encoder_mel(x)
        partials.extend(mel[s] for s in mel_slices)
        counts.append(len(mel_slices))
    if not partials:
        return [None] * len(wavs)
    with _one_thread(), torch.inference_mode():  # as speaker_embedding: two threads measured slower
        embedded = encoder(torch.from_numpy(np.array(partials)).to(encoder.device)).cpu().numpy()
    out, at = [], 0
    for n in counts:
        raw = np.mean(embedded[at : at + n], axis=0) if n else None
        out.append(None if raw is None else (raw / np.linalg.norm(raw, 2)).astype(np.float32))
        at += n
    return out


def _encoder_mel(x: np.ndarray) -> np.ndarray:
    """resemblyzer's `wav_to_mel_spectrogram` (librosa: power 2, 25 ms Hann windows every 10 ms,
    centered with zero padding, 40 slaney mels) in torch, [frames, 40]: the same within float
    rounding, without librosa's 12 ms einsum per clip and its import (several seconds per process)."""
    import torch
    import torchaudio

    n_fft, hop, n_mels = 400, 160, 40
    if "mel_basis" not in _models:
        _models["mel_basis"] = torchaudio.functional.melscale_fbanks(
            n_fft // 2 + 1, 0.0, RATE / 2, n_mels, RATE, norm="slaney", mel_scale="slaney"
        )
    spec = torch.stft(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        n_fft,
        hop,
        window=torch.hann_window(n_fft),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    return (spec.abs().pow(2).T @ _models["mel_basis"]).numpy()


def mean_embedding(embeddings) -> np.ndarray | None:
    """The unit-length mean of the embeddings that exist."""
    found = [e for e in embeddings if e is not None]
    if not found:
        return None
    mean = np.mean(found, axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)


def cosine(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None:
        return math.nan
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def outlier_threshold(typical: float) -> float:
    """Below this similarity to a speaker's centroid, a clip is another speaker (or badly degraded
    audio, which scores as low: white noise at 10 dB SNR gives 0.74). `typical`: the corpus's median
    (espeak speech 0.96, so 0.86; a human corpus at 0.85 gives 0.75)."""
    return typical - OUTLIER_MARGIN


def speaker_outliers(embeddings: list[np.ndarray | None]) -> tuple[list[float], float]:
    """Each clip's similarity to the corpus's speaker, and the threshold under which a clip is
    another speaker. The speaker's centroid is taken twice: over every clip, then again over the
    clips that passed, so that a second voice (an interviewer's 10-20% of the clips) does not pull
    the centroid towards itself. Silent clips (no embedding) get NaN and are not flagged."""
    rows = np.full((len(embeddings), EMBEDDING_SIZE), np.nan, dtype=np.float32)
    for row, e in zip(rows, embeddings):
        if e is not None:
            row[:] = e
    similarities, threshold = speaker_outliers_in(lambda: [rows])
    return similarities.tolist(), threshold


def speaker_outliers_in(chunks: Callable[[], Iterable[np.ndarray]]) -> tuple[np.ndarray, float]:
    """`speaker_outliers` of embeddings read in chunks of rows (a NaN row: a silent clip), read again
    for every pass: it holds one chunk and one similarity per clip, whatever the corpus size."""

    def centroid(keep: np.ndarray | None) -> np.ndarray | None:
        total, count, at = np.zeros(EMBEDDING_SIZE), 0, 0
        for chunk in chunks():
            use = ~np.isnan(chunk[:, 0]) if keep is None else keep[at : at + len(chunk)]
            total += chunk[use].sum(axis=0, dtype=np.float64)
            count += int(use.sum())
            at += len(chunk)
        return total / np.linalg.norm(total) if count else None

    def similarities(c: np.ndarray | None) -> np.ndarray:
        parts = [
            np.full(len(chunk), np.nan) if c is None else chunk @ c / np.linalg.norm(chunk, axis=1)
            for chunk in chunks()
        ]
        return np.concatenate(parts) if parts else np.zeros(0)

    present = sum(int((~np.isnan(chunk[:, 0])).sum()) for chunk in chunks())
    if present < 3:
        return similarities(None), math.nan
    c = centroid(None)
    for _ in range(2):
        s = similarities(c)
        with np.errstate(invalid="ignore"):
            c = centroid(s >= outlier_threshold(float(np.nanmedian(s))))
    s = similarities(c)
    return s, outlier_threshold(float(np.nanmedian(s)))


# ---------------------------------------------------------------------------------------------
# A reference voice, and one generated clip judged against it


@dataclass
class Reference:
    """What the judge compares with: the references' mean embedding and speaking rate."""

    embedding: np.ndarray | None
    rate: float  # median letters and digits per second of speech; NaN when unknown
    clips: int

    @classmethod
    def of(cls, wavs: list[tuple[np.ndarray, int]], texts: list[str | None] | None = None) -> Reference:
        timings = [speech_timing(w, r) for w, r in wavs]
        embeddings = [speaker_embedding(w, r, t) for (w, r), t in zip(wavs, timings)]
        rates = [speaking_rate(t, s.speech_seconds) for t, s in zip(texts or [], timings) if t]
        rates = [r for r in rates if not math.isnan(r)]
        return cls(mean_embedding(embeddings), float(np.median(rates)) if rates else math.nan, len(wavs))


def judge(wav: np.ndarray, rate: int, text: str, reference: Reference, hit_token_limit: bool = False) -> dict:
    """Every figure of one generated clip, and its flags: no_speech, runaway (generation ran to its
    token limit), too_fast / too_slow (against the references' speaking rate)."""
    timing = speech_timing(wav, rate)
    # A clip with no speech has no speaker: its similarity would be a figure that means nothing.
    similarity = math.nan if timing.no_speech else cosine(speaker_embedding(wav, rate, timing), reference.embedding)
    speed = speaking_rate(text, timing.speech_seconds)
    relative = speed / reference.rate if reference.rate == reference.rate and speed == speed else math.nan
    flags = []
    if timing.no_speech:
        flags.append("no_speech")
    if hit_token_limit:
        flags.append("runaway")
    if not timing.no_speech and relative > TOO_FAST:
        flags.append("too_fast")
    if not timing.no_speech and relative < TOO_SLOW:
        flags.append("too_slow")
    return {
        "speaker_similarity": _round(similarity),
        "speech_ratio": _round(timing.speech_ratio),
        "speech_seconds": _round(timing.speech_seconds),
        "leading_silence": _round(timing.leading_silence),
        "trailing_silence": _round(timing.trailing_silence),
        "speaking_rate": _round(speed),
        "relative_rate": _round(relative),
        "flags": flags,
    }


def _round(value: float) -> float | None:
    """JSON has no NaN: an undefined figure is null."""
    return None if value is None or value != value else round(float(value), 4)
