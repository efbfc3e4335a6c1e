"""Training callbacks: measurements that belong to the run, not to the model."""

from __future__ import annotations

import time

import lightning as L

from ..constants import OUTPUT_RATE, SAMPLE_RATE


class Throughput(L.Callback):
    """Logs `train/samples_per_sec` and `train/audio_sec_per_sec` over the last `window` batches."""

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
            self._start, self._samples, self._audio, self._batches = None, 0, 0.0, 0


class SampleAudio(L.Callback):
    """Every `every_n_validations` validations, speaks a few fixed sentences with the current GPT
    (and the base's HiFiGAN decoder) and logs them to TensorBoard as audio (`samples/<n>`).

    The voice comes from `reference` (a wav) or else from the first validation clip. Synthesis runs
    on `device` ("cpu" keeps the GPU's memory for training; null: the training device)."""

    def __init__(
        self,
        every_n_validations: int = 5,
        sentences: list[str] | None = None,
        reference: str | None = None,
        temperature: float = 0.65,
        max_new_tokens: int = 300,
        device: str | None = "cpu",
    ):
        self.every = every_n_validations
        self.sentences = sentences or [
            "Jó estét kívánok, kezdődik a mai játék!",
            "Tudja, ezt a kérdést már sokan feltették nekem.",
        ]
        self.reference = reference
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.validations = 0
        self._model = None
        self._reference_wav = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self.validations += 1
        if self.validations % self.every or not trainer.is_global_zero or trainer.logger is None:
            return
        import torch

        from ..inference.synthesis import Settings, copy_gpt_weights, speak, voice_from_waveforms

        model = self._inference_model(pl_module)
        copy_gpt_weights(pl_module.gpt, model)
        voice = voice_from_waveforms(model, [self._reference(trainer)])
        settings = Settings(
            language=pl_module.hparams.language,
            temperature=self.temperature,
            max_new_tokens=self.max_new_tokens,
        )
        experiment = trainer.logger.experiment
        for i, text in enumerate(self.sentences):
            audio = torch.from_numpy(speak(model, text, voice, settings))
            if hasattr(experiment, "add_audio"):
                experiment.add_audio(
                    f"samples/{i}", audio[None], trainer.global_step, sample_rate=OUTPUT_RATE
                )
                experiment.add_text(f"samples/{i}", text, trainer.global_step)

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
