"""Checkpoints that survive a crash: atomic writes, and finding the newest good one to resume from."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..errors import VagoError
from ..files import Sink, free_bytes, human_bytes, is_disk_full
from .stopping import RunStopped, StopSignals

TMP_MARK = ".tmp-"


class DiskFullError(VagoError):
    """A save found no space left; the previous checkpoint is whole and the partial file is gone."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file, flushes it to disk, then renames it into place:
    a kill or a power cut during a save leaves the previous file whole, never a truncated one."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
        sink = Sink(tmp)
        try:
            try:
                torch.save(checkpoint, sink)
                sink.flush()
            finally:
                sink.close()
        except Exception as err:
            tmp.unlink(missing_ok=True)  # a half-written file helps nobody and holds the space
            if sink.disk_full or is_disk_full(err):
                raise DiskFullError(_no_space(path, checkpoint)) from None
            raise
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


def _no_space(path: Path, checkpoint: dict) -> str:
    need = checkpoint_bytes(checkpoint)
    kept = f"{path.name} of the previous save is whole" if path.exists() else f"no {path.name} was written yet"
    return (
        f"{path.parent}: the disk is full ({human_bytes(free_bytes(path.parent))} free, a save of step "
        f"{checkpoint.get('global_step', '?')} needs about {human_bytes(need)}); {kept} and the partial file was "
        "removed. Free some space (or move the run's folder to a larger disk) and run the same command to resume"
    )


def checkpoint_bytes(obj) -> int:
    """About the bytes `torch.save(obj)` writes: its tensors' data."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(checkpoint_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(checkpoint_bytes(v) for v in obj)
    return 0


def remove_partial_saves(dirpath: Path) -> list[Path]:
    """Delete temporary files left by saves that were interrupted; returns what was removed."""
    removed = [p for p in dirpath.glob(f".*.ckpt{TMP_MARK}*") if p.is_file()]
    for p in removed:
        p.unlink()
    return removed


@dataclass
class Found:
    """What a run's checkpoint folder holds to go on from."""

    path: Path | None = None  # the newest good checkpoint, or None
    step: int = 0
    finished: dict | None = None  # how the run ended, when that checkpoint is its final state
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # (file, why) that could not be loaded


def read_header(path: Path) -> dict:
    """The global step, whether the file holds the full resume state, and how the run ended;
    raises if the file cannot be read (tensors are memory-mapped, not read)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    return {
        "step": int(ckpt["global_step"]),
        "full": "optimizer_states" in ckpt,
        "finished": ckpt.get(FINISHED_KEY),
    }


def newest_good_checkpoint(dirpath: Path, before_step: int | None = None, full_state: bool = True) -> Found:
    """The checkpoint to go on from: the highest global step among those that load (last.ckpt wins a
    tie), saved before `before_step` when given. `full_state`: only files a run can resume from
    (best.ckpt holds the weights alone)."""
    found = Found()
    candidates = []
    for path in sorted(dirpath.glob("*.ckpt")):
        try:
            head = read_header(path)
        except Exception as err:  # noqa: BLE001 - any unreadable file is reported and skipped
            found.unreadable.append((path, f"{type(err).__name__}: {str(err)[:120]}"))
            continue
        if (before_step is None or head["step"] < before_step) and (head["full"] or not full_state):
            candidates.append((head["step"], path.name == "last.ckpt", head["full"], path.stat().st_mtime, path, head))
    if candidates:
        step, _, _, _, path, head = max(candidates, key=lambda c: c[:4])
        found.path, found.step, found.finished = path, step, head["finished"]
    return found


def move_corrupt(path: Path) -> Path:
    """Move a checkpoint that does not load out of the way (`<name>.corrupt-<time>`), so that new saves
    take its name again and later resumes do not trip over it; nothing is deleted."""
    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, target)
    return target


def move_aside(*paths: Path) -> list[Path]:
    """Rename existing run folders to `<name>.replaced-<time>` (for --fresh): nothing is deleted."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for path in paths:
        if path.exists():
            target = path.with_name(f"{path.name}.replaced-{stamp}")
            os.replace(path, target)
            moved.append(target)
    return moved


FINISHED_KEY = "vago_finished"  # in the final checkpoint of a run: how and where it ended


def validation_follows(trainer) -> bool:
    """Whether Lightning validates right after this training step (its own rule, asked early)."""
    if trainer.num_val_batches and sum(trainer.num_val_batches) == 0:
        return False  # nothing to validate: the loop returns before its hooks
    loop = trainer.fit_loop.epoch_loop
    try:
        return bool(loop._should_check_val_fx(trainer.fit_loop._data_fetcher))
    except AttributeError:  # another Lightning: save now rather than never
        return False


