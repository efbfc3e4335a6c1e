"""Test helpers: real demo clips as model samples, without the data pipeline."""

from __future__ import annotations

import contextlib
import json
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


SR = 22050


def scalars(logdir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one TensorBoard scalar, [] when the run never logged it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


def write_ljspeech(root: Path, lines: list[str], demo_root: Path):
    """An LJSpeech corpus whose every line is the demo's first quiz clip under the line's id."""
    (root / "wavs").mkdir(parents=True)
    wav, _ = sf.read(demo_root / "quiz" / "wavs" / "quiz_0001.wav", dtype="float32")
    for line in lines:
        sf.write(root / "wavs" / f"{line.split('|')[0]}.wav", wav, SR)
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_coqui_corpus(root: Path, rows: list[tuple[str, str]], demo_root: Path) -> None:
    """A coqui-format corpus whose every row is the demo's first quiz clip under another file name."""
    (root / "wavs").mkdir(parents=True)
    wav, _ = sf.read(demo_root / "quiz" / "wavs" / "quiz_0001.wav", dtype="float32")
    for name, _ in rows:
        sf.write(root / "wavs" / name, wav, SR)
    lines = ["audio_file|text|speaker_name", *(f"wavs/{name}|{text}|host" for name, text in rows)]
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def rejected_rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]


def srt_time(t: float) -> str:
    return f"00:{int(t) // 60:02d}:{int(t) % 60:02d},{int(round(t * 1000)) % 1000:03d}"
