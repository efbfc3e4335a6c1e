"""Test helpers: real demo clips as model samples, without the data pipeline."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import soundfile as sf
import torch


def corpus_samples(corpus_dir: Path, tokenizer, limit: int, corpus: str | None = None, language: str = "hu"):
    """The first `limit` clips of a coqui-format corpus as samples (text ids, wav, corpus, key)."""
    lines = (corpus_dir / "metadata.csv").read_text(encoding="utf-8").splitlines()
    rows = [line.split("|") for line in lines[1 : limit + 1]]
    samples = []
    for audio_file, text, _ in rows:
        wav, sr = sf.read(corpus_dir / audio_file, dtype="float32")
        assert sr == 22050
        samples.append(
            dict(
                text=torch.tensor(tokenizer.encode(text, language)),
                wav=torch.from_numpy(wav),
                corpus=corpus or corpus_dir.name,
                key=Path(audio_file).stem,
            )
        )
    return samples


class RecordKeys(L.Callback):
    """Appends, per trained batch, `global_step epoch key key ...` to `out` (given to the CLI as
    `--trainer.callbacks+=helpers.RecordKeys`), so tests can see which clips each step trained on."""

    def __init__(self, out: str):
        self.out = out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        with open(self.out, "a") as f:
            f.write(f"{trainer.global_step} {trainer.current_epoch} {' '.join(batch.key)}\n")
