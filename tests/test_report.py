"""The fidelity report: its figures are the event files' own, and the page renders."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from vago_lightning.__main__ import main
from vago_lightning.inference.report import baseline_of, read_run
from vago_lightning.training.cli import cli_main

from helpers import configs, quiz_fit_args

REPO = Path(__file__).resolve().parent.parent


def _configs(*names):
    return [arg for name in names for arg in ("--config", str(REPO / name))]


def _scalars(folder: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def test_the_report_of_two_stages_matches_the_event_files(tiny_base, demo_shards, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["train.py"])
    common = [f"--model.base_model={tiny_base}", f"--data.shards_dir={demo_shards}", "--data.num_workers=0"]
    cli_main(
        [
            "fit",
            *_configs("finetune.yaml", "configs/demo.yaml", "configs/demo-quiz.yaml"),
            *common,
            "--trainer.max_steps=8",
            "--trainer.val_check_interval=4",
        ]
    )
    # Stage two from stage one's best, on both corpora; a warning sign that fires (a mark on the axis).
    cli_main(
        [
            "fit",
            *_configs("finetune.yaml", "configs/demo.yaml"),
            *common,
            "--trainer.max_steps=9",
            "--trainer.val_check_interval=3",
            "--model.init_from=checkpoints/demo-quiz/best.ckpt",
            "--warning_signs.overfit_ratio=0.01",
        ]
    )
    assert main(["report", "--run", "demo-combined"]) == 0  # the baseline comes from model.init_from
    report = json.loads((tmp_path / "reports" / "demo-combined" / "report.json").read_text())
    run = _scalars(tmp_path / "lightning_logs" / "demo-combined")
    stage_one = _scalars(tmp_path / "lightning_logs" / "demo-quiz")
    assert report["baseline"] == "demo-quiz"

    # The starting point: stage one's best weights, validated on both corpora at step 0.
    assert run["val/starting_point"] == {0: 1.0} and set(run["val/interview/loss"]) == {0, 3, 6, 9}
    best = min((s for s in run["val/loss"] if s), key=lambda s: run["val/loss"][s])
    assert report["best_step"] == best
    rows = {(r["corpus"], r["measure"]): r for r in report["corpora"]}
    for corpus in ("quiz", "interview"):
        for measure in ("loss", "loss_text_ce", "loss_mel_ce"):
            row, tag = rows[(corpus, measure)], f"val/{corpus}/{measure}"
            assert row["before"] == pytest.approx(run[tag][0]) and row["after"] == pytest.approx(run[tag][best])
            assert row["change_percent"] == pytest.approx(100 * (run[tag][best] / run[tag][0] - 1), abs=0.01)
    # Stage one validated its best weights on the quiz corpus too: the same figure as stage two's start.
    one_best = min(stage_one["val/loss"], key=lambda s: stage_one["val/loss"][s])
    assert stage_one["val/quiz/loss"][one_best] == pytest.approx(run["val/quiz/loss"][0], rel=1e-4)

    verdict = report["verdict"]
    quiz, interview = rows[("quiz", "loss")]["change_percent"], rows[("interview", "loss")]["change_percent"]
    assert verdict["kept_corpora"] == ["quiz"] and verdict["ok"] == (quiz <= 5 and interview < 0)
    assert any(e["event"] == "warning_signs/overfit" and e["run"] == "demo-combined" for e in report["events"])
    measured = {s["tag"]: s["measured"] for s in report["seed_expected"]}
    assert measured["val/loss"] == pytest.approx(run["val/loss"][best])

    page = tmp_path / "reports" / "demo-combined" / "index.html"
    text = page.read_text()
    assert text.count('src="data:image/png;base64,') == 3 and "expected for the real xtts-v2 weights" in text.lower()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (make test installs it)")
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", "--window-size=1200,2600", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file() and shot.stat().st_size > 50_000  # a page with its curves, not a blank one
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert 'id="verdict"' in dom and dom.count("<img") == 3


def _two_stages(tiny_base, shards, *stage_two: str) -> list[str]:
    """Stage one (4 steps) trained; returns stage two's arguments (from stage one's best, both corpora)."""
    cli_main(["fit", *quiz_fit_args(tiny_base, shards, "--trainer.max_steps=4", "--trainer.val_check_interval=2")])
    return [
        *configs("finetune.yaml", "configs/demo.yaml"),
        f"--model.base_model={tiny_base}",
        f"--data.shards_dir={shards}",
        "--data.num_workers=0",
        "--trainer.val_check_interval=2",
        *stage_two,
    ]


def test_a_resumed_run_keeps_its_origin_and_report_baseline(tiny_base, demo_shards, run_dir):
    both = _two_stages(tiny_base, demo_shards)
    cli_main(["fit", *both, "--trainer.max_steps=2"])
    cli = cli_main(["fit", *both, "--trainer.max_steps=4"])  # the same command, further: a resume
    assert cli.trainer.global_step == 4
    config = yaml.safe_load((run_dir / "lightning_logs" / "demo-combined" / "config.yaml").read_text())
    assert config["model"]["init_from"] == "checkpoints/demo-quiz/best.ckpt"
    assert baseline_of(read_run("demo-combined")) == "demo-quiz"
