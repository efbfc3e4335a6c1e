"""Training callbacks: measurements that belong to the run, not to the model."""

from __future__ import annotations

import time
from typing import Optional

import lightning as L


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
        self._samples += int(batch["text"].shape[0])
        self._audio += float(batch["wav_lengths"].sum()) / 22050
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

    def __init__(self, every_n_validations: int = 5, sentences: Optional[list[str]] = None,
                 reference: Optional[str] = None, temperature: float = 0.65, max_new_tokens: int = 300,
                 device: Optional[str] = "cpu"):
        self.every = every_n_validations
        self.sentences = sentences or ["Jó estét kívánok, kezdődik a mai játék!",
                                       "Tudja, ezt a kérdést már sokan feltették nekem."]
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

        from .synthesis import Settings, speak

        model = self._inference_model(pl_module)
        # The inference copy's extra names (gpt_inference.*, gpt.wte) alias the same modules.
        _, unexpected = model.gpt.load_state_dict(
            {k: v.detach().to(model.device) for k, v in pl_module.gpt.state_dict().items()}, strict=False)
        assert not unexpected, unexpected
        wav = self._reference(trainer).to(model.device)
        with torch.inference_mode():
            voice = (model.get_gpt_cond_latents(wav, 22050, length=30, chunk_length=4),
                     model.get_speaker_embedding(wav, 22050))
        settings = Settings(language=pl_module.hparams.language, temperature=self.temperature,
                            max_new_tokens=self.max_new_tokens)
        experiment = trainer.logger.experiment
        for i, text in enumerate(self.sentences):
            audio = torch.from_numpy(speak(model, text, voice, settings))
            if hasattr(experiment, "add_audio"):
                experiment.add_audio(f"samples/{i}", audio[None], trainer.global_step, sample_rate=24000)
                experiment.add_text(f"samples/{i}", text, trainer.global_step)

    def _inference_model(self, pl_module):
        if self._model is None:
            from .synthesis import load_xtts

            self._model = load_xtts(pl_module.hparams.base_model, self.device or str(pl_module.device))
        return self._model

    def _reference(self, trainer):
        import torch

        if self._reference_wav is None:
            if self.reference:
                from pathlib import Path

                from .audio import load_clip

                self._reference_wav = torch.from_numpy(load_clip(Path(self.reference)).wav)[None]
            else:
                batch = next(iter(trainer.val_dataloaders))
                self._reference_wav = batch["wav"][:1, : int(batch["wav_lengths"][0])].cpu()
        return self._reference_wav
