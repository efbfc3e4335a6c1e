"""What a new user hit, round two (issue 22): each case failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from vago_lightning.__main__ import main
from vago_lightning.data.corpus import shard_key
from vago_lightning.data.normalise import join_digit_groups, spoken_form
from vago_lightning.data.prepare import PrepareSettings, prepare
from vago_lightning.inference.report import baseline_of, read_run
from vago_lightning.training.cli import cli_main

from helpers import configs, quiz_fit_args

SR = 22050


def _coqui_corpus(root: Path, rows: list[tuple[str, str]], demo_root: Path) -> None:
    """A coqui-format corpus whose every row is the demo's first quiz clip under another file name."""
    (root / "wavs").mkdir(parents=True)
    wav, _ = sf.read(demo_root / "quiz" / "wavs" / "quiz_0001.wav", dtype="float32")
    for name, _ in rows:
        sf.write(root / "wavs" / name, wav, SR)
    lines = ["audio_file|text|speaker_name", *(f"wavs/{name}|{text}|host" for name, text in rows)]
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _rejected(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]


# --- 1. keys ------------------------------------------------------------------------------------


def test_distinct_hungarian_ids_get_distinct_keys_without_dots():
    ids = ["ő_ű", "á_é", "kérdés 01", "kérdés_01", "kör_01", "kér_01", "a.b", "a_b", "a_b-0123abcd", "plain_01"]
    keys = [shard_key(i) for i in ids]
    assert len(set(keys)) == len(ids)
    assert all(k.replace("_", "").replace("-", "").isalnum() and k.isascii() for k in keys)
    assert shard_key("plain_01") == "plain_01" and shard_key("kör_01").startswith("kor_01-")
    assert shard_key("kör_01") == shard_key("kör_01")  # stable across runs


def test_accented_file_names_are_not_duplicates(tmp_path, demo_corpora, capsys):
    rows = [("ő_ű.wav", "Jó estét!"), ("á_é.wav", "Jó napot!"), ("kérdés 01.wav", "Ki az?")]
    rows += [("kérdés_01.wav", "Mi az?"), ("kör_01.wav", "Egy kör."), ("kér_01.wav", "Egy kérés.")]
    root = tmp_path / "hu"
    _coqui_corpus(root, [*rows, ("kör_01.wav", "Megint.")], demo_corpora[0])  # the last: a real duplicate
    out = tmp_path / "out"
    prepare({"hu": root}, out, PrepareSettings(val_fraction=0.0, speaker_check=False), progress=True)
    assert "7/7" in capsys.readouterr().out  # the progress bar ends at n/n (an expectation of the issue)
    (dup,) = _rejected(out)  # only the real duplicate: the same id twice
    assert dup["reason"] == "duplicate_id" and dup["id"] == "kör_01" and dup["line"] == 8
    entry = json.loads((out / "hu" / "corpus.json").read_text())
    assert entry["splits"]["train"]["samples"] == 6
    assert "- ⚠️ 1 input rejected: 1 duplicate_id (rejected.jsonl" in (out / "summary.md").read_text(encoding="utf-8")


# --- 2, 3. a resumed run and validate ---------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["train.py"])
    return tmp_path


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


