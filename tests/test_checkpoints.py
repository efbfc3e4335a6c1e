"""What a run keeps: best.ckpt sees the final validation, last.ckpt is the final state, a finished
run says so, a corrupt checkpoint is moved aside once."""

from __future__ import annotations

import pytest
import torch

from vago_lightning.__main__ import main
from vago_lightning.training.cli import cli_main

from helpers import quiz_fit_args, scalars


def test_best_ckpt_includes_the_final_validation_and_last_ckpt_is_the_final_state(tiny_base, demo_shards, run_dir):
    cli = cli_main(
        [
            "fit",
            *quiz_fit_args(tiny_base, demo_shards, "--trainer.max_steps=9", "--trainer.val_check_interval=3"),
        ]
    )
    folder = run_dir / "checkpoints" / "demo-quiz"
    vals = [v for s, v in scalars(run_dir / "lightning_logs" / "demo-quiz", "val/loss") if s > 0]  # 3, 6, 9
    assert len(vals) == 3 and vals[2] == min(vals)  # the losses fall: the final validation is the best
    best_value = vals[2]
    best = torch.load(folder / "best.ckpt", weights_only=False)
    assert best["global_step"] == 9 and "optimizer_states" not in best  # the weights alone
    assert float(cli.trainer.checkpoint_callback.best_model_score) == pytest.approx(best_value, rel=1e-5)
    last = torch.load(folder / "last.ckpt", weights_only=False)
    assert last["global_step"] == 9 and "optimizer_states" in last
    stopper = next(v for k, v in last["callbacks"].items() if k.startswith("EarlyStopping"))
    assert float(stopper["best_score"]) == pytest.approx(best_value, rel=1e-5)  # after the final validation
    # One last.ckpt, no -vN duplicates, no step snapshots by default.
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_a_run_whose_only_validation_is_its_last_step_has_a_best_ckpt(tiny_base, demo_shards, run_dir):
    cli_main(
        [
            "fit",
            *quiz_fit_args(tiny_base, demo_shards, "--trainer.max_steps=4", "--trainer.val_check_interval=4"),
        ]
    )
    assert (run_dir / "checkpoints" / "demo-quiz" / "best.ckpt").is_file()
    out = run_dir / "exported"
    assert main(["export", "--ckpt", "checkpoints/demo-quiz/best.ckpt", "--out", str(out)]) == 0


def test_rerunning_a_finished_run_says_it_is_complete(tiny_base, demo_shards, run_dir, caplog):
    args = quiz_fit_args(tiny_base, demo_shards, "--trainer.max_steps=4", "--trainer.val_check_interval=4")
    cli_main(["fit", *args])
    assert cli_main(["fit", *args]) is None  # nothing trained
    assert "is complete: it ended at step 4 (max_steps 4)" in caplog.text and "--fresh true" in caplog.text
    cli = cli_main(["fit", *args[:-2], "--trainer.max_steps=6", "--trainer.val_check_interval=3"])
    assert cli.trainer.global_step == 6  # raising max_steps goes on


def test_a_corrupt_checkpoint_is_moved_aside_once(tiny_base, demo_shards, run_dir, caplog):
    args = quiz_fit_args(tiny_base, demo_shards, "--trainer.val_check_interval=4")
    cli_main(["fit", *args, "--trainer.max_steps=4"])
    folder = run_dir / "checkpoints" / "demo-quiz"
    (folder / "step-000040.ckpt").write_bytes(b"garbage")
    cli = cli_main(["fit", *args, "--trainer.max_steps=8"])
    assert cli.trainer.global_step == 8
    assert "step-000040.ckpt cannot be loaded" in caplog.text and "moved aside" in caplog.text
    names = sorted(p.name for p in folder.iterdir())
    assert names[:2] == ["best.ckpt", "last.ckpt"] and names[2].startswith("step-000040.ckpt.corrupt-")
    assert not any("-v1" in n for n in names)
    caplog.clear()
    cli_main(["fit", *args, "--trainer.max_steps=12"])
    assert "cannot be loaded" not in caplog.text  # said once
