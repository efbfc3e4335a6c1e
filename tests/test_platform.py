"""The user's own machine (Windows, no root, no make): the demo verb, speech without a system
espeak-ng, spawn-started workers, and file names Windows accepts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vago_lightning.training.checkpoints import move_aside, move_corrupt
from vago_lightning.training.cli import cli_main

REPO = Path(__file__).resolve().parent.parent
WINDOWS_FORBIDDEN = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
WINDOWS_RESERVED = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}


def windows_problem(name: str) -> str | None:
    if WINDOWS_FORBIDDEN.search(name):
        return "a character Windows forbids"
    if name.endswith((".", " ")):
        return "ends in a dot or a space"
    if name.split(".")[0].upper() in WINDOWS_RESERVED:
        return "a reserved device name"
    return None


def test_demo_speech_needs_no_system_espeak(monkeypatch):
    from vago_lightning.demo import espeak

    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # no espeak-ng reachable
    monkeypatch.setattr(espeak, "_backend", None)
    assert espeak.backend()["backend"] == "library"
    a, rate = espeak.synthesize("Jó estét kívánok, kedves nézők!", "hu", 150, 58)
    b, _ = espeak.synthesize("Jó estét kívánok, kedves nézők!", "hu", 150, 58)
    other, _ = espeak.synthesize("Jó estét kívánok, kedves nézők!", "hu+f1", 150, 58)
    assert rate == 22050 and len(a) > rate and np.array_equal(a, b)  # the same call, the same samples
    assert not np.array_equal(a[: len(other)], other[: len(a)])


@pytest.mark.slow
def test_the_demo_verb_runs_the_whole_chain_without_make_or_espeak_and_names_suit_windows(tmp_path):
    env = dict(os.environ, PATH=str(Path(sys.executable).parent), PYTHONUNBUFFERED="1")  # no espeak-ng, no make
    run = subprocess.run(
        [sys.executable, "-m", "vago_lightning", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in lines if line.endswith("...")] == [f"[{i}/10" for i in range(1, 11)]
    assert (
        run.stdout.strip()
        .splitlines()[-1]
        .startswith("serve the voice: python -m vago_lightning serve --model exported/demo-combined")
    )
    outputs = [
        "models/tiny-xtts/model.pth",
        "checkpoints/demo-combined/best.ckpt",
        "samples/demo-combined/index.json",
        "exported/demo-combined/model.pth",
        "reports/demo/index.html",
        "reports/demo-combined/index.html",
    ]
    for out in outputs:
        assert (tmp_path / out).is_file(), out
    again = subprocess.run(
        [sys.executable, "-m", "vago_lightning", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert sum("done already" in line for line in again.stdout.splitlines()) == 10
    # The names a run makes when it moves things aside, beside everything the demo wrote.
    ckpts = tmp_path / "checkpoints" / "demo-quiz"
    (ckpts / "step-000001.ckpt").write_bytes(b"not a checkpoint")
    move_corrupt(ckpts / "step-000001.ckpt")
    move_aside(tmp_path / "lightning_logs" / "demo-quiz")
    bad = [(str(p.relative_to(tmp_path)), why) for p in tmp_path.rglob("*") if (why := windows_problem(p.name))]
    assert not bad, bad


def test_fit_with_spawn_started_workers(tiny_base, demo_shards, tmp_path, monkeypatch):
    """Windows has no fork: a dataset, collate or callback that does not pickle fails here, not there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["train.py"])
    configs = [
        arg
        for n in ("finetune.yaml", "configs/demo.yaml", "configs/demo-quiz.yaml")
        for arg in ("--config", str(REPO / n))
    ]
    cli = cli_main(
        [
            "fit",
            *configs,
            f"--model.base_model={tiny_base}",
            f"--data.shards_dir={demo_shards}",
            "--data.num_workers=1",
            "--data.multiprocessing_context=spawn",
            "--trainer.max_steps=3",
            "--trainer.val_check_interval=3",
        ]
    )
    assert cli.trainer.global_step == 3
    assert cli.trainer.train_dataloader.multiprocessing_context.get_start_method() == "spawn"


def test_windows_name_rule():
    assert windows_problem("last.ckpt.corrupt-20261126-153000") is None
    assert windows_problem("demo-quiz.replaced-20261126-153000") is None
    assert windows_problem("a:b") and windows_problem("x.") and windows_problem("CON.txt")
