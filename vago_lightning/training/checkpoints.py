"""Checkpoints that survive a crash: atomic writes, and finding the newest good one to resume from."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

TMP_MARK = ".tmp-"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file, flushes it to disk, then renames it into place:
    a kill or a power cut during a save leaves the previous file whole, never a truncated one."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        self._publish(tmp, path)

    @staticmethod
    def _publish(tmp: Path, path: Path) -> None:
        """The rename that makes a finished save visible, flushed to disk with its folder."""
        os.replace(tmp, path)
        if os.name == "nt":
            return  # Windows cannot open a folder to fsync it; NTFS journals the rename itself
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself reaches the disk
        finally:
            os.close(directory)


def remove_partial_saves(dirpath: Path) -> list[Path]:
    """Delete temporary files left by saves that were interrupted; returns what was removed."""
    removed = [p for p in dirpath.glob(f".*.ckpt{TMP_MARK}*") if p.is_file()]
    for p in removed:
        p.unlink()
    return removed


def checkpoint_step(path: Path) -> int:
    """The global step a checkpoint was saved at; raises if the file cannot be read."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    return int(ckpt["global_step"])


def newest_good_checkpoint(
    dirpath: Path, before_step: int | None = None
) -> tuple[Path | None, int, list[str]]:
    """The checkpoint of a run to resume from: the highest global step among those that load
    (last.ckpt wins a tie), saved before `before_step` when given. Returns (path, step, one line per
    checkpoint that could not be read)."""
    problems = []
    candidates = []
    for path in sorted(dirpath.glob("*.ckpt")):
        try:
            step = checkpoint_step(path)
        except Exception as err:  # noqa: BLE001 - any unreadable file is reported and skipped
            problems.append(f"{path}: cannot be loaded ({type(err).__name__}: {str(err)[:120]}); skipping it")
            continue
        if before_step is None or step < before_step:
            candidates.append((step, path.name == "last.ckpt", path.stat().st_mtime, path))
    if not candidates:
        return None, 0, problems
    step, _, _, path = max(candidates)
    return path, step, problems


def move_aside(*paths: Path) -> list[Path]:
    """Rename existing run folders to `<name>.replaced-<time>` (for --fresh): nothing is deleted."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for path in paths:
        if path.exists():
            target = path.with_name(f"{path.name}.replaced-{stamp}")
            shutil.move(str(path), str(target))
            moved.append(target)
    return moved


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that also writes last.ckpt when training ends, so last.ckpt is always the
    newest state of the run: after the final step when the run stops mid-epoch (max_steps, the
    guard), at the end of the final epoch otherwise. Saving there, not in `on_train_end`, keeps the
    loop state exact: a checkpoint written after the loops finished would mark an unfinished epoch
    as done, and a resume would skip the rest of it."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.save_last and (trainer.global_step == trainer.max_steps or trainer.should_stop):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        final = (
            trainer.max_epochs is not None
            and trainer.max_epochs > 0
            and trainer.current_epoch + 1 >= trainer.max_epochs
        )
        if self.save_last and final and trainer.global_step > 0:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
