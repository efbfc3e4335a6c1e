"""Training callbacks: measurements that belong to the run, not to the model."""

from __future__ import annotations

import time

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
