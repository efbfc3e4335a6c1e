"""The command line: shipped YAMLs validate, overrides work, and a real two-stage run end to end."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
import yaml

from vago_lightning.training.cli import cli_main

from helpers import quiz_fit_args

REPO = Path(__file__).resolve().parent.parent
CONFIG_SETS = {
    "finetune": ["finetune.yaml"],
    "demo": ["finetune.yaml", "configs/demo.yaml"],
    "demo-quiz": ["finetune.yaml", "configs/demo.yaml", "configs/demo-quiz.yaml"],
    "rtx4070-12gb": ["finetune.yaml", "configs/rtx4070-12gb.yaml"],
    "rtx4060-8gb": ["finetune.yaml", "configs/rtx4060-8gb.yaml"],
}


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    """The CLI is driven through args=[...]; pytest's own argv must not reach it."""
    monkeypatch.setattr("sys.argv", ["train.py"])


def _configs(names):
    return [arg for name in names for arg in ("--config", str(REPO / name))]


def _print_config(args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        cli_main(["fit", *args, "--print_config"])
    assert exit_.value.code in (0, None)
    return yaml.safe_load(out.getvalue())


@pytest.mark.parametrize("name", CONFIG_SETS)
def test_every_shipped_yaml_validates_against_the_cli(name):
    config = _print_config(_configs(CONFIG_SETS[name]))
    assert config["model"]["language"] == "hu" and config["data"]["batch_size"] == 3
    if name == "finetune":  # the seed's run
        assert config["model"]["lr"] == 2e-6 and config["trainer"]["max_epochs"] == 30
        assert config["trainer"]["val_check_interval"] == 100 and config["data"]["corpora"] == [
            "quiz",
            "interview",
        ]
        assert config["model"]["init_from"] == "checkpoints/milliomos/best.ckpt"


@pytest.mark.parametrize("path", sorted({p for names in CONFIG_SETS.values() for p in names}))
def test_every_key_in_a_shipped_yaml_has_a_comment(path):
    for number, line in enumerate((REPO / path).read_text().splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            assert " # " in line, f"{path}:{number} has no comment: {line!r}"


def test_overrides_reach_the_config():
    config = _print_config(
        _configs(CONFIG_SETS["finetune"])
        + ["--model.lr", "1e-6", "--trainer.max_epochs", "50", "--data.batch_size", "2", "--run", "other"]
    )
    assert config["model"]["lr"] == 1e-6 and config["trainer"]["max_epochs"] == 50
    assert config["data"]["batch_size"] == 2 and config["run"] == "other"


def test_linked_settings_reach_the_datamodule(tiny_base, demo_shards, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = cli_main(
        [
            *_configs(CONFIG_SETS["demo-quiz"]),
            f"--model.base_model={tiny_base}",
            f"--data.shards_dir={demo_shards}",
        ],
        run=False,
    )
    assert cli.datamodule.hparams.base_model == str(tiny_base) == cli.model.hparams.base_model
    assert cli.datamodule.hparams.language == "hu"
    dirs = {
        Path(cb.dirpath).relative_to(tmp_path) if Path(cb.dirpath).is_absolute() else Path(cb.dirpath)
        for cb in cli.trainer.checkpoint_callbacks
    }
    assert dirs == {Path("checkpoints/demo-quiz")}
    assert Path(cli.trainer.logger.log_dir) == Path("lightning_logs/demo-quiz")


def _scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_two_stage_run_end_to_end(tiny_base, demo_shards, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = [
        f"--model.base_model={tiny_base}",
        f"--data.shards_dir={demo_shards}",
        "--data.num_workers=1",
        "--trainer.log_every_n_steps=2",
    ]
    # Stage one: quiz only, from the base.
    cli_main(
        [
            "fit",
            *_configs(CONFIG_SETS["demo-quiz"]),
            *common,
            "--trainer.max_steps=24",
            "--trainer.val_check_interval=8",
        ]
    )
    stage1 = tmp_path / "checkpoints" / "demo-quiz"
    assert (stage1 / "best.ckpt").is_file() and (stage1 / "last.ckpt").is_file()
    scalars = _scalars(tmp_path / "lightning_logs" / "demo-quiz")
    for tag in (
        "train/loss",
        "train/loss_text_ce",
        "train/loss_mel_ce",
        "val/loss",
        "val/loss_mel_ce",
        "val/quiz/loss_mel_ce",
        "val/quiz/loss_text_ce",
        "train/grad_norm",
        "lr-AdamW/pg1",
        "train/samples_per_sec",
    ):
        assert tag in scalars, tag
    train = [v for _, v in scalars["train/loss"]]
    assert all(torch.isfinite(torch.tensor(train))) and train[-1] < train[0] - 0.5
    val = [v for _, v in scalars["val/loss"]]
    assert len(val) == 1 + 3 and val[-1] < val[0]  # the starting point (step 0), then 3 validations
    assert (tmp_path / "lightning_logs" / "demo-quiz" / "config.yaml").is_file()
    best = torch.load(stage1 / "best.ckpt", weights_only=False)
    assert {k.split(".")[0] for k in best["state_dict"]} == {"gpt"}  # no frozen DVAE in checkpoints

    # Stage two: both corpora, from stage one's best, a lower LR.
    cli = cli_main(
        [
            "fit",
            *_configs(CONFIG_SETS["demo"]),
            *common,
            "--trainer.max_steps=12",
            "--trainer.val_check_interval=6",
            f"--model.init_from={stage1 / 'best.ckpt'}",
        ]
    )
    assert cli.model.init_kind == "lightning" and cli.trainer.global_step == 12
    scalars = _scalars(tmp_path / "lightning_logs" / "demo-combined")
    assert "val/quiz/loss_mel_ce" in scalars and "val/interview/loss_mel_ce" in scalars
    assert scalars["lr-AdamW/pg1"][0][1] == pytest.approx(1e-4)
    assert (tmp_path / "checkpoints" / "demo-combined" / "best.ckpt").is_file()

    # The same command again resumes the run (weights, optimizer, step), it does not start over.
    cli = cli_main(
        [
            "fit",
            *_configs(CONFIG_SETS["demo-quiz"]),
            *common,
            "--trainer.max_steps=30",
            "--trainer.val_check_interval=8",
        ]
    )
    assert cli.trainer.global_step == 30
    assert torch.load(stage1 / "last.ckpt", weights_only=False)["global_step"] == 30


def test_bad_paths_are_one_line_errors(tiny_base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"error: .*manifest.json: not found"):
        cli_main(
            [
                "fit",
                *_configs(CONFIG_SETS["demo-quiz"]),
                f"--model.base_model={tiny_base}",
                f"--data.shards_dir={tmp_path / 'none'}",
            ]
        )
    with pytest.raises(SystemExit, match=r"error: .*tiny-base"):
        cli_main(["fit", *_configs(CONFIG_SETS["demo-quiz"]), f"--model.base_model={tmp_path / 'none'}"])


# --- one entry point ---------------------------------------------------------------------------


def test_module_fit_and_train_py_are_the_same_command(capsys):
    from vago_lightning.__main__ import main

    args = ["fit", *_configs(CONFIG_SETS["demo"]), "--model.lr", "3e-5", "--print_config"]
    with pytest.raises(SystemExit):
        cli_main(args)
    via_train_py = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(args)
    via_module = capsys.readouterr().out
    assert via_module == via_train_py and yaml.safe_load(via_module)["model"]["lr"] == 3e-5


def test_the_training_path_does_not_import_preprocessing():
    import subprocess
    import sys

    code = (
        "import sys, vago_lightning.training.cli; "
        "print(sorted(m for m in sys.modules if m.startswith('vago_lightning.data.') or "
        "m.startswith('vago_lightning.demo')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = eval(out)  # noqa: S307 - our own printout
    assert "vago_lightning.data.prepare" not in loaded and "vago_lightning.data.corpus" not in loaded
    assert not any(m.startswith("vago_lightning.demo") for m in loaded)
    assert "vago_lightning.data.manifest" in loaded and "vago_lightning.data.datamodule" in loaded


def test_a_typo_in_a_key_is_one_line_with_a_suggestion(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["fit", *_configs(CONFIG_SETS["demo"]), "--model.lrr", "1e-6"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:") and "did you mean --model.lr?" in err


def test_a_typo_in_a_yaml_key_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  lrr: 1.0e-6\n")
    with pytest.raises(SystemExit):
        cli_main(["fit", *_configs(CONFIG_SETS["demo"]), "--config", str(bad)])
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:") and "lrr" in err


# --- a start that fails leaves nothing behind ------------------------------------------------


def test_a_failed_start_leaves_no_stray_folders(tiny_base, run_dir):
    with pytest.raises(SystemExit, match="manifest.json: not found"):
        cli_main(["fit", *quiz_fit_args(tiny_base, run_dir / "no-shards", "--trainer.max_steps=2")])
    assert not (run_dir / "lightning_logs").exists() and not (run_dir / "checkpoints").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a CUDA GPU")
def test_the_gpu_profile_on_a_machine_without_a_gpu_is_one_line(tiny_base, demo_shards, run_dir):
    # Lightning's own answer was a traceback ending in "No supported gpu backend found!".
    profile = str(Path(__file__).resolve().parent.parent / "configs" / "rtx4070-12gb.yaml")
    args = [*quiz_fit_args(tiny_base, demo_shards), "--config", profile, "--trainer.max_steps=2"]
    with pytest.raises(SystemExit, match="torch sees no CUDA GPU .*--trainer.accelerator cpu"):
        cli_main(["fit", *args])
    assert not (run_dir / "lightning_logs").exists() and not (run_dir / "checkpoints").exists()
