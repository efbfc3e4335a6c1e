"""What ordinary machines do to a night-long run: Ctrl-C, SIGTERM, a full disk, a rotten clip, a cut
shard, a shard server that drops the connection. Each ends in a saved state and one line, or the run
goes on; the rerun goes on exactly."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from test_resilience import _wait_for

from vago_lightning import files
from vago_lightning.errors import DataError
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
        "--trainer.max_steps=20",
        "--trainer.val_check_interval=8",
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
    assert _wait_for(lambda: len(_steps(keys)) >= 2, proc, 600), (tmp_path / "run1.log").read_text()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=300) == 130
    first = (tmp_path / "run1.log").read_text()
    stop1 = _steps(keys)[-1]
    assert torch.load(ckpt, weights_only=False)["global_step"] == stop1
    assert f"stopped by Ctrl-C at step {stop1}; {ckpt} holds that step. Run the same command to go on" in first
    assert "Traceback" not in first

    # 2. Resumed, then SIGTERM from a scheduler (to the main process alone).
    proc = _start(cmd, tmp_path / "run", tmp_path / "run2.log")
    assert _wait_for(lambda: _steps(keys)[-1] >= 10, proc, 600), (tmp_path / "run2.log").read_text()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 128 + signal.SIGTERM
    second = (tmp_path / "run2.log").read_text()
    stop2 = _steps(keys)[-1]
    assert f"(step {stop1})" in second and f"stopped by SIGTERM at step {stop2}" in second
    assert torch.load(ckpt, weights_only=False)["global_step"] == stop2

    # 3. Resumed to the end: every step trained the batch an uninterrupted run trains.
    proc = _start(cmd, tmp_path / "run", tmp_path / "run3.log")
    assert proc.wait(timeout=900) == 0, (tmp_path / "run3.log").read_text()
    reference_keys = tmp_path / "ref" / "keys.txt"
    proc = _start(_fit_cmd(tiny_base, demo_shards, reference_keys), tmp_path / "ref", tmp_path / "ref.log")
    assert proc.wait(timeout=900) == 0, (tmp_path / "ref.log").read_text()
    assert _latest_keys(keys) == _latest_keys(reference_keys)
    assert sorted(_latest_keys(keys)) == list(range(1, 21))


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once(tiny_base, demo_shards, tmp_path):
    keys = tmp_path / "keys.txt"
    ckpts = tmp_path / "checkpoints" / "demo-quiz"
    # Saves wait a second before their rename: the second Ctrl-C comes while the stop's save is written.
    proc = _start(_fit_cmd(tiny_base, demo_shards, keys, script="slow_disk_train.py"), tmp_path, tmp_path / "run.log")
    assert _wait_for(lambda: len(_steps(keys)) >= 2, proc, 600), (tmp_path / "run.log").read_text()
    os.killpg(proc.pid, signal.SIGINT)
    assert _wait_for(lambda: list(ckpts.glob(".last.ckpt.tmp-*")), proc), (tmp_path / "run.log").read_text()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert "Ctrl-C again: exiting at once" in (tmp_path / "run.log").read_text()


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint_and_the_rerun_resumes(
    tiny_base, demo_shards, tmp_path, monkeypatch, caplog
):
    """The second save of last.ckpt writes some bytes and then finds the disk full."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["train.py"])
    args = ["fit", *quiz_fit_args(tiny_base, demo_shards), "--trainer.max_steps=4", "--trainer.val_check_interval=2"]
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
    assert "a save of step 4 needs about" in message and "last.ckpt of the previous save is whole" in message
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["global_step"] == 2
    assert not [p for p in ckpts.iterdir() if checkpoints.TMP_MARK in p.name]

    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["train.py"])
    caplog.clear()
    cli = cli_main(args)
    assert "resuming run 'demo-quiz' from" in caplog.text and cli.trainer.global_step == 4
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["global_step"] == 4


# --- shards that rotted, were cut short, or come over a connection that drops ---------------------


def _copy_shards(demo_shards, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(demo_shards, tmp_path / "data_shards"))


def _datamodule(shards, tiny_base, **kwargs):
    from vago_lightning.data.datamodule import ShardDataModule

    dm = ShardDataModule(shards_dir=str(shards), base_model=str(tiny_base), num_workers=0, **kwargs)
    dm.setup("fit")
    return dm


def _rot_clip(shard: Path, key: str) -> None:
    """Overwrite the audio of `key` in `shard` with garbage of the same length (the shard keeps its size)."""
    import tarfile

    data = bytearray(shard.read_bytes())
    with tarfile.open(shard) as tar:
        member = tar.getmember(f"{key}.flac")
    data[member.offset_data : member.offset_data + member.size] = os.urandom(member.size)
    shard.write_bytes(bytes(data))


