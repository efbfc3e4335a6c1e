"""The training command line: `python -m vago_lightning fit --config finetune.yaml [--model.lr 1e-6 ...]`
(`python train.py fit ...` is the same command).

A LightningCLI over XttsGPTModule and ShardDataModule. Settings the data and the model must share
(base model, language) are linked, not repeated. `--run NAME` names the run: checkpoints go to
`checkpoints/NAME/` (best.ckpt: the weights with the lowest validation loss; last.ckpt: the full
resume state; optional step-*.ckpt snapshots) and TensorBoard logs to `lightning_logs/NAME/`
(`validate` writes to `lightning_logs/NAME/validate-<time>/`). Running the same command again
resumes that run from its newest good checkpoint, or says that it is complete; `--fresh true` moves
the old run aside and starts over. Every check that can fail runs before anything is written.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.trainer.connectors.logger_connector import _LoggerConnector

from ..data.datamodule import ShardDataModule
from ..devices import cuda_available
from ..errors import UsageError, VagoError
from ..log import quiet_known_noise, say
from ..model.module import XttsGPTModule
from ..parsing import OneLineErrors
from .checkpoints import (
    AtomicCheckpointIO,
    Found,
    RunCheckpoint,
    move_aside,
    move_corrupt,
    newest_good_checkpoint,
    read_header,
    remove_partial_saves,
)
from .guard import DivergenceGuard, WarningSigns
from .preflight import preflight, resolve_precision
from .skipped import SkippedClips
from .stopping import RunStopped

quiet_known_noise()


class RunComplete(Exception):
    """The run this command names has ended; its message says how to go on."""


def _is_rank_zero_process() -> bool:
    """DDP processes started by rank 0 re-run this command: only rank 0 moves files around."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


class XttsTrainer(L.Trainer):
    def __init__(self, *args, precision: str | None = "auto", **kwargs):
        """A Lightning Trainer whose precision may be "auto": bf16-mixed on GPUs that compute it
        natively (an RTX 4070 does) and on CPUs with native bf16, 16-mixed with a grad scaler on
        older CUDA cards, else 32-true (`devices` says which)."""
        accelerator = str(kwargs.get("accelerator", "auto"))
        if accelerator in ("gpu", "cuda") and not cuda_available():
            # Lightning's own message is a traceback ending in "No supported gpu backend found!".
            raise UsageError(
                f"trainer.accelerator is {accelerator}, but torch sees no CUDA GPU (torch {torch.__version__}): "
                "install torch's CUDA build (README, set-up) or train on the CPU with --trainer.accelerator cpu"
            )
        on_cpu = accelerator == "cpu"
        chosen = resolve_precision(precision, cuda=False if on_cpu else None)
        if precision in (None, "auto"):
            say(f"precision: auto -> {chosen}", warning=False)
        # Always on: clips that cannot be decoded are skipped, listed and counted, never silently.
        callbacks = kwargs.get("callbacks") or []
        callbacks = [callbacks] if isinstance(callbacks, L.Callback) else list(callbacks)
        kwargs["callbacks"] = [*callbacks, SkippedClips()]
        super().__init__(*args, precision=chosen, **kwargs)
        self._logger_connector.__class__ = _GlobalStepLogging


class _GlobalStepLogging(_LoggerConnector):
    """Lightning logs its metrics at `_batches_that_stepped`, one behind `global_step` when a step's
    train loss or a validation is logged: TensorBoard said step 65 where the console, checkpoints and
    max_steps said 66. Every figure is logged at global_step here: the optimizer steps done."""

    def log_metrics(self, metrics, step: int | None = None) -> None:
        if step is None and "step" not in metrics:
            metrics = {**metrics, "epoch": metrics.get("epoch", self.trainer.current_epoch)}  # as Lightning does
            fixed = getattr(self.trainer, "validated_step", None)  # validate: the checkpoint's own step
            step = self.trainer.global_step if fixed is None else fixed
        super().log_metrics(metrics, step)


class XttsArgumentParser(OneLineErrors, LightningArgumentParser):
    pass


class XttsCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--run", type=str, default="run", help="run name: checkpoints/<run>/ and lightning_logs/<run>/"
        )
        parser.add_argument(
            "--fresh",
            type=bool,
            default=False,
            help="start the run over: an existing run of that name is moved aside, not resumed",
        )
        parser.link_arguments("model.base_model", "data.base_model")
        parser.link_arguments("model.language", "data.language")
        # Always present, configurable under their own keys. best.ckpt holds what its uses need
        # (init_from, validate, export: the weights); the resume state is last.ckpt alone.
        parser.add_lightning_class_args(ModelCheckpoint, "best_checkpoint")
        parser.set_defaults(
            {
                "best_checkpoint.monitor": "val/loss",
                "best_checkpoint.mode": "min",
                "best_checkpoint.save_top_k": 1,
                "best_checkpoint.filename": "best",
                "best_checkpoint.save_weights_only": True,
                "best_checkpoint.save_last": False,
                "best_checkpoint.auto_insert_metric_name": False,
                "best_checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(RunCheckpoint, "periodic_checkpoint")
        parser.set_defaults(
            {
                "periodic_checkpoint.monitor": "step",
                "periodic_checkpoint.mode": "max",
                "periodic_checkpoint.every_n_train_steps": 500,
                "periodic_checkpoint.save_top_k": 0,  # step snapshots beside last.ckpt: none
                "periodic_checkpoint.filename": "step-{step:06d}",
                "periodic_checkpoint.auto_insert_metric_name": False,
                "periodic_checkpoint.save_last": True,
            }
        )
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults(
            {
                "early_stopping.monitor": "val/loss",
                "early_stopping.mode": "min",
                "early_stopping.patience": 5,
                "early_stopping.check_finite": True,
            }
        )
        parser.add_lightning_class_args(DivergenceGuard, "guard")
        parser.add_lightning_class_args(WarningSigns, "warning_signs")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        run = config.run
        for key in ("best_checkpoint", "periodic_checkpoint"):
            if config[key].dirpath is None:
                config[key].dirpath = f"checkpoints/{run}"
        if config.trainer.logger in (None, True):
            # validate writes beside the run, never into its training logs and config.yaml.
            evaluating = self.subcommand in ("validate", "test", "predict")
            version = f"{self.subcommand}-{time.strftime('%Y%m%d-%H%M%S')}" if evaluating else ""
            config.trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.TensorBoardLogger",
                init_args=Namespace(save_dir="lightning_logs", name=run, version=version, default_hp_metric=False),
            )
        if self.subcommand == "fit":
            self._resume_or_start(config, run)
        elif self.subcommand == "validate":
            self._weights_to_validate(config, run)

    def _resume_or_start(self, config, run: str) -> None:
        """The same command resumes its run from the newest good checkpoint; --fresh moves it aside."""
        ckpt_dir = Path(config.periodic_checkpoint.dirpath)
        log_dir = Path("lightning_logs") / run
        if config.fresh:
            if _is_rank_zero_process():
                for moved in move_aside(ckpt_dir, log_dir):
                    say(f"--fresh: the earlier run is kept at {moved}", warning=False)
            return
        if not config.get("ckpt_path") and ckpt_dir.is_dir():
            found = newest_good_checkpoint(ckpt_dir)
            if _is_rank_zero_process():
                for partial in remove_partial_saves(ckpt_dir):
                    say(f"removed {partial}, a save that was interrupted")
                for bad, why in found.unreadable:
                    say(f"{bad} cannot be loaded ({why}); moved aside to {move_corrupt(bad).name}")
            if found.path is not None:
                complete = _complete(found, config, run)
                if complete:
                    raise RunComplete(complete)
                say(
                    f"resuming run {run!r} from {found.path} (step {found.step}); pass --fresh true to start it over",
                    warning=False,
                )
                config.ckpt_path = str(found.path)
        if config.get("ckpt_path"):
            # The checkpoint holds the weights; init_from is for new runs. The run's origin stays in
            # its config.yaml (after_instantiate_classes puts it back): the report reads its baseline there.
            self._origin = _origin(log_dir) or config.model.init_from
            config.model.init_from = None

    def _weights_to_validate(self, config, run: str) -> None:
        """validate of a run checks that run's best.ckpt unless --ckpt_path names other weights, and
        says which file and step it validates (else init_from or the base model would be, silently)."""
        best = Path(config.best_checkpoint.dirpath) / "best.ckpt"
        if not config.get("ckpt_path") and best.is_file():
            config.ckpt_path = str(best)
        if config.get("ckpt_path"):
            try:
                self._validated_step = read_header(Path(config.ckpt_path))["step"]
            except Exception as err:  # noqa: BLE001 - any unreadable file is one line
                raise UsageError(f"--ckpt_path {config.ckpt_path}: cannot be loaded ({err})") from None
            config.model.init_from = None  # the checkpoint holds the weights
            say(f"validate: the weights of {config.ckpt_path} (step {self._validated_step})", warning=False)
        elif config.model.init_from:
            say(
                f"validate: {best} not found (has run {run!r} trained?); validating model.init_from "
                f"{config.model.init_from}, the weights the run starts from",
                warning=False,
            )
        else:
            say(
                f"validate: {best} not found (has run {run!r} trained?); validating the base model "
                f"{config.model.base_model} itself",
                warning=False,
            )

    def after_instantiate_classes(self) -> None:
        # validate logs its figures at the step of the weights it validated, beside the run's curve.
        self.trainer.validated_step = getattr(self, "_validated_step", None)
        if getattr(self, "_origin", None):
            self.config[self.subcommand].model.init_from = self._origin  # what config.yaml is written with
        # Every checkpoint is written to a temporary file and renamed into place.
        self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    # Checks that can fail run here, before Lightning writes any log, config or checkpoint.

    def before_fit(self) -> None:
        self.datamodule.setup("fit")
        preflight(self.trainer, self.model, self.datamodule)

    def after_fit(self) -> None:
        """One line at the end: the best step, its val/loss and where its weights are."""
        if not self.trainer.is_global_zero:
            return
        trainer = self.trainer
        best = next((c for c in trainer.checkpoint_callbacks if c.monitor == "val/loss"), None)
        if best is None or not best.best_model_path or not Path(best.best_model_path).is_file():
            say(f"fit ended at step {trainer.global_step} with no best.ckpt: no validation ran", warning=False)
            return
        path = Path(best.best_model_path)
        shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
        say(
            f"fit ended at step {trainer.global_step}; the best is step {read_header(path)['step']}, val/loss "
            f"{float(best.best_model_score):.4f}: {shown}",
            warning=False,
        )

    def before_validate(self) -> None:
        self.datamodule.setup("validate")


def _origin(log_dir: Path) -> str | None:
    """The init_from a run started with, as its config.yaml holds it (None when it has none)."""
    import yaml

    try:
        config = yaml.safe_load((log_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    return ((config.get("model") if isinstance(config, dict) else None) or {}).get("init_from")


def _complete(found: Found, config, run: str) -> str | None:
    """What to say when the newest checkpoint is the end of a run this command would not extend."""
    ended = found.finished
    if not ended:
        return None
    steps, epochs = config.trainer.max_steps or -1, config.trainer.max_epochs
    if ended["reason"] == "max_steps" and 0 < steps <= ended["step"]:
        why, how = f"max_steps {steps}", "raise --trainer.max_steps"
    elif ended["reason"] == "max_epochs" and epochs is not None and 0 < epochs <= ended["epoch"] + 1:
        why, how = f"max_epochs {epochs}", "raise --trainer.max_epochs"
    elif ended["reason"] == "early_stopping" and config.early_stopping.patience <= (ended["patience"] or 0):
        why = f"early stopping: val/loss did not improve for {ended['patience']} validations"
        how = "raise --early_stopping.patience (and --trainer.max_epochs if needed)"
    else:
        return None
    return (
        f"run {run!r} is complete: it ended at step {ended['step']} ({why}); {found.path} is its final "
        f"state. To train it further, {how} and run the same command; to start over, add --fresh true."
    )


def cli_main(args: ArgsType = None, run: bool = True) -> XttsCLI:
    try:
        return XttsCLI(
            XttsGPTModule,
            ShardDataModule,
            args=args,
            run=run,
            trainer_class=XttsTrainer,
            save_config_kwargs={"overwrite": True},  # a resumed run writes its config.yaml again
            parser_kwargs={"default_env": False},
            parser_class=XttsArgumentParser,
        )
    except RunComplete as done:
        say(str(done), warning=False)
        return None
    except RunStopped as stopped:  # Ctrl-C, SIGTERM, or a stop the run asked for, after its save
        if stopped.code == 1:
            raise SystemExit(f"error: {stopped}") from None
        say(str(stopped))
        raise SystemExit(stopped.code) from None
    except VagoError as err:
        # Bad input is one line that names the file or key and what to do, not a traceback.
        raise SystemExit(f"error: {_one_line(err)}") from None


def _one_line(err: VagoError) -> str:
    """The message of `err`; raised in a DataLoader worker, PyTorch puts the worker's traceback in it:
    its last line is the message."""
    message = str(err)
    if "Original Traceback" not in message:
        return message
    last = message.strip().splitlines()[-1]
    return last.split(f"{type(err).__name__}: ", 1)[-1]
