"""Callbacks that keep a run from being lost: the NaN/divergence guard and the seed's warning signs."""

from __future__ import annotations

import logging
import statistics
from collections import deque
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from .checkpoints import newest_good_checkpoint

# A child of Lightning's logger, so messages reach the console next to Lightning's own.
log = logging.getLogger("lightning.pytorch.vago")


@rank_zero_only
def say(message: str, warning: bool = True) -> None:
    (log.warning if warning else log.info)(message)


class DivergenceGuard(L.Callback):
    """Checks every step. A non-finite loss or gradient is not applied (the step is skipped and
    counted). After `max_bad_steps` such steps in a row, or when the loss stays above
    `divergence_factor` times its running median for `divergence_steps` steps, it either rolls the
    weights and optimizer back to the run's newest good checkpoint and multiplies the LR by
    `lr_factor` (`action: rollback`, at most `max_rollbacks` times), or stops with a message that
    says what happened and where the last good checkpoint is (`action: stop`). Under DDP every rank
    takes the same decision."""

    def __init__(self, max_bad_steps: int = 3, divergence_factor: float = 3.0, divergence_steps: int = 20,
                 window: int = 200, min_history: int = 20, action: Literal["rollback", "stop"] = "rollback",
                 lr_factor: float = 0.5, max_rollbacks: int = 2):
        self.max_bad_steps = max_bad_steps
        self.divergence_factor = divergence_factor
        self.divergence_steps = divergence_steps
        self.window = window
        self.min_history = min_history
        self.action = action
        self.lr_factor = lr_factor
        self.max_rollbacks = max_rollbacks
        self.history: deque[float] = deque(maxlen=window)
        self.skipped = 0
        self.bad_in_row = 0
        self.diverging_in_row = 0
        self.rollbacks = 0
        self.trouble_since: int | None = None  # the step the current run of bad steps began at
        self.events: list[str] = []  # what the guard did, in order (also printed)

    # --- per step ---------------------------------------------------------------------------

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        loss = getattr(pl_module, "last_loss", None)
        loss_bad = loss is not None and not bool(torch.isfinite(loss))
        loss_bad = trainer.strategy.reduce_boolean_decision(loss_bad, all=False)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # One pass over the gradients serves the check and TensorBoard (after AMP unscaling, before
        # clipping); under DDP they are already reduced, so this is the same on every rank.
        norm = torch.linalg.vector_norm(torch.stack([p.grad.detach().float().norm(2) for p in params])) \
            if params else None
        if norm is not None:
            pl_module.log("train/grad_norm", norm)
        grads_bad = norm is not None and not bool(torch.isfinite(norm))
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if grads_bad and not loss_bad and scaler is not None:
            return  # 16-mixed: the grad scaler skips this step and lowers its scale; that is normal
        if not (loss_bad or grads_bad):
            self.bad_in_row = 0
            if not self.diverging_in_row:
                self.trouble_since = None
            return
        if self.trouble_since is None:
            self.trouble_since = trainer.global_step
        for p in params:
            p.grad = None  # AdamW leaves parameters without gradients untouched
        self.skipped += 1
        self.bad_in_row += 1
        what = "loss" if loss_bad else "gradient"
        say(f"guard: non-finite {what} at step {trainer.global_step}; step skipped "
            f"({self.bad_in_row} in a row, {self.skipped} in all)")
        pl_module.log("guard/skipped_steps", float(self.skipped), rank_zero_only=True)
        if self.bad_in_row >= self.max_bad_steps:
            self._act(trainer, pl_module, f"{self.bad_in_row} non-finite steps in a row")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None or not bool(torch.isfinite(loss)):
            return
        value = float(loss)
        diverging = (len(self.history) >= self.min_history
                     and value > self.divergence_factor * statistics.median(self.history))
        self.diverging_in_row = self.diverging_in_row + 1 if diverging else 0
        if diverging and self.trouble_since is None:
            self.trouble_since = trainer.global_step - 1  # the step of this batch
        if not diverging:
            self.history.append(value)
            if not self.bad_in_row:
                self.trouble_since = None
        trigger = trainer.strategy.reduce_boolean_decision(self.diverging_in_row >= self.divergence_steps, all=False)
        if trigger:
            median = statistics.median(self.history) if self.history else float("nan")
            self._act(trainer, pl_module, f"loss above {self.divergence_factor}x its running median "
                                          f"({median:.3f}) for {self.divergence_steps} steps")

    # --- what it does -----------------------------------------------------------------------

    def _act(self, trainer, pl_module, reason: str) -> None:
        since = self.trouble_since
        self.bad_in_row = self.diverging_in_row = 0
        self.trouble_since = None
        callback = trainer.checkpoint_callback
        path, step = (None, 0)
        if callback is not None and callback.dirpath and Path(callback.dirpath).is_dir():
            # Only a checkpoint saved before the trouble began counts as good (the history of good
            # losses is kept, so a loss that stays high is caught again).
            path, step, problems = newest_good_checkpoint(Path(callback.dirpath), before_step=since)
            for problem in problems:
                say(f"guard: {problem}")
        where = f"{path} (step {step})" if path else "none yet (no checkpoint was written)"
        rollback = self.action == "rollback" and path is not None and self.rollbacks < self.max_rollbacks
        if path is not None:
            # When stopping, the good weights are put back too, so a final save cannot hold bad ones.
            self._restore(trainer, pl_module, path, optimizer=rollback)
        if rollback:
            self.rollbacks += 1
            lrs = self._lower_lr(trainer)
            message = (f"guard: {reason} at step {trainer.global_step}; rolled back to {where} and lowered "
                       f"the LR to {lrs[0]:.3g} (rollback {self.rollbacks} of {self.max_rollbacks})")
        else:
            trainer.should_stop = True
            message = (f"guard: {reason} at step {trainer.global_step}; training stopped. The last good "
                       f"checkpoint is {where}")
        self.events.append(message)
        say(message)

    @staticmethod
    def _restore(trainer, pl_module, path: Path, optimizer: bool) -> None:
        """The weights (and optimizer state) of `path`, in place; the step counter goes on."""
        ckpt = torch.load(path, map_location=pl_module.device, weights_only=False)
        pl_module.load_state_dict(ckpt["state_dict"], strict=False)
        if optimizer:
            for opt, state in zip(trainer.optimizers, ckpt.get("optimizer_states", [])):
                opt.load_state_dict(state)

    def _lower_lr(self, trainer) -> list[float]:
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if hasattr(scheduler, "base_lrs"):
                scheduler.base_lrs = [lr * self.lr_factor for lr in scheduler.base_lrs]
        lrs = []
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= self.lr_factor
                lrs.append(group["lr"])
        return lrs

    def state_dict(self) -> dict:
        return {"skipped": self.skipped, "rollbacks": self.rollbacks, "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.skipped = state.get("skipped", 0)
        self.rollbacks = state.get("rollbacks", 0)
        self.history = deque(state.get("history", []), maxlen=self.window)


class WarningSigns(L.Callback):
    """The seed's warning signs, reported as they happen at each validation: the loss stops
    falling, the eval loss far above the train loss, a non-finite eval loss."""

    def __init__(self, plateau_validations: int = 3, overfit_ratio: float = 2.0, train_window: int = 50):
        self.plateau_validations = plateau_validations
        self.overfit_ratio = overfit_ratio
        self.recent_train: deque[float] = deque(maxlen=train_window)
        self.best = float("inf")
        self.best_step = 0
        self.since_best = 0
        self.reported: list[str] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and bool(torch.isfinite(loss)):
            self.recent_train.append(float(loss))

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or "val/loss" not in trainer.callback_metrics:
            return
        val = float(trainer.callback_metrics["val/loss"])
        step = trainer.global_step
        if val != val or val in (float("inf"), float("-inf")):
            self._report(f"warning sign: val/loss is {val} at step {step}; stop and investigate")
            return
        if val < self.best:
            self.best, self.best_step, self.since_best = val, step, 0
        else:
            self.since_best += 1
            if self.since_best == self.plateau_validations:
                self._report(f"warning sign: val/loss has not improved for {self.since_best} validations "
                             f"(best {self.best:.3f} at step {self.best_step}); the loss stops falling")
        if self.recent_train:
            train = statistics.mean(self.recent_train)
            if train > 0 and val > self.overfit_ratio * train:
                self._report(f"warning sign: val/loss {val:.3f} is {val / train:.1f}x the recent train loss "
                             f"{train:.3f} at step {step} (overfitting); best.ckpt keeps the best model")

    def _report(self, message: str) -> None:
        self.reported.append(message)
        say(message)
