"""The tool verbs: flags from the function signatures, the forms users type, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vago_lightning import commands
from vago_lightning.__main__ import main
from vago_lightning.commands import normalize
from vago_lightning.training.cli import cli_main

from helpers import quiz_fit_args

REPO = Path(__file__).resolve().parent.parent


def test_flags_come_from_the_signatures_with_one_source_of_defaults():
    import inspect

    from vago_lightning.data.prepare import PrepareSettings

    defaults = {k: p.default for k, p in inspect.signature(commands.prepare).parameters.items()}
    settings = PrepareSettings()
    for key in ("language", "val_fraction", "seed", "min_seconds", "shard_size"):
        assert defaults[key] == getattr(settings, key)


def test_the_forms_users_type_are_normalized():
    assert normalize("tiny-base", ["--out", "x", "--gpt-layers", "3", "--overwrite"]) == [
        "--out",
        "x",
        "--gpt_layers",
        "3",
        "--overwrite",
        "true",
    ]
    assert normalize("tiny-base", ["--overwrite", "--out=x"]) == ["--overwrite", "true", "--out", "x"]
    got = normalize("prepare", ["--corpus", "quiz=a", "--base-model", "m", "--corpus", "interview=b"])
    assert got[:2] == ["--base_model", "m"] and got[2] == "--corpus"
    assert json.loads(got[3]) == {"quiz": "a", "interview": "b"}
    got = normalize("generate", ["--temperature", "0.5", "0.6", "--reference", "a.wav", "--reference", "b.wav"])
    assert json.loads(got[got.index("--temperature") + 1]) == ["0.5", "0.6"]
    assert json.loads(got[got.index("--reference") + 1]) == ["a.wav", "b.wav"]
    got = normalize("export", ["--speaker", "v=a.wav", "--speaker", "v=b.wav"])
    assert json.loads(got[1]) == {"v": ["a.wav", "b.wav"]}  # several references for one voice
    assert normalize("generate", ["--temperature", "[0.5, 0.7]"]) == ["--temperature", "[0.5, 0.7]"]


def test_prepare_takes_a_config_file(tmp_path, demo_corpora, capsys):
    root, _ = demo_corpora
    config = tmp_path / "prepare.yaml"
    config.write_text(
        f"corpus:\n  quiz: {root / 'quiz'}\nout: {tmp_path / 'shards'}\nquiet: true\nval_fraction: 0.05\nworkers: 1\n"
    )
    assert main(["prepare", "--config", str(config)]) == 0
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["settings"]["val_fraction"] == 0.05 and "quiz" in manifest["corpora"]


def test_typos_and_unknown_verbs_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["tiny-base", "--out", "x", "--gpt_layerz", "3"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean --gpt_layers?" in err
    assert main(["tiny-bse"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean tiny-base?" in err


def test_only_expected_bad_input_is_one_line_a_bug_keeps_its_traceback(monkeypatch):
    def broken(out: Path) -> None:
        raise RuntimeError("a bug, not bad input")

    monkeypatch.setitem(commands.VERBS, "tiny-base", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["tiny-base", "--out", "x"])


def test_the_version_is_stated_once_printed_and_in_the_changelog(capsys):
    import re

    from packaging.version import Version

    import vago_lightning

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"vago_lightning {vago_lightning.__version__}\n"
    assert main(["--versoin"]) == 2 and "did you mean --version?" in capsys.readouterr().err
    setup = (REPO / "setup.cfg").read_text(encoding="utf-8")
    assert re.search(r"^version = attr: vago_lightning.__version__$", setup, re.M)  # one source
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert changelog.splitlines()[0] == "# Changelog" and "\n## [Unreleased]\n" in changelog
    released = [Version(v) for v in re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d\d-\d\d$", changelog, re.M)]
    assert released == sorted(released, reverse=True) and len(set(released)) == len(released)
    assert Version(vago_lightning.__version__) >= released[0]  # the package says the newest, or the next


def test_a_wrong_language_is_one_line_everywhere(tiny_base, demo_corpora, demo_shards, run_dir, capsys):
    out = run_dir / "shards"
    quiz = demo_corpora[0] / "quiz"
    for base in ([], ["--base_model", str(tiny_base)]):  # with a base model or without
        assert main(["prepare", "--corpus", f"quiz={quiz}", "--out", str(out), "--language", "hun", *base]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--language 'hun'" in err and "did you mean hu?" in err and "zh-cn" in err
        assert not out.exists()  # no empty output folder
    assert main(["prepare", "--corpus", f"quiz={quiz}", "--out", str(out), "--language", "xx"]) == 2
    assert "'xx': not a language code XTTS-v2 knows" in capsys.readouterr().err
    wav = str(quiz / "wavs" / "quiz_0001.wav")
    args = ["--model", str(tiny_base), "--reference", wav, "--out", str(run_dir / "samples"), "--language", "hun"]
    assert main(["generate", *args]) == 2
    assert "--language 'hun'" in capsys.readouterr().err and not (run_dir / "samples").exists()
    with pytest.raises(SystemExit, match=r"model.language 'magyar'.*did you mean hu\?.*en es fr"):
        cli_main(["fit", *quiz_fit_args(tiny_base, demo_shards, "--model.language=magyar")])
