"""`validate`: the run's own best.ckpt unless told otherwise, said which, its figures logged beside the
run at that checkpoint's step, never into the run's own logs."""

from __future__ import annotations

import pytest
import torch

from vago_lightning.training.cli import cli_main

from helpers import quiz_fit_args, scalars


def test_validate_writes_beside_the_run_not_into_its_logs(tiny_base, demo_shards, run_dir):
    args = quiz_fit_args(tiny_base, demo_shards, "--trainer.max_steps=4", "--trainer.val_check_interval=4")
    cli_main(["fit", *args])
    logs = run_dir / "lightning_logs" / "demo-quiz"
    config = (logs / "config.yaml").read_text()
    before = scalars(logs, "val/loss")
    cli_main(["validate", *args, "--ckpt_path=checkpoints/demo-quiz/best.ckpt"])
    assert (logs / "config.yaml").read_text() == config and scalars(logs, "val/loss") == before
    (own,) = list(logs.glob("validate-*"))
    assert (own / "config.yaml").is_file() and scalars(own, "val/loss")


def test_validate_checks_the_runs_best_ckpt_and_says_which(tiny_base, demo_shards, run_dir, caplog):
    args = quiz_fit_args(tiny_base, demo_shards, "--trainer.max_steps=4", "--trainer.val_check_interval=2")
    cli_main(["fit", *args])
    best_step = torch.load(run_dir / "checkpoints" / "demo-quiz" / "best.ckpt", weights_only=False)["global_step"]
    logs = run_dir / "lightning_logs" / "demo-quiz"
    expected = dict(scalars(logs, "val/loss"))[best_step]
    cli_main(["validate", *args])  # the stage's command with fit replaced by validate
    assert f"validate: the weights of checkpoints/demo-quiz/best.ckpt (step {best_step})" in caplog.text
    (own,) = list(logs.glob("validate-*"))
    assert scalars(own, "val/loss") == [(best_step, pytest.approx(expected, rel=1e-4))]
