"""A run you cannot lose to a NaN: the guard's decisions (a pure policy) and the callback that carries
them out, and the seed's warning signs.

`GuardPolicy` is told what happened at each step (was the loss finite, were the gradients, what was
the loss) and says what to do: apply the step, skip it, or act (roll back or stop). It holds no
tensors and knows no Trainer, so every rule is tested in a table. `DivergenceGuard` gathers those
facts from the run (the same on every rank under DDP) and does what the policy says.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import torch

from ..log import say
from .checkpoints import newest_good_checkpoint


@dataclass
class Verdict:
    skip: bool = False  # do not apply this step's gradients
    act: str | None = None  # why the run must roll back or stop now; None: carry on


class GuardPolicy:
    """The guard's rules, without side effects.

    A step with a non-finite loss or gradient is skipped; `max_bad_steps` of them in a row call for
    action. A loss above `divergence_factor` times the running median of the last `window` good
    losses (once `min_history` are known), for `divergence_steps` steps in a row, calls for action.
    Action is a rollback while `action` is "rollback", a checkpoint from before the trouble exists
    and fewer than `max_rollbacks` were made; otherwise the run stops."""

    def __init__(
        self,
        max_bad_steps: int = 3,
        divergence_factor: float = 3.0,
        divergence_steps: int = 20,
        window: int = 200,
        min_history: int = 20,
        action: Literal["rollback", "stop"] = "rollback",
        max_rollbacks: int = 2,
    ):
        self.max_bad_steps = max_bad_steps
        self.divergence_factor = divergence_factor
        self.divergence_steps = divergence_steps
        self.min_history = min_history
        self.action = action
        self.max_rollbacks = max_rollbacks
        self.history: deque[float] = deque(maxlen=window)
        self.skipped = 0
        self.bad_in_row = 0
        self.diverging_in_row = 0
        self.rollbacks = 0
        self.trouble_since: int | None = None  # the step the current trouble began at

    def check_step(self, step: int, loss_finite: bool, grads_finite: bool, scaler: bool = False) -> Verdict:
        """Before the optimizer step. `scaler`: a 16-mixed grad scaler skips non-finite gradients itself."""
        if loss_finite and not grads_finite and scaler:
            return Verdict()  # the scaler skips this step and lowers its scale; that is normal
        if loss_finite and grads_finite:
            self.bad_in_row = 0
            if not self.diverging_in_row:
                self.trouble_since = None
            return Verdict()
        if self.trouble_since is None:
            self.trouble_since = step
        self.skipped += 1
        self.bad_in_row += 1
        if self.bad_in_row >= self.max_bad_steps:
            return Verdict(skip=True, act=f"{self.bad_in_row} non-finite steps in a row")
        return Verdict(skip=True)

    def check_loss(self, step: int, loss: float | None) -> Verdict:
        """After the step, with its (finite or not) loss; `step` is the step the batch was trained at."""
        if loss is None or loss != loss or loss in (float("inf"), float("-inf")):
            return Verdict()  # counted by check_step
        diverging = len(self.history) >= self.min_history and loss > self.divergence_factor * statistics.median(
            self.history
        )
        self.diverging_in_row = self.diverging_in_row + 1 if diverging else 0
        if diverging and self.trouble_since is None:
            self.trouble_since = step
        if not diverging:
            self.history.append(loss)
            if not self.bad_in_row:
                self.trouble_since = None
        if self.diverging_in_row >= self.divergence_steps:
            return Verdict(
                act=f"loss above {self.divergence_factor}x its running median ({self.median():.3f}) "
                f"for {self.divergence_steps} steps"
            )
        return Verdict()

    def median(self) -> float:
        return statistics.median(self.history) if self.history else float("nan")

    def decide(self, have_checkpoint: bool) -> Literal["rollback", "stop"]:
        """What to do about the trouble; the counters start again (the history of good losses stays,
        so a loss that stays high is caught again)."""
        self.bad_in_row = self.diverging_in_row = 0
        self.trouble_since = None
        if self.action == "rollback" and have_checkpoint and self.rollbacks < self.max_rollbacks:
            self.rollbacks += 1
            return "rollback"
        return "stop"

    def state_dict(self) -> dict:
        return {"skipped": self.skipped, "rollbacks": self.rollbacks, "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.skipped = state.get("skipped", 0)
        self.rollbacks = state.get("rollbacks", 0)
        self.history = deque(state.get("history", []), maxlen=self.history.maxlen)


class DivergenceGuard(L.Callback):
    """Checks every step (see `GuardPolicy` for the rules). A skipped step's gradients are dropped.
    To act, it either rolls the weights and optimizer back to the run's newest checkpoint saved
    before the trouble began and multiplies the LR by `lr_factor`, or stops with a message that says
    what happened and where the last good checkpoint is. Under DDP every rank takes the same decision."""

    def __init__(
        self,
        max_bad_steps: int = 3,
        divergence_factor: float = 3.0,
        divergence_steps: int = 20,
        window: int = 200,
        min_history: int = 20,
        action: Literal["rollback", "stop"] = "rollback",
        lr_factor: float = 0.5,
        max_rollbacks: int = 2,
    ):
        self.policy = GuardPolicy(
            max_bad_steps, divergence_factor, divergence_steps, window, min_history, action, max_rollbacks
        )
        self.lr_factor = lr_factor
        self.events: list[str] = []  # what the guard did, in order (also printed)
        self._loss: torch.Tensor | None = None
        self._value: float | None = None  # this step's loss, read with its other facts

    @property
    def skipped(self) -> int:
        return self.policy.skipped

    @property
    def rollbacks(self) -> int:
        return self.policy.rollbacks

    # --- gathering the facts ----------------------------------------------------------------

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._loss = loss.detach()  # whatever module trains: the loss it backpropagates

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # One pass over the gradients serves the check and TensorBoard (after AMP unscaling, before
        # clipping); under DDP they are already reduced, so this is the same on every rank.
        norm = (
            torch.linalg.vector_norm(torch.stack([p.grad.detach().float().norm(2) for p in params])) if params else None
        )
        if norm is not None:
            pl_module.log("train/grad_norm", norm)
        loss_bad, grads_bad, self._value = self._facts(trainer, pl_module, norm)
        scaler = getattr(trainer.precision_plugin, "scaler", None) is not None
        verdict = self.policy.check_step(trainer.global_step, not loss_bad, not grads_bad, scaler)
        if verdict.skip:
            for p in params:
                p.grad = None  # AdamW leaves parameters without gradients untouched
            say(
                f"guard: non-finite {'loss' if loss_bad else 'gradient'} at step {trainer.global_step}; step "
                f"skipped ({self.policy.bad_in_row} in a row, {self.policy.skipped} in all)"
            )
            pl_module.log("guard/skipped_steps", float(self.policy.skipped), rank_zero_only=True)
        if verdict.act:
            self._act(trainer, pl_module, verdict.act)

    def _facts(self, trainer, pl_module, norm: torch.Tensor | None) -> tuple[bool, bool, float | None]:
        """(loss not finite on some rank, gradients not finite, this rank's loss) in ONE transfer from
        the device: on a GPU every read of a tensor's value waits for all queued work, so the guard
        reads its three facts together (before: a wait for the loss, one for the gradients, one more
        for the loss value after the step)."""
        device = pl_module.device
        loss = self._loss.float().reshape(-1)[:1] if self._loss is not None else torch.zeros(1, device=device)
        flags = torch.stack(
            [
                ~torch.isfinite(loss[0]),
                ~torch.isfinite(norm) if norm is not None else torch.zeros((), dtype=torch.bool, device=device),
            ]
        ).float()
        if trainer.world_size > 1:  # every rank takes the same decision
            flags = trainer.strategy.reduce(flags, reduce_op="sum")
        loss_bad, grads_bad, value = torch.cat([flags, loss.to(flags.device)]).tolist()
        return loss_bad > 0, grads_bad > 0, value if self._loss is not None else None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        value, self._value = self._value, None  # read with the step's other facts
        if value is None:  # a batch that only accumulated gradients
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            value = float(loss) if loss is not None else None
        verdict = self.policy.check_loss(trainer.global_step - 1, value)  # the step of this batch
        if trainer.strategy.reduce_boolean_decision(verdict.act is not None, all=False):
            self._act(trainer, pl_module, verdict.act or "another rank's loss diverged")

    # --- carrying out an action -------------------------------------------------------------

    def _act(self, trainer, pl_module, reason: str) -> None:
        since = self.policy.trouble_since
        callback = trainer.checkpoint_callback
        path, step = None, 0
        if callback is not None and callback.dirpath and Path(callback.dirpath).is_dir():
            # Only a checkpoint saved before the trouble began counts as good; best.ckpt (the weights
            # alone) will do when it is the newest such one.
            found = newest_good_checkpoint(Path(callback.dirpath), before_step=since, full_state=False)
            path, step = found.path, found.step
            for bad, why in found.unreadable:
                say(f"guard: {bad} cannot be loaded ({why}); skipping it")
        where = f"{path} (step {step})" if path else "none yet (no checkpoint was written)"
        decision = self.policy.decide(have_checkpoint=path is not None)
        if path is not None:
            # When stopping, the good weights are put back too, so a final save cannot hold bad ones.
            self._restore(trainer, pl_module, path, optimizer=decision == "rollback")
        if decision == "rollback":
            lrs = self._lower_lr(trainer)
            message = (
                f"guard: {reason} at step {trainer.global_step}; rolled back to {where} and lowered "
                f"the LR to {lrs[0]:.3g} (rollback {self.policy.rollbacks} of {self.policy.max_rollbacks})"
            )
        else:
            trainer.should_stop = True
            message = (
                f"guard: {reason} at step {trainer.global_step}; training stopped. The last good checkpoint is {where}"
            )
        self.events.append(message)
        say(message)
        # A mark on the run's time axis (the report draws it).
        log_event(trainer, f"guard/{decision}", float(self.policy.rollbacks if decision == "rollback" else 1))

    @staticmethod
    def _restore(trainer, pl_module, path: Path, optimizer: bool) -> None:
        """The weights (and optimizer state) of `path`, in place; the step counter goes on."""
        ckpt = torch.load(path, map_location=pl_module.device, weights_only=False)
        pl_module.load_state_dict(ckpt["state_dict"])
        if optimizer:
            states = ckpt.get("optimizer_states")
            for i, opt in enumerate(trainer.optimizers):
                if states:
                    opt.load_state_dict(states[i])
                else:  # a weights-only file: AdamW's moments start afresh with those weights
                    opt.state.clear()

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
        return self.policy.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state)


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
            self._report(f"warning sign: val/loss is {val} at step {step}; stop and investigate", trainer, "non_finite")
            return
        if val < self.best:
            self.best, self.best_step, self.since_best = val, step, 0
        else:
            self.since_best += 1
            if self.since_best == self.plateau_validations:
                self._report(
                    f"warning sign: val/loss has not improved for {self.since_best} validations "
                    f"(best {self.best:.3f} at step {self.best_step}); the loss stops falling",
                    trainer,
                    "plateau",
                )
        if self.recent_train:
            train = statistics.mean(self.recent_train)
            if train > 0 and val > self.overfit_ratio * train:
                self._report(
                    f"warning sign: val/loss {val:.3f} is {val / train:.1f}x the recent train loss "
                    f"{train:.3f} at step {step} (overfitting); best.ckpt keeps the best model",
                    trainer,
                    "overfit",
                )

    def _report(self, message: str, trainer=None, kind: str = "") -> None:
        self.reported.append(message)
        say(message)
        if trainer is not None:
            log_event(trainer, f"warning_signs/{kind}", 1.0)


def log_event(trainer, tag: str, value: float) -> None:
    """An event as a scalar at the current step, in every logger (rank zero writes)."""
    for logger in getattr(trainer, "loggers", None) or []:
        logger.log_metrics({tag: value}, step=trainer.global_step)