def test_a_cut_or_altered_shard_is_named_before_training(demo_shards, tiny_base, tmp_path):
    from test_data import _serving

    shards = _copy_shards(demo_shards, tmp_path)
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["version"] == 4
    files_ = manifest["corpora"]["quiz"]["files"]
    assert files_["train-000001.tar"]["size"] == (shards / "quiz" / "train-000001.tar").stat().st_size
    _datamodule(shards, tiny_base, verify=True)  # whole shards pass both checks

    shard = shards / "quiz" / "train-000001.tar"
    key = json.loads((shards / "quiz" / "corpus.json").read_text())["splits"]["train"]["index"][70]["key"]
    assert json.loads((shards / "quiz" / "corpus.json").read_text())["splits"]["train"]["index"][70]["shard"] == (
        "train-000001.tar"
    )
    _rot_clip(shard, key)
    _datamodule(shards, tiny_base)  # the same size: found by the hash alone
    with pytest.raises(DataError, match=r"quiz/train-000001.tar: its SHA-256 differs .* prepare --corpus quiz="):
        _datamodule(shards, tiny_base, verify=True)

    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # a copy that did not finish
    with pytest.raises(DataError, match=r"quiz/train-000001.tar: \d+ bytes, but prepare wrote \d+: the shard was cut"):
        _datamodule(shards, tiny_base)
    with _serving(shards) as (url, _), pytest.raises(DataError, match="quiz/train-000001.tar: .* bytes, but prepare"):
        _datamodule(url, tiny_base)  # the size the server's Content-Length gives

    # A manifest of the previous version loads; the pre-flight says that sizes are not recorded.
    manifest["version"] = 3
    for entry in manifest["corpora"].values():
        del entry["files"]
    (shards / "manifest.json").write_text(json.dumps(manifest))
    from vago_lightning.data.integrity import check_shards
    from vago_lightning.data.manifest import load_manifest

    line = check_shards(load_manifest(str(shards)), str(shards), ["quiz"])
    assert "shard sizes are not recorded" in line and "run prepare again" in line


def _first_batches(shards, tiny_base, n):
    from vago_lightning.data.datamodule import _RankPlan

    dm = _datamodule(shards, tiny_base, corpora=["quiz"])
    return _RankPlan(dm, 0)(0, 1)[:n]


@pytest.mark.slow
def test_a_clip_that_cannot_be_decoded_is_skipped_listed_and_counted_and_too_many_stop_the_run(
    tiny_base, demo_shards, tmp_path, monkeypatch, caplog
):
    shards = _copy_shards(demo_shards, tmp_path)
    first, second = _first_batches(shards, tiny_base, 2)
    _rot_clip(shards / "quiz" / first[0]["shard"], first[0]["key"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["train.py"])
    args = ["fit", *quiz_fit_args(tiny_base, shards), "--trainer.max_steps=3", "--trainer.val_check_interval=3"]

    cli = cli_main(args)  # default limit: 1% of 80 clips, at least 1
    assert cli.trainer.global_step == 3
    listed = [json.loads(line) for line in (tmp_path / "lightning_logs" / "demo-quiz" / "skipped.jsonl").open()]
    assert [(r["shard"], r["key"]) for r in listed] == [(f"quiz/{first[0]['shard']}", first[0]["key"])]
    assert "Error" in listed[0]["error"] and listed[0]["step"] == 1
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped clip")]
    assert len(said) == 1 and f"of shard quiz/{first[0]['shard']}: it cannot be decoded" in said[0]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "lightning_logs" / "demo-quiz")).Reload()
    assert [e.value for e in events.Scalars("data/skipped_clips")] == [1.0]

    # A second bad clip is over the limit: the run saves the step it reached and stops with one line.
    _rot_clip(shards / "quiz" / second[0]["shard"], second[0]["key"])
    args = [*args, "--fresh=true", "--trainer.max_steps=6"]
    with pytest.raises(SystemExit) as stopped:
        cli_main(args)
    message = str(stopped.value.code)
    assert message.startswith("error: 2 clips could not be decoded, more than data.max_bad_clips (1), in quiz/")
    assert "\n" not in message and "python -m vago_lightning prepare --corpus quiz=" in message
    assert f"--out {shards}" in message and "holds step 2" in message
    assert torch.load(tmp_path / "checkpoints" / "demo-quiz" / "last.ckpt", weights_only=False)["global_step"] == 2
    # The rerun knows both clips: it does not train on into them but stops again at once, saying why.
    args = [a for a in args if a != "--fresh=true"]
    with pytest.raises(SystemExit) as again:
        cli_main(args)
    assert "2 clips could not be decoded" in str(again.value.code) and "holds step 3" in str(again.value.code)
    # Raising the limit lets the run go on past them.
    assert cli_main([*args, "--data.max_bad_clips=2"]).trainer.global_step == 6


