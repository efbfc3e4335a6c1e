"""What ordinary machines do to a night-long run: Ctrl-C, SIGTERM, a full disk, a rotten clip, a cut
shard, a shard server that drops the connection. Each ends in a saved state and one line, or the run
goes on; the rerun goes on exactly."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vago_lightning import files
from vago_lightning.training import checkpoints
from vago_lightning.training.cli import cli_main

from helpers import quiz_fit_args

REPO = Path(__file__).resolve().parent.parent


def _child_env(run_dir: Path) -> dict:
    # The children run this checkout's code (with its tests' helpers), whatever else is installed.
    path = os.pathsep.join([str(REPO / "tests"), str(REPO)])
    return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1", RUN_DIR=str(run_dir))


def _fit_cmd(tiny_base, shards, keys_file, *extra, script="train.py"):
    return [
        sys.executable,
        str(REPO / ("tests" if script != "train.py" else "") / script),
        "fit",
        *quiz_fit_args(tiny_base, shards, "--data.num_workers=1"),
        "--trainer.max_steps=60",
        "--trainer.val_check_interval=12",
        "--periodic_checkpoint.every_n_train_steps=100",
        "--trainer.callbacks+=helpers.RecordKeys",
        f"--trainer.callbacks.out={keys_file}",
        *extra,
    ]


def _start(cmd, run_dir: Path, log: Path):
    # A session of its own: the test signals the whole process group, as a console's Ctrl-C does.
    with open(log, "w") as out:
        return subprocess.Popen(
            cmd, env=_child_env(run_dir), stdout=out, stderr=subprocess.STDOUT, cwd=run_dir, start_new_session=True
        )


def _steps(keys_file: Path) -> list[int]:
    return [int(line.split()[0]) for line in keys_file.read_text().splitlines()] if keys_file.is_file() else []


def _wait(predicate, proc, seconds=240) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def _latest_keys(keys_file: Path) -> dict[int, list[str]]:
    """The surviving record of each step (a resumed run writes the steps after its checkpoint)."""
    latest = {}
    for line in keys_file.read_text().splitlines():
        step, _, *keys = line.split()
        latest[int(step)] = keys
    return latest


@pytest.mark.slow
def test_ctrl_c_and_sigterm_save_the_step_reached_and_the_rerun_goes_on_exactly(tiny_base, demo_shards, tmp_path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "run").mkdir()
    ckpt = tmp_path / "run" / "checkpoints" / "demo-quiz" / "last.ckpt"
    keys = tmp_path / "keys.txt"
    cmd = _fit_cmd(tiny_base, demo_shards, keys)

    # 1. Ctrl-C in the console: SIGINT to every process of the program, DataLoader worker included.
    proc = _start(cmd, tmp_path / "run", tmp_path / "run1.log")
    assert _wait(lambda: len(_steps(keys)) >= 3, proc), (tmp_path / "run1.log").read_text()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    first = (tmp_path / "run1.log").read_text()
    stop1 = _steps(keys)[-1]
    assert torch.load(ckpt, weights_only=False)["global_step"] == stop1
    assert f"stopped by Ctrl-C at step {stop1}; {Path('checkpoints/demo-quiz/last.ckpt')} holds that step" in first
    assert "Traceback" not in first

    # 2. Resumed, then SIGTERM from a scheduler (to the main process alone).
    proc = _start(cmd, tmp_path / "run", tmp_path / "run2.log")
    assert _wait(lambda: _steps(keys)[-1] >= 14, proc), (tmp_path / "run2.log").read_text()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    second = (tmp_path / "run2.log").read_text()
    stop2 = _steps(keys)[-1]
    assert f"(step {stop1})" in second and f"stopped by SIGTERM at step {stop2}" in second
    assert torch.load(ckpt, weights_only=False)["global_step"] == stop2

    # 3. Resumed to the end: every step trained the batch an uninterrupted run trains.
    proc = _start(cmd, tmp_path / "run", tmp_path / "run3.log")
    assert proc.wait(timeout=300) == 0, (tmp_path / "run3.log").read_text()
    reference_keys = tmp_path / "ref" / "keys.txt"
    proc = _start(_fit_cmd(tiny_base, demo_shards, reference_keys), tmp_path / "ref", tmp_path / "ref.log")
    assert proc.wait(timeout=300) == 0, (tmp_path / "ref.log").read_text()
    assert _latest_keys(keys) == _latest_keys(reference_keys)
    assert sorted(_latest_keys(keys)) == list(range(1, 61))


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once(tiny_base, demo_shards, tmp_path):
    keys = tmp_path / "keys.txt"
    ckpts = tmp_path / "checkpoints" / "demo-quiz"
    # Saves wait a second before their rename: the second Ctrl-C comes while the stop's save is written.
    proc = _start(_fit_cmd(tiny_base, demo_shards, keys, script="slow_disk_train.py"), tmp_path, tmp_path / "run.log")
    assert _wait(lambda: len(_steps(keys)) >= 2, proc), (tmp_path / "run.log").read_text()
    os.killpg(proc.pid, signal.SIGINT)
    assert _wait(lambda: list(ckpts.glob(".last.ckpt.tmp-*")), proc), (tmp_path / "run.log").read_text()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert "Ctrl-C again: exiting at once" in (tmp_path / "run.log").read_text()


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint_and_the_rerun_resumes(
    tiny_base, demo_shards, tmp_path, monkeypatch, caplog
):
    """The second save of last.ckpt writes some bytes and then finds the disk full."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["train.py"])
    args = ["fit", *quiz_fit_args(tiny_base, demo_shards), "--trainer.max_steps=8", "--trainer.val_check_interval=4"]
    ckpts = tmp_path / "checkpoints" / "demo-quiz"
    published = []
    publish = checkpoints.AtomicCheckpointIO._publish
    write = files._write

    def counting_publish(tmp, path):
        publish(tmp, path)
        published.append(path.name)

    def full_disk(f, data):
        if "last.ckpt" in Path(f.name).name and "last.ckpt" in published:
            write(f, bytes(memoryview(data)[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(f, data)

    monkeypatch.setattr(checkpoints.AtomicCheckpointIO, "_publish", staticmethod(counting_publish))
    monkeypatch.setattr(files, "_write", full_disk)
    with pytest.raises(SystemExit) as stopped:
        cli_main(args)
    message = str(stopped.value.code)
    assert message.startswith("error: ") and "\n" not in message
    assert f"{Path('checkpoints/demo-quiz')}: the disk is full (" in message and "GB free" in message
    assert "a save of step 8 needs about" in message and "last.ckpt of the previous save is whole" in message
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["global_step"] == 4
    assert not [p for p in ckpts.iterdir() if checkpoints.TMP_MARK in p.name]

    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["train.py"])
    caplog.clear()
    cli = cli_main(args)
    assert "resuming run 'demo-quiz' from" in caplog.text and cli.trainer.global_step == 8
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["global_step"] == 8