def _scalars(logdir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


def test_validate_checks_the_runs_best_ckpt_and_says_which(tiny_base, demo_shards, run_dir, caplog):
    args = quiz_fit_args(tiny_base, demo_shards, "--trainer.max_steps=4", "--trainer.val_check_interval=2")
    cli_main(["fit", *args])
    best_step = torch.load(run_dir / "checkpoints" / "demo-quiz" / "best.ckpt", weights_only=False)["global_step"]
    logs = run_dir / "lightning_logs" / "demo-quiz"
    expected = dict(_scalars(logs, "val/loss"))[best_step]
    cli_main(["validate", *args])  # the stage's command with fit replaced by validate
    assert f"validate: the weights of checkpoints/demo-quiz/best.ckpt (step {best_step})" in caplog.text
    (own,) = list(logs.glob("validate-*"))
    assert _scalars(own, "val/loss") == [(best_step, pytest.approx(expected, rel=1e-4))]


# --- 7. one step numbering ----------------------------------------------------------------------


def test_console_tensorboard_checkpoints_and_report_number_steps_alike(tiny_base, demo_shards, run_dir, capsys, caplog):
    args = ["--trainer.max_steps=4", "--trainer.val_check_interval=2", "--trainer.log_every_n_steps=2"]
    cli_main(["fit", *quiz_fit_args(tiny_base, demo_shards, *args)])
    console = capsys.readouterr().out
    assert "validation at step 2 |" in console and "validation at step 4 |" in console
    logs = run_dir / "lightning_logs" / "demo-quiz"
    assert [s for s, _ in _scalars(logs, "val/loss")] == [0, 2, 4]  # 0: the starting point
    assert [s for s, _ in _scalars(logs, "train/loss")] == [2, 4]
    best = torch.load(run_dir / "checkpoints" / "demo-quiz" / "best.ckpt", weights_only=False)["global_step"]
    assert read_run("demo-quiz").best_step == best
    # The end of fit says where the best is (an expectation of the issue).
    value = min(v for s, v in _scalars(logs, "val/loss") if s)
    assert f"fit ended at step 4; the best is step {best}, val/loss {value:.4f}: checkpoints/demo-quiz/best.ckpt" in (
        caplog.text
    )


# --- 4, 5. subtitle timing ----------------------------------------------------------------------


def _srt_time(t: float) -> str:
    return f"00:{int(t) // 60:02d}:{int(t) % 60:02d},{int(round(t * 1000)) % 1000:03d}"


def test_subtitles_with_impossible_times_are_bad_timing(tmp_path, demo_corpora):
    quiz = demo_corpora[0] / "quiz"
    rows = (quiz / "metadata.csv").read_text(encoding="utf-8").splitlines()[1:4]
    parts, segments, t = [], [], 0.0
    for row in rows:
        audio_file, text, _ = row.split("|")
        wav, _ = sf.read(quiz / audio_file, dtype="float32")
        segments.append((t, t + len(wav) / SR, text))
        parts.append(np.concatenate([wav, np.zeros(int(0.8 * SR), dtype=np.float32)]))
        t += len(wav) / SR + 0.8
    root = tmp_path / "talk"
    root.mkdir()
    sf.write(root / "talk.wav", np.concatenate(parts), SR)
    a, b, text = segments[1]
    segments[1] = (b, a, text)  # ends before it starts
    segments.append((t - 0.5, t + 3.0, "Ez már a felvétel vége után hangzik el."))  # past the end of the audio
    srt = [f"{n}\n{_srt_time(a)} --> {_srt_time(b)}\n{text}\n" for n, (a, b, text) in enumerate(segments, 1)]
    (root / "talk.srt").write_text("\n".join(srt), encoding="utf-8")
    out = tmp_path / "out"
    prepare({"talk": root}, out, PrepareSettings(val_fraction=0.0, speaker_check=False), progress=False)
    bad = {r["segment"]: r for r in _rejected(out)}
    assert sorted(bad) == [2, 4] and {r["reason"] for r in bad.values()} == {"bad_timing"}
    assert bad[2]["line"] == 6 and "ends before it starts" in bad[2]["detail"]
    assert bad[4]["line"] == 14 and "runs past the end of the audio" in bad[4]["detail"]
    import tarfile

    with tarfile.open(out / "talk" / "train-000000.tar") as tar:
        metas = [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
    assert sorted(n for m in metas for n in m["segments"]) == [1, 3]
    for m in metas:  # start, end and duration agree
        assert m["end"] - m["start"] == pytest.approx(m["duration"], abs=0.01)


# --- 6. a wrong language ------------------------------------------------------------------------


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


# --- 8. no similarity without speech ------------------------------------------------------------


def test_generate_shows_no_similarity_for_a_sample_without_speech(tiny_base, demo_corpora, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("Jó estét kívánok!\n", encoding="utf-8")
    wav = str(demo_corpora[0] / "quiz" / "wavs" / "quiz_0001.wav")
    out = tmp_path / "samples"
    args = ["--model", str(tiny_base), "--reference", wav, "--texts", str(texts), "--out", str(out)]
    assert main(["generate", *args, "--temperature", "0.65", "--max-new-tokens", "20"]) == 0
    (sample,) = json.loads((out / "index.json").read_text())["samples"]
    assert "no_speech" in sample["flags"]  # the tiny random model speaks noise
    assert sample["speaker_similarity"] is None
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.endswith("]")]
    assert "similarity –," in line and "no_speech" in line


# --- 9. text normalisation ----------------------------------------------------------------------


def test_hungarian_numbers_in_groups_are_one_number():
    forms = {
        "100 000 Ft": "százezer ft",
        "100.000 Ft": "százezer ft",
        "100\u00a0000 Ft": "százezer ft",  # a no-break space, as word processors write it
        "100\u202f000 Ft": "százezer ft",  # a narrow no-break space
        "1 234 567 néző": "egymillió-kétszázharmincnégyezer-ötszázhatvanhét néző",
        "A 3. kérdés 100 000 Ft-ért, dr. Kovács!": "a harmadik kérdés százezer ft-ért, doktor kovács!",
        "12,5 százalék": "tizenkettő egész öt tized százalék",  # a decimal comma stays one
        "3 kérdés 100 pontért": "három kérdés száz pontért",  # not groups of three: apart
    }
    for written, spoken in forms.items():
        assert spoken_form(join_digit_groups(written), "hu") == spoken, written


def test_prepare_lists_the_lines_its_text_normalisation_changed(tmp_path, demo_corpora):
    rows = [("q1.wav", "A 3. kérdés 100 000 Ft-ért, dr. Kovács!"), ("q2.wav", "Jó estét, kedves nézők!")]
    root = tmp_path / "hu"
    _coqui_corpus(root, rows, demo_corpora[0])
    out = tmp_path / "out"
    prepare({"hu": root}, out, PrepareSettings(val_fraction=0.0, speaker_check=False), progress=False)
    (row,) = [json.loads(x) for x in (out / "normalised.jsonl").read_text(encoding="utf-8").splitlines()]
    assert row["original"] == rows[0][1] and row["spoken"] == "a harmadik kérdés százezer ft-ért, doktor kovács!"
    assert row["line"] == 2 and row["source"] == str(root / "metadata.csv") and row["id"] == "q1"
    assert "text normalisation changed the words of 1 line" in (out / "summary.md").read_text(encoding="utf-8")


# --- what a user expected -----------------------------------------------------------------------


def test_windows_backslash_paths_in_metadata_are_accepted(tmp_path, demo_corpora):
    root = tmp_path / "win"
    _coqui_corpus(root, [("kviz_031.wav", "Jó estét!")], demo_corpora[0])
    (root / "metadata.csv").write_text("audio_file|text|speaker_name\r\nwavs\\kviz_031.wav|Jó estét!|host\r\n")
    out = tmp_path / "out"
    prepare({"win": root}, out, PrepareSettings(val_fraction=0.0, speaker_check=False), progress=False)
    entry = json.loads((out / "win" / "corpus.json").read_text())
    assert entry["rejected_total"] == 0 and entry["splits"]["train"]["index"][0]["key"] == "win_kviz_031"


def test_a_text_over_coquis_character_limit_is_named_once(tmp_path, demo_corpora, tiny_base, caplog):
    sentence = "Jó estét kívánok, kedves nézők, kezdődik a mai játék!"
    rows = [("long.wav", " ".join([sentence] * 5)), ("short.wav", sentence)]
    root = tmp_path / "long"
    _coqui_corpus(root, rows, demo_corpora[0])
    out = tmp_path / "out"
    settings = PrepareSettings(val_fraction=0.0, speaker_check=False)
    prepare({"long": root}, out, settings, tiny_base, progress=False)
    assert _rejected(out) == []
    named = [r.getMessage() for r in caplog.records if "characters, over the 224" in r.getMessage()]
    assert named == [
        f"long: {root / 'metadata.csv'} line 2: 269 characters, over the 224 coqui-tts advises for 'hu' "
        "in one piece (it may cut such a text short when speaking it); training reads it whole"
    ]
    assert "exceeds the character limit" not in caplog.text  # coqui's own warning, which named no line


def test_the_compare_conclusion_reads_plainly():
    from vago_lightning.inference.compare import conclusion, describe_model

    def model(similarity, no_speech=0, runaway=0):
        return {"speaker_similarity": similarity, "no_speech": no_speech, "count": 21, "runaway": runaway}

    both = {"milliomos": model(0.81), "combined": model(0.874, no_speech=2)}
    text = conclusion(both)
    assert text.startswith("combined sounds most like the reference speaker (similarity 0.874, milliomos 0.810).")
    assert "Samples without speech: combined (2 of 21)." in text and text.endswith("tone, energy or pacing.")
    assert conclusion({"a": model(None, 21), "b": model(None, 21, 3)}).startswith("No model produced speech")
    origin = {"checkpoint": "checkpoints/demo-quiz/best.ckpt", "run": "demo-quiz", "step": 108}
    shown = describe_model("milliomos", {"path": "exported/demo-quiz", "origin": origin})
    assert shown == "milliomos: exported/demo-quiz, run demo-quiz at step 108"
