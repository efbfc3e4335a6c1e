"""The command line: `python train.py fit --config finetune.yaml [--model.lr 1e-6 ...]`.

A LightningCLI over XttsGPTModule and ShardDataModule. Settings the data and the model must share
(base model, language) are linked, not repeated. `--run NAME` names the run: checkpoints go to
`checkpoints/NAME/` (best.ckpt by validation loss, last.ckpt, periodic step-*.ckpt) and TensorBoard
logs to `lightning_logs/NAME/`.
"""

from __future__ import annotations

from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningCLI

from .base_model import BaseModelError
from .data import DataError, ShardDataModule
from .model import XttsGPTModule


class XttsCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run", type=str, default="run",
                            help="run name: checkpoints/<run>/ and lightning_logs/<run>/")
        parser.link_arguments("model.base_model", "data.base_model")
        parser.link_arguments("model.language", "data.language")
        # Always present, configurable under their own keys.
        parser.add_lightning_class_args(ModelCheckpoint, "best_checkpoint")
        parser.set_defaults({
            "best_checkpoint.monitor": "val/loss", "best_checkpoint.mode": "min", "best_checkpoint.save_top_k": 1,
            "best_checkpoint.filename": "best", "best_checkpoint.save_last": True,
            "best_checkpoint.auto_insert_metric_name": False, "best_checkpoint.enable_version_counter": False,
        })
        parser.add_lightning_class_args(ModelCheckpoint, "periodic_checkpoint")
        parser.set_defaults({
            "periodic_checkpoint.monitor": "step", "periodic_checkpoint.mode": "max",
            "periodic_checkpoint.every_n_train_steps": 500, "periodic_checkpoint.save_top_k": 3,
            "periodic_checkpoint.filename": "step-{step:06d}", "periodic_checkpoint.auto_insert_metric_name": False,
        })

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        run = config.run
        for key in ("best_checkpoint", "periodic_checkpoint"):
            if config[key].dirpath is None:
                config[key].dirpath = f"checkpoints/{run}"
        if config.trainer.logger in (None, True):
            config.trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.TensorBoardLogger",
                init_args=Namespace(save_dir="lightning_logs", name=run, version="", default_hp_metric=False),
            )
        if self.subcommand == "fit" and not config.get("ckpt_path"):
            existing = sorted(Path(config.best_checkpoint.dirpath).glob("*.ckpt"))
            if existing:
                raise SystemExit(
                    f"error: {config.best_checkpoint.dirpath} already holds run {run!r} ({existing[0].name}); "
                    f"resume it with --ckpt_path {Path(config.best_checkpoint.dirpath) / 'last.ckpt'} "
                    "or start another with --run NEW_NAME"
                )


def cli_main(args: ArgsType = None, run: bool = True) -> XttsCLI:
    try:
        return XttsCLI(
            XttsGPTModule, ShardDataModule, args=args, run=run,
            save_config_kwargs={"overwrite": True},  # a resumed run writes its config.yaml again
            parser_kwargs={"default_env": False},
        )
    except (DataError, BaseModelError) as err:
        # Bad input is one line that names the file or key and what to do, not a traceback.
        raise SystemExit(f"error: {err}") from None
