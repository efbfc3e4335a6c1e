"""Two small Hungarian demo corpora, synthesized offline with eSpeak NG (see `espeak.py`).

Each corpus is in coqui's fine-tuning format: `metadata.csv` (header `audio_file|text|speaker_name`,
paths relative to the corpus) and `wavs/`. The quiz corpus is one voice at a brisk quiz-show pace;
the interview is the same voice slower and lower, as a conversation. Output is deterministic for a
given seed on a given machine (the synthesis is deterministic).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from ..errors import OutputExistsError
from ..files import publish_dir
from . import espeak
from .text import interview_sentences, quiz_sentences

SPEAKER = "demo_host"
# The longest demo clip stays under the seed's 10 s "long" ceiling and XTTS's 11.6 s limit.
MAX_SECONDS = 10.0


@dataclass(frozen=True)
class Voice:
    name: str = "hu"
    speed: int = 160  # words per minute
    pitch: int = 50  # 0-99


QUIZ_VOICE = Voice(speed=150, pitch=58)
INTERVIEW_VOICE = Voice(speed=145, pitch=44)


def synthesize(text: str, voice: Voice, out: Path) -> float:
    """Speak `text` into a 22,050 Hz mono 16-bit wav at `out`; return its duration in seconds."""
    samples, rate = espeak.synthesize(text, voice.name, voice.speed, voice.pitch)
    sf.write(out, samples, rate, subtype="PCM_16")
    return len(samples) / rate


def _synthesize_fitting(text: str, voice: Voice, out: Path) -> tuple[str, float]:
    """Synthesize; while the clip is too long, drop the last clause (deterministic)."""
    while True:
        seconds = synthesize(text, voice, out)
        if seconds <= MAX_SECONDS or ", " not in text:
            return text, seconds
        text = text.rsplit(", ", 1)[0] + "."


def write_corpus(out: Path, texts: list[str], voice: Voice, prefix: str, workers: int = 2) -> list[dict]:
    """Write one corpus atomically: it appears at `out` only once every clip and the metadata exist."""
    names = [f"{prefix}_{i:04d}" for i in range(len(texts))]
    with publish_dir(out) as tmp:
        (tmp / "wavs").mkdir()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(
                pool.map(
                    lambda nt: _synthesize_fitting(nt[1], voice, tmp / "wavs" / f"{nt[0]}.wav"),
                    zip(names, texts),
                )
            )
        rows = [
            dict(audio_file=f"wavs/{name}.wav", text=text, speaker_name=SPEAKER, seconds=seconds)
            for name, (text, seconds) in zip(names, results)
        ]
        # Plain `|`-separated lines, no CSV quoting: the format prepare (and coqui) read.
        lines = ["audio_file|text|speaker_name"]
        lines += [f"{r['audio_file']}|{r['text']}|{r['speaker_name']}" for r in rows]
        (tmp / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rows


def write_demo_corpora(out: str | Path, seed: int = 0, workers: int = 2, overwrite: bool = False) -> dict:
    """Write `out/quiz` and `out/interview`; returns {corpus: rows}. Refuses to overwrite unless asked."""
    out = Path(out)
    corpora = {
        "quiz": (quiz_sentences(), QUIZ_VOICE, "quiz"),
        "interview": (interview_sentences(seed), INTERVIEW_VOICE, "interview"),
    }
    for name in corpora:
        if (out / name).exists() and not overwrite:
            raise OutputExistsError(f"{out / name}: exists; pass --overwrite to write the demo corpora again")
    return {name: write_corpus(out / name, *spec, workers) for name, spec in corpora.items()}


def describe(rows: list[dict]) -> str:
    seconds = [r["seconds"] for r in rows]
    short = sum(s < 4 for s in seconds)
    long_ = sum(s >= 7 for s in seconds)
    return (
        f"{len(rows)} clips, {sum(seconds) / 60:.1f} min "
        f"(short {short}, medium {len(rows) - short - long_}, long {long_}; longest {max(seconds):.1f} s)"
    )
