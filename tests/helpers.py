"""Test helpers: real demo clips as model samples, without the data pipeline."""

from __future__ import annotations

import csv
from pathlib import Path

import soundfile as sf
import torch


def corpus_samples(corpus_dir: Path, tokenizer, limit: int, corpus: str | None = None, language: str = "hu"):
    """The first `limit` clips of a coqui-format corpus as samples (text ids, wav, corpus, key)."""
    with open(corpus_dir / "metadata.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="|"))[1:limit + 1]
    samples = []
    for audio_file, text, _ in rows:
        wav, sr = sf.read(corpus_dir / audio_file, dtype="float32")
        assert sr == 22050
        samples.append(dict(text=torch.tensor(tokenizer.encode(text, language)), wav=torch.from_numpy(wav),
                            corpus=corpus or corpus_dir.name, key=Path(audio_file).stem))
    return samples
