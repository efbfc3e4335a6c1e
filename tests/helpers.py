"""Test helpers: real demo clips as model samples, without the data pipeline."""

from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path

import lightning as L
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parent.parent

READ_METHODS = ("item", "tolist", "__bool__", "__float__", "__int__")  # each reads a value off the device


def counted_guard(cuda: bool = False, **guard_args):
    """A DivergenceGuard whose per-step hooks are measured: the reads of tensor values they make
    (`reads`, by method, while `counting_reads` is on), the CUDA synchronizations (`syncs`, torch's
    sync debug mode, when `cuda`) and the seconds they take (`seconds`)."""
    from vago_lightning.training.guard import DivergenceGuard

    class Counted(DivergenceGuard):
        def __init__(self):
            super().__init__(**guard_args)
            self.reads: list[str] = []
            self.syncs = 0
            self.seconds = 0.0
            self.inside = False

        def _measured(self, hook, *args):
            self.inside = True
            if cuda:
                torch.cuda.set_sync_debug_mode("warn")
            start = time.perf_counter()
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    hook(*args)
                self.syncs += sum("synchroniz" in str(w.message) for w in caught)
            finally:
                self.seconds += time.perf_counter() - start
                if cuda:
                    torch.cuda.set_sync_debug_mode("default")
                self.inside = False

        def on_before_optimizer_step(self, *args):
            self._measured(super().on_before_optimizer_step, *args)

        def on_train_batch_end(self, *args):
            self._measured(super().on_train_batch_end, *args)

    return Counted()


@contextlib.contextmanager
def counting_reads(guard):
    """While on, every read of a tensor's value made inside `guard`'s hooks is added to `guard.reads`."""
    originals = {name: getattr(torch.Tensor, name) for name in READ_METHODS}

    def counter(name, original):
        def counted(self, *args):
            if guard.inside:
                guard.reads.append(name)
            return original(self, *args)

        return counted

    for name, original in originals.items():
        setattr(torch.Tensor, name, counter(name, original))
    try:
        yield guard
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def configs(*names: str) -> list[str]:
    """`--config REPO/NAME` for each of the repository's YAML files `names`."""
    return [arg for name in names for arg in ("--config", str(REPO / name))]


def quiz_fit_args(tiny_base, shards, *extra: str) -> list[str]:
    """The CLI arguments of the demo's stage one (the quiz corpus) on a test's base and shards."""
    return [
        *configs("finetune.yaml", "configs/demo.yaml", "configs/demo-quiz.yaml"),
        f"--model.base_model={tiny_base}",
        f"--data.shards_dir={shards}",
        "--data.num_workers=0",
        *extra,
    ]


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