class RunCheckpoint(ModelCheckpoint):
    """The run's resume state: `last.ckpt` (weights, optimizer, LR schedule, loops, data position,
    callbacks) is written every `every_n_train_steps` steps, after every validation, and when
    training ends, so it is always the newest state. `step-NNNNNN.ckpt` snapshots beside it are kept
    only when `save_top_k` > 0.

    A save due at a step that is followed by a validation waits for the end of that validation, so
    that it holds its results (the best score, early stopping): above all the final one, which makes
    last.ckpt the true final state and lets best.ckpt see the final validation. A final save is made
    in the training loop, not in `on_train_end`: a checkpoint written after the loops finished would
    mark an unfinished epoch as done, and a resume would skip the rest of it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pending: tuple[bool, bool] | None = None  # (snapshot, final) waiting for a validation
        self._stop_pending = False  # a stop asked for at a step whose validation comes first
        self._finishing: dict | None = None
        self.stop = StopSignals()  # Ctrl-C, SIGTERM, Ctrl-Break, or a stop the run asks for

    def on_train_start(self, trainer, pl_module) -> None:
        # After Lightning's own SIGTERM handler is set (it would end the run without a save).
        self.stop.install()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.stop.uninstall()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stop = self._stop_agreed(trainer)
        if self._should_skip_saving_checkpoint(trainer):
            if stop:  # already saved at this step
                self._stop_run(trainer)
            return
        every = self._every_n_train_steps
        due = every >= 1 and trainer.global_step % every == 0
        final = is_final_step(trainer)
        stop = stop and not final  # the run ends at this step anyway, as it would have
        if not (due or final or stop):
            return
        if validation_follows(trainer):
            # The validation due at this step runs first, so that the resumed run does not repeat it.
            self._pending, self._stop_pending = (due, final), stop
            return
        self._save(trainer, snapshot=due, final=final)
        if stop:
            self._stop_run(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        stop = (self._stop_agreed(trainer) or self._stop_pending) and not is_final_step(trainer)
        self._stop_pending = False
        if self._pending or not self._should_skip_saving_checkpoint(trainer):
            snapshot, final = self._pending or (False, False)
            self._pending = None
            self._save(trainer, snapshot=snapshot, final=final or is_final_step(trainer))
        if stop:
            self._stop_run(trainer)

    def _stop_agreed(self, trainer) -> bool:
        """Whether any rank was asked to stop: under DDP every rank stops at the same step."""
        return bool(trainer.strategy.reduce_boolean_decision(self.stop.pending, all=False))

    def _stop_run(self, trainer) -> None:
        """Ends the run after last.ckpt holds this step; the command line prints the message."""
        self.stop.uninstall()
        step, last = trainer.global_step, Path(self.dirpath) / "last.ckpt"
        if self.stop.reason:
            raise RunStopped(f"{self.stop.reason}. {last} holds step {step}: the run resumes there", 1)
        by = f"by {self.stop.requested}" if self.stop.requested else "at another process's request"
        raise RunStopped(
            f"stopped {by} at step {step}; {last} holds that step. Run the same command to go on from there",
            self.stop.code or 128 + 15,
        )

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        final = trainer.max_epochs is not None and 0 < trainer.max_epochs <= trainer.current_epoch + 1
        if final and trainer.global_step > 0 and not self._should_skip_saving_checkpoint(trainer):
            self._save(trainer, snapshot=False, final=True)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._pending:  # the validation it waited for did not run
            self._save(trainer, snapshot=self._pending[0], final=True)
            self._pending = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self._finishing is not None:
            checkpoint[FINISHED_KEY] = self._finishing

    def _save(self, trainer, snapshot: bool, final: bool) -> None:
        self._finishing = _how_it_ended(trainer) if final else None
        try:
            candidates = self._monitor_candidates(trainer)
            if snapshot:
                self._save_topk_checkpoint(trainer, candidates)
            if self.save_last:
                self._save_last_checkpoint(trainer, candidates)
        finally:
            self._finishing = None


def is_final_step(trainer) -> bool:
    """Whether the step just trained is the run's last: stopped, max_steps, or the last batch of the
    last epoch."""
    if trainer.should_stop or (trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps):
        return True
    last_epoch = trainer.max_epochs is not None and 0 < trainer.max_epochs <= trainer.current_epoch + 1
    return last_epoch and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch


def _how_it_ended(trainer) -> dict:
    stopper = trainer.early_stopping_callback
    if trainer.should_stop:
        by_stopper = stopper is not None and stopper.wait_count >= stopper.patience
        reason = "early_stopping" if by_stopper else "stopped"
    elif trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
        reason = "max_steps"
    else:
        reason = "max_epochs"
    return {
        "reason": reason,
        "step": trainer.global_step,
        "epoch": trainer.current_epoch,
        "patience": stopper.patience if stopper is not None else None,
    }
