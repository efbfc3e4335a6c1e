"""Training callbacks: measurements that belong to the run, not to the model."""

from __future__ import annotations

import sys
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar

from ..constants import OUTPUT_RATE, SAMPLE_RATE
from ..log import say


class Throughput(L.Callback):
    """Logs `train/samples_per_sec` and `train/audio_sec_per_sec` over the last `window` batches, and on
    a GPU `train/gpu_peak_gb` (torch.cuda.max_memory_allocated)."""

    def __init__(self, window: int = 10):
        self.window = window
        self._start = None
        self._samples = 0
        self._audio = 0.0
        self._batches = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._samples += batch.size
        self._audio += float(batch.wav_lengths.sum()) / SAMPLE_RATE
        self._batches += 1
        if self._batches >= self.window:
            elapsed = time.perf_counter() - self._start
            pl_module.log("train/samples_per_sec", self._samples / elapsed, rank_zero_only=True)
            pl_module.log("train/audio_sec_per_sec", self._audio / elapsed, rank_zero_only=True)
            if pl_module.device.type == "cuda":  # what the 12 GB card actually holds at its peak
                peak = torch.cuda.max_memory_allocated(pl_module.device) / 1024**3
                pl_module.log("train/gpu_peak_gb", peak, rank_zero_only=True)
            self._start, self._samples, self._audio, self._batches = None, 0, 0.0, 0


class ConsoleProgress(RichProgressBar):
    """The live progress bar in a terminal. Without one (output to a file or a CI log), a plain line
    every `every_n_steps` steps and after each validation instead, which a log keeps readable."""

    def __init__(self, every_n_steps: int = 10, **kwargs):
        super().__init__(**kwargs)
        self.every_n_steps = every_n_steps
        self.plain = False
        self._last = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.plain = not sys.stdout.isatty()
        if self.plain:
            self.disable()
        else:
            super().setup(trainer, pl_module, stage)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.plain:
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        step = trainer.global_step
        if step % self.every_n_steps == 0:
            now = time.perf_counter()
            pace = f", {(now - self._last[1]) / max(1, step - self._last[0]):.2f} s/step" if self._last else ""
            self._last = (step, now)
            total = f"/{trainer.max_steps}" if trainer.max_steps > 0 else ""
            metrics = self._metrics(trainer, "train/")
            print(f"step {step}{total} epoch {trainer.current_epoch}{pace} | {metrics}", flush=True)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not self.plain:
            return super().on_validation_end(trainer, pl_module)
        if not trainer.sanity_checking:
            print(f"validation at step {trainer.global_step} | {self._metrics(trainer, 'val/')}", flush=True)

    @staticmethod
    def _metrics(trainer, prefix: str) -> str:
        metrics = trainer.callback_metrics
        return " ".join(f"{k}={float(v):.4f}" for k, v in sorted(metrics.items()) if k.startswith(prefix))


class SampleAudio(L.Callback):
    """Every `every_n_validations` validations, speaks one sentence per register with the current GPT
    (and the base's HiFiGAN decoder), logs it to TensorBoard as audio (`samples/<register>`) and the
    judge's figures beside it (`samples/speaker_similarity/<register>`, `samples/speech_ratio/<register>`),
    so a voice that improves or collapses shows in a curve without listening to every sample.

    The voice comes from `reference` (a wav) or else from the first validation clip. Synthesis runs
    on `device` ("cpu" keeps the GPU's memory for training; null: the training device)."""

    def __init__(
        self,
        every_n_validations: int = 5,
        sentences: dict[str, str] | None = None,
        reference: str | None = None,
        temperature: float = 0.65,
        max_new_tokens: int | None = None,
        device: str | None = "cpu",
    ):
        self.every = every_n_validations
        self.sentences = sentences or {
            "quiz": "Jó estét kívánok, kezdődik a mai játék!",
            "conversation": "Tudja, ezt a kérdést már sokan feltették nekem.",
        }
        self.reference = reference
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.validations = 0
        self._model = None
        self._reference_wav = None
        self._judge_reference = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self.validations += 1
        if self.validations % self.every or not trainer.is_global_zero or trainer.logger is None:
            return
        import torch

        from .. import metrics
        from ..inference.synthesis import Settings, copy_gpt_weights, speak, voice_from_waveforms

        start = time.perf_counter()
        say(
            f"sample audio: speaking {len(self.sentences)} sentences with the GPT of step {trainer.global_step} on "
            f"{self.device or pl_module.device} and judging them (every {self.every} validations; SampleAudio)",
            warning=False,
        )
        model = self._inference_model(pl_module)
        copy_gpt_weights(pl_module.gpt, model)
        reference = self._reference(trainer)
        voice = voice_from_waveforms(model, [reference])
        if self._judge_reference is None:
            self._judge_reference = metrics.Reference.of([(reference.numpy(), SAMPLE_RATE)])
        settings = Settings(
            language=pl_module.hparams.language, temperature=self.temperature, max_new_tokens=self.max_new_tokens
        )
        experiment = trainer.logger.experiment
        figures = []
        for register, text in self.sentences.items():
            wav, runaway = speak(model, text, voice, settings)
            judged = metrics.judge(wav, OUTPUT_RATE, text, self._judge_reference, hit_token_limit=runaway)
            similarity = "– (no speech)" if judged["speaker_similarity"] is None else judged["speaker_similarity"]
            figures.append(f"{register}: similarity {similarity}, speech {judged['speech_ratio']}")
            if hasattr(experiment, "add_audio"):
                step = trainer.global_step
                experiment.add_audio(f"samples/{register}", torch.from_numpy(wav)[None], step, sample_rate=OUTPUT_RATE)
                experiment.add_text(f"samples/{register}", f"{text} ({', '.join(judged['flags']) or 'ok'})", step)
                for name in ("speaker_similarity", "speech_ratio"):
                    value = judged[name] if judged[name] is not None else float("nan")
                    experiment.add_scalar(f"samples/{name}/{register}", value, step)
        say(
            f"sample audio: {'; '.join(figures)}; took {time.perf_counter() - start:.1f} s (TensorBoard: samples/)",
            warning=False,
        )

    def _inference_model(self, pl_module):
        if self._model is None:
            from ..inference.synthesis import load_xtts

            self._model = load_xtts(pl_module.hparams.base_model, self.device or str(pl_module.device))
        return self._model

    def _reference(self, trainer):
        import torch

        if self._reference_wav is None:
            if self.reference:
                from pathlib import Path

                from ..data.audio import load_clip

                self._reference_wav = torch.from_numpy(load_clip(Path(self.reference)).wav)
            else:
                batch = next(iter(trainer.val_dataloaders))
                self._reference_wav = batch.wav[0, : int(batch.wav_lengths[0])].cpu()
        return self._reference_wav