def _dropping_server(folder: Path, drops: int):
    """`folder` over HTTP on loopback; the first `drops` requests for a train shard send half the shard
    and close the connection (a server restarting, a network that fails)."""
    import contextlib
    import http.server
    import socket
    import threading

    dropped = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, format, *args):
            pass

        def do_GET(self):
            path = folder / self.path.lstrip("/")
            if "/train-" in self.path and len(dropped) < drops:
                dropped.append(self.path)
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            super().do_GET()

    @contextlib.contextmanager
    def serving():
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/", dropped
        finally:
            server.shutdown()
            server.server_close()

    return serving()


def test_a_dropped_connection_is_read_again_and_the_run_trains_the_same_batches(
    tiny_base, demo_shards, tmp_path, monkeypatch, caplog
):
    from vago_lightning.data import datamodule

    monkeypatch.setattr(datamodule, "RETRY_BACKOFF", 0.05)
    monkeypatch.setattr("sys.argv", ["train.py"])
    trained = {}
    for name in ("local", "http"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        keys = tmp_path / name / "keys.txt"
        with _dropping_server(demo_shards, drops=1) as (url, dropped):
            where = url if name == "http" else str(demo_shards)
            extra = ["--trainer.max_steps=3", "--trainer.val_check_interval=3"]
            extra += ["--trainer.callbacks+=helpers.RecordKeys", f"--trainer.callbacks.out={keys}"]
            cli_main(["fit", *quiz_fit_args(tiny_base, where), *extra])
        trained[name] = keys.read_text()
    assert dropped and trained["http"] == trained["local"]
    assert f"{dropped[0].lstrip('/')}: reading it failed" in caplog.text and "trying again (1 of 4)" in caplog.text

    # A connection that keeps failing ends in one line after a few tries.

    with _dropping_server(demo_shards, drops=100) as (url, dropped):
        dm = _datamodule(url, tiny_base, corpora=["quiz"])
        with pytest.raises(DataError, match=r"train-\d+.tar: reading it failed 5 times .*run the same command"):
            next(iter(dm.train_dataloader()))
    assert len(dropped) == 5


# --- prepare ----------------------------------------------------------------------------------


def _small_corpus(demo_corpora, tmp_path, clips: int) -> Path:
    import shutil

    root, _ = demo_corpora
    corpus = tmp_path / "small"
    (corpus / "wavs").mkdir(parents=True)
    lines = (root / "quiz" / "metadata.csv").read_text(encoding="utf-8").splitlines()[: clips + 1]
    for line in lines[1:]:
        shutil.copy(root / "quiz" / line.split("|")[0], corpus / line.split("|")[0])
    (corpus / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return corpus


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_prepare_on_a_full_disk_keeps_the_earlier_output_and_rewrites_a_damaged_shard(
    demo_corpora, tmp_path, monkeypatch
):
    from vago_lightning.data.prepare import PrepareSettings, prepare

    corpus, out = _small_corpus(demo_corpora, tmp_path, 12), tmp_path / "data_shards"
    settings = PrepareSettings(shard_size=4, val_fraction=0.2)
    prepare({"quiz": corpus}, out, settings, workers=1, progress=False)
    before = _tree(out)

    # The input changes, and the rebuild finds the disk full half-way through a shard.
    metadata = corpus / "metadata.csv"
    metadata.write_text("".join(metadata.read_text(encoding="utf-8").splitlines(True)[:-1]), encoding="utf-8")
    write = files._write

    def full_disk(f, data):
        if Path(f.name).name == "train-000001.tar":
            write(f, bytes(memoryview(data)[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(f, data)

    monkeypatch.setattr(files, "_write", full_disk)
    with pytest.raises(DataError) as full:
        prepare({"quiz": corpus}, out, settings, workers=1, progress=False)
    message = str(full.value)
    assert message.startswith(f"{out}: the disk is full (") and "GB free" in message and "needs more than" in message
    # The earlier output is untouched; what was processed is kept aside for the rerun to go on from.
    after = _tree(out)
    assert {k: v for k, v in after.items() if not k.startswith(".resume-")} == before
    assert not list(out.glob(".tmp-*")) and any(k.startswith(".resume-quiz/") for k in after)
    monkeypatch.undo()
    _, rebuilt = prepare({"quiz": corpus}, out, settings, workers=1, progress=False)
    assert rebuilt == {"quiz": True}

    # A shard cut short after prepare is written again by the same command; a whole one is kept.
    _, rebuilt = prepare({"quiz": corpus}, out, settings, workers=1, progress=False)
    assert rebuilt == {"quiz": False}
    shard = out / "quiz" / "train-000000.tar"
    whole = shard.read_bytes()
    shard.write_bytes(whole[:1000])
    _, rebuilt = prepare({"quiz": corpus}, out, settings, workers=1, progress=False)
    assert rebuilt == {"quiz": True} and shard.read_bytes() == whole


def test_prepare_killed_half_way_goes_on_and_writes_what_an_uninterrupted_run_writes(
    demo_corpora, tmp_path, monkeypatch, caplog
):
    import vago_lightning.data.prepare as prep

    corpus = _small_corpus(demo_corpora, tmp_path, 12)
    settings = prep.PrepareSettings(shard_size=4, val_fraction=0.2)
    prep.prepare({"quiz": corpus}, tmp_path / "whole", settings, workers=1, progress=False)
    out = tmp_path / "data_shards"
    process, calls = prep._process, []

    def killed_at_the_seventh_clip(item):
        calls.append(item)
        if len(calls) == 7:
            raise KeyboardInterrupt("killed")
        return process(item)

    monkeypatch.setattr(prep, "_process", killed_at_the_seventh_clip)
    with pytest.raises(KeyboardInterrupt):  # clips go in batches: of 3 here, so two were done whole
        prep.prepare({"quiz": corpus}, out, settings, workers=1, progress=False, batch=3)
    calls.clear()
    monkeypatch.setattr(prep, "_process", lambda item: calls.append(item) or process(item))
    prep.prepare({"quiz": corpus}, out, settings, workers=1, progress=False)
    assert len(calls) == 6  # the six clips processed before the kill were not processed again
    assert "quiz: going on after an interrupted prepare: 6 clips were processed already" in caplog.text
    assert _tree(out / "quiz") == _tree(tmp_path / "whole" / "quiz") and not list(out.glob(".resume-*"))

    # A changed setting starts over, and says so.
    calls.clear()
    monkeypatch.setattr(prep, "_process", killed_at_the_seventh_clip)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare({"quiz": corpus}, out, replace_settings(settings, min_seconds=0.6), workers=1, progress=False)
    calls.clear()
    monkeypatch.setattr(prep, "_process", lambda item: calls.append(item) or process(item))
    prep.prepare({"quiz": corpus}, out, replace_settings(settings, min_seconds=0.7), workers=1, progress=False)
    assert "quiz: settings changed (min_seconds) since the interrupted prepare" in caplog.text and len(calls) == 12


def replace_settings(settings, **changes):
    from dataclasses import replace

    return replace(settings, **changes)


class SignalOneRank(L.Callback):
    """SIGTERM to rank 1's process alone, at step 3; each rank writes the steps it trained."""

    def __init__(self, out: str):
        self.out = out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        with open(Path(self.out) / f"rank{trainer.global_rank}.txt", "a") as f:
            f.write(f"{trainer.global_step}\n")
        if trainer.global_rank == 1 and trainer.global_step == 3:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_under_ddp_every_rank_stops_at_the_step_one_rank_was_signalled_at(tiny_base, demo_shards, tmp_path):
    from vago_lightning.data.datamodule import ShardDataModule
    from vago_lightning.model.module import XttsGPTModule
    from vago_lightning.training.checkpoints import RunCheckpoint

    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_steps=20,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[
            SignalOneRank(str(tmp_path)),
            RunCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=100, save_top_k=0),
        ],
        default_root_dir=tmp_path,
    )
    model = XttsGPTModule(base_model=str(tiny_base), lr=1e-4)
    data = ShardDataModule(shards_dir=str(demo_shards), base_model=str(tiny_base), corpora=["quiz"], num_workers=0)
    with pytest.raises(Exception, match="at step 3"):
        trainer.fit(model, data)
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["global_step"] == 3
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text().split() == ["1", "2", "3"]


class _FailingData(torch.utils.data.IterableDataset):
    def __iter__(self):
        raise DataError("http://127.0.0.1:1/quiz/train-000001.tar: reading it failed 5 times; check the server")
        yield


def test_an_error_raised_in_a_dataloader_worker_is_still_one_line():
    """PyTorch re-raises a worker's error with the worker's traceback in its message."""
    from vago_lightning.training.cli import _one_line

    with pytest.raises(DataError) as raised:
        next(iter(torch.utils.data.DataLoader(_FailingData(), batch_size=None, num_workers=1)))
    assert "Traceback" in str(raised.value)
    assert _one_line(raised.value) == (
        "http://127.0.0.1:1/quiz/train-000001.tar: reading it failed 5 times; check the server"
    )
