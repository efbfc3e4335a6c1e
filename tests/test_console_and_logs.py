"""What a run tells: plain progress lines where there is no terminal, and one step numbering on the
console, in TensorBoard, in checkpoints and in the report."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from vago_lightning.inference.report import read_run
from vago_lightning.training.cli import cli_main

from helpers import REPO, quiz_fit_args, scalars


def test_plain_progress_lines_without_a_terminal(tiny_base, demo_shards, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "fit",
            *quiz_fit_args(tiny_base, demo_shards, "--trainer.max_steps=20", "--trainer.val_check_interval=10"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        check=True,
    )
    lines = out.stdout.splitlines()
    assert any(line.startswith("step 10/20 epoch 0") and "train/loss=" in line for line in lines)
    assert any(line.startswith("validation at step 20 | ") and "val/loss=" in line for line in lines)
    noise = out.stdout + out.stderr
    for quiet in ("bos_token_id", "litlogger", "LeafSpec", "exists and is not empty"):
        assert quiet not in noise, quiet
    assert not any(line.startswith("Epoch ") for line in lines)  # no progress bar drawn into a log


def test_console_tensorboard_checkpoints_and_report_number_steps_alike(tiny_base, demo_shards, run_dir, capsys, caplog):
    args = ["--trainer.max_steps=4", "--trainer.val_check_interval=2", "--trainer.log_every_n_steps=2"]
    cli_main(["fit", *quiz_fit_args(tiny_base, demo_shards, *args)])
    console = capsys.readouterr().out
    assert "validation at step 2 |" in console and "validation at step 4 |" in console
    logs = run_dir / "lightning_logs" / "demo-quiz"
    assert [s for s, _ in scalars(logs, "val/loss")] == [0, 2, 4]  # 0: the starting point
    assert [s for s, _ in scalars(logs, "train/loss")] == [2, 4]
    best = torch.load(run_dir / "checkpoints" / "demo-quiz" / "best.ckpt", weights_only=False)["global_step"]
    assert read_run("demo-quiz").best_step == best
    # The end of fit says where the best is (an expectation of the issue).
    value = min(v for s, v in scalars(logs, "val/loss") if s)
    assert f"fit ended at step 4; the best is step {best}, val/loss {value:.4f}: checkpoints/demo-quiz/best.ckpt" in (
        caplog.text
    )
