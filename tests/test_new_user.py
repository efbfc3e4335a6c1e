"""What a new user hit (issue 11): each case failed before its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from vago_lightning.__main__ import main
from vago_lightning.data.prepare import PrepareSettings, prepare
from vago_lightning.training.cli import cli_main

from helpers import quiz_fit_args as _quiz_args

REPO = Path(__file__).resolve().parent.parent
SR = 22050


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["train.py"])
    return tmp_path


def _scalars(logdir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


# --- checkpoints ------------------------------------------------------------------------------


def test_best_ckpt_includes_the_final_validation_and_last_ckpt_is_the_final_state(tiny_base, demo_shards, run_dir):
    cli = cli_main(
        [
            "fit",
            *_quiz_args(tiny_base, demo_shards, "--trainer.max_steps=9", "--trainer.val_check_interval=3"),
        ]
    )
    folder = run_dir / "checkpoints" / "demo-quiz"
    vals = [v for s, v in _scalars(run_dir / "lightning_logs" / "demo-quiz", "val/loss") if s > 0]  # 3, 6, 9
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
            *_quiz_args(tiny_base, demo_shards, "--trainer.max_steps=4", "--trainer.val_check_interval=4"),
        ]
    )
    assert (run_dir / "checkpoints" / "demo-quiz" / "best.ckpt").is_file()
    out = run_dir / "exported"
    assert main(["export", "--ckpt", "checkpoints/demo-quiz/best.ckpt", "--out", str(out)]) == 0


def test_rerunning_a_finished_run_says_it_is_complete(tiny_base, demo_shards, run_dir, caplog):
    args = _quiz_args(tiny_base, demo_shards, "--trainer.max_steps=4", "--trainer.val_check_interval=4")
    cli_main(["fit", *args])
    assert cli_main(["fit", *args]) is None  # nothing trained
    assert "is complete: it ended at step 4 (max_steps 4)" in caplog.text and "--fresh true" in caplog.text
    cli = cli_main(["fit", *args[:-2], "--trainer.max_steps=6", "--trainer.val_check_interval=3"])
    assert cli.trainer.global_step == 6  # raising max_steps goes on


def test_validate_writes_beside_the_run_not_into_its_logs(tiny_base, demo_shards, run_dir):
    args = _quiz_args(tiny_base, demo_shards, "--trainer.max_steps=4", "--trainer.val_check_interval=4")
    cli_main(["fit", *args])
    logs = run_dir / "lightning_logs" / "demo-quiz"
    config = (logs / "config.yaml").read_text()
    before = _scalars(logs, "val/loss")
    cli_main(["validate", *args, "--ckpt_path=checkpoints/demo-quiz/best.ckpt"])
    assert (logs / "config.yaml").read_text() == config and _scalars(logs, "val/loss") == before
    (own,) = list(logs.glob("validate-*"))
    assert (own / "config.yaml").is_file() and _scalars(own, "val/loss")


def test_a_corrupt_checkpoint_is_moved_aside_once(tiny_base, demo_shards, run_dir, caplog):
    args = _quiz_args(tiny_base, demo_shards, "--trainer.val_check_interval=4")
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


def test_a_failed_start_leaves_no_stray_folders(tiny_base, run_dir):
    with pytest.raises(SystemExit, match="manifest.json: not found"):
        cli_main(["fit", *_quiz_args(tiny_base, run_dir / "no-shards", "--trainer.max_steps=2")])
    assert not (run_dir / "lightning_logs").exists() and not (run_dir / "checkpoints").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a CUDA GPU")
def test_the_gpu_profile_on_a_machine_without_a_gpu_is_one_line(tiny_base, demo_shards, run_dir):
    # Lightning's own answer was a traceback ending in "No supported gpu backend found!".
    profile = str(Path(__file__).resolve().parent.parent / "configs" / "rtx4070-12gb.yaml")
    args = [*_quiz_args(tiny_base, demo_shards), "--config", profile, "--trainer.max_steps=2"]
    with pytest.raises(SystemExit, match="torch sees no CUDA GPU .*--trainer.accelerator cpu"):
        cli_main(["fit", *args])
    assert not (run_dir / "lightning_logs").exists() and not (run_dir / "checkpoints").exists()


def test_no_base_model_says_where_the_release_comes_from(demo_shards, run_dir):
    with pytest.raises(SystemExit) as err:
        cli_main(["fit", *_quiz_args(run_dir / "models" / "xtts-v2", demo_shards)])
    message = str(err.value)
    assert "coqui/XTTS-v2" in message and "config.json model.pth dvae.pth" in message
    assert "tiny-base" in message and "to try the pipeline" in message


def test_plain_progress_lines_without_a_terminal(tiny_base, demo_shards, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "fit",
            *_quiz_args(tiny_base, demo_shards, "--trainer.max_steps=20", "--trainer.val_check_interval=10"),
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


# --- data -------------------------------------------------------------------------------------


def _ljspeech(root: Path, lines: list[str], demo_root: Path):
    (root / "wavs").mkdir(parents=True)
    wav, _ = sf.read(demo_root / "quiz" / "wavs" / "quiz_0001.wav", dtype="float32")
    for line in lines:
        sf.write(root / "wavs" / f"{line.split('|')[0]}.wav", wav, SR)
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_quotes_in_metadata_are_text_and_every_line_is_one_input(tmp_path, demo_corpora, tiny_base):
    lines = [
        'lj001|"Jó estét" mondta a műsorvezető.|"Jó estét" mondta a műsorvezető.',
        "lj002|Tudja, ez egy jó kérdés.|Tudja, ez egy jó kérdés.",
        'lj003|"Kezdődik a játék!|"Kezdődik a játék!',
        "lj004|Melyik folyó szeli ketté Budapestet?|Melyik folyó szeli ketté Budapestet?",
        "lj048|Az utolsó sor.|Az utolsó sor.|extra",
    ]
    root = tmp_path / "lj"
    _ljspeech(root, lines, demo_corpora[0])
    prepare({"lj": root}, tmp_path / "out", PrepareSettings(val_fraction=0.0), tiny_base, progress=False)
    entry = json.loads((tmp_path / "out" / "lj" / "corpus.json").read_text())
    assert entry["inputs"] == 5 and entry["splits"]["train"]["samples"] == 4 and entry["rejected_total"] == 1
    rejected = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert rejected[0]["reason"] == "malformed_line" and rejected[0]["id"] == "lj048"
    assert "got 4 field(s)" in rejected[0]["detail"] and rejected[0]["line"] == 5


def test_unknown_tokens_names_the_characters(tmp_path, demo_corpora, tiny_base):
    root = tmp_path / "lj"
    _ljspeech(root, ["snow|Ez ☃ egy hóember ♫.|Ez ☃ egy hóember ♫."], demo_corpora[0])
    prepare({"lj": root}, tmp_path / "out", PrepareSettings(), tiny_base, progress=False)
    (row,) = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert row["reason"] == "unknown_tokens" and "'☃'" in row["detail"] and "'♫'" in row["detail"]


def _srt_time(t: float) -> str:
    return f"00:00:{int(t):02d},{int(round(t * 1000)) % 1000:03d}"


def test_a_bad_subtitle_segment_is_rejected_alone_and_every_segment_is_accounted_for(tmp_path, demo_corpora, tiny_base):
    root = tmp_path / "talk"
    root.mkdir()
    quiz = demo_corpora[0] / "quiz"
    rows = (quiz / "metadata.csv").read_text(encoding="utf-8").splitlines()[1:]
    parts, segments, t = [], [], 0.0
    for i, row in enumerate(rows[:3]):
        audio_file, text, _ = row.split("|")
        wav, _ = sf.read(quiz / audio_file, dtype="float32")
        if i == 1:  # a short segment the vocab cannot encode, right before a good sentence
            segments.append((t, t + 0.6, "Kultúra. 🎭"))
            parts.append(wav[: int(0.6 * SR)])
            t += 0.6
        segments.append((t, t + len(wav) / SR, text))
        parts.append(wav)
        t += len(wav) / SR
        parts.append(np.zeros(int(0.8 * SR), dtype=np.float32))
        t += 0.8
    sf.write(root / "talk.wav", np.concatenate(parts), SR)
    srt = [f"{n}\n{_srt_time(a)} --> {_srt_time(b)}\n{text}\n" for n, (a, b, text) in enumerate(segments, 1)]
    (root / "talk.srt").write_text("\n".join(srt), encoding="utf-8")
    prepare({"talk": root}, tmp_path / "out", PrepareSettings(val_fraction=0.0), tiny_base, progress=False)
    entry = json.loads((tmp_path / "out" / "talk" / "corpus.json").read_text())
    (bad,) = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert bad["reason"] == "unknown_tokens" and bad["segment"] == 2 and bad["line"] == 6  # its timing line
    assert entry["inputs"] == 4 == entry["splits"]["train"]["inputs"] + entry["rejected_total"]
    import tarfile

    with tarfile.open(tmp_path / "out" / "talk" / "train-000000.tar") as tar:
        metas = [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
    texts = " ".join(m["text"] for m in metas)
    assert rows[1].split("|")[1] in texts and "Kultúra" not in texts  # the good sentence is kept
    assert sorted(n for m in metas for n in m["segments"]) == [1, 3, 4]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "Inputs 4 (metadata lines and subtitle segments)" in summary


def test_a_truncated_wav_is_rejected(tmp_path, demo_corpora):
    root = tmp_path / "lj"
    _ljspeech(root, ["cut|Jó estét kívánok, kedves nézők!|Jó estét kívánok, kedves nézők!"], demo_corpora[0])
    data = (root / "wavs" / "cut.wav").read_bytes()
    (root / "wavs" / "cut.wav").write_bytes(data[: len(data) // 2])
    prepare({"lj": root}, tmp_path / "out", PrepareSettings(), progress=False)
    (row,) = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert row["reason"] == "truncated" and "the header says" in row["detail"]


def test_the_summary_reads_true(tmp_path, demo_corpora):
    prepare({"quiz": demo_corpora[0] / "quiz"}, tmp_path / "out", PrepareSettings(), progress=False)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "⚠️ total duration 5.4 min (the seed recommends over 30 minutes)" in summary
    assert "1 corpus, 4 categories" in summary or "1 corpus, 3 categories" in summary
    assert "⚠️ few validation clips: quiz has 2" in summary and "--val_fraction 0.07" in summary
