"""The inputs users have, through `prepare`: metadata with quotes, extra fields, accented file names
and Windows paths, subtitles with a bad segment or impossible times, a truncated file; every input
is accounted for, every id gets its own key, and the summary reads true."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import soundfile as sf

from vago_lightning.data.corpus import shard_key
from vago_lightning.data.prepare import PrepareSettings, prepare

from helpers import SR, rejected_rows, srt_time, write_coqui_corpus, write_ljspeech


def test_quotes_in_metadata_are_text_and_every_line_is_one_input(tmp_path, demo_corpora, tiny_base):
    lines = [
        'lj001|"Jó estét" mondta a műsorvezető.|"Jó estét" mondta a műsorvezető.',
        "lj002|Tudja, ez egy jó kérdés.|Tudja, ez egy jó kérdés.",
        'lj003|"Kezdődik a játék!|"Kezdődik a játék!',
        "lj004|Melyik folyó szeli ketté Budapestet?|Melyik folyó szeli ketté Budapestet?",
        "lj048|Az utolsó sor.|Az utolsó sor.|extra",
    ]
    root = tmp_path / "lj"
    write_ljspeech(root, lines, demo_corpora[0])
    prepare({"lj": root}, tmp_path / "out", PrepareSettings(val_fraction=0.0), tiny_base, progress=False)
    entry = json.loads((tmp_path / "out" / "lj" / "corpus.json").read_text())
    assert entry["inputs"] == 5 and entry["splits"]["train"]["samples"] == 4 and entry["rejected_total"] == 1
    rejected = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert rejected[0]["reason"] == "malformed_line" and rejected[0]["id"] == "lj048"
    assert "got 4 field(s)" in rejected[0]["detail"] and rejected[0]["line"] == 5


def test_a_truncated_wav_is_rejected(tmp_path, demo_corpora):
    root = tmp_path / "lj"
    write_ljspeech(root, ["cut|Jó estét kívánok, kedves nézők!|Jó estét kívánok, kedves nézők!"], demo_corpora[0])
    data = (root / "wavs" / "cut.wav").read_bytes()
    (root / "wavs" / "cut.wav").write_bytes(data[: len(data) // 2])
    prepare({"lj": root}, tmp_path / "out", PrepareSettings(), progress=False)
    (row,) = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert row["reason"] == "truncated" and "the header says" in row["detail"]


def test_windows_backslash_paths_in_metadata_are_accepted(tmp_path, demo_corpora):
    root = tmp_path / "win"
    write_coqui_corpus(root, [("kviz_031.wav", "Jó estét!")], demo_corpora[0])
    (root / "metadata.csv").write_text("audio_file|text|speaker_name\r\nwavs\\kviz_031.wav|Jó estét!|host\r\n")
    out = tmp_path / "out"
    prepare({"win": root}, out, PrepareSettings(val_fraction=0.0, speaker_check=False), progress=False)
    entry = json.loads((out / "win" / "corpus.json").read_text())
    assert entry["rejected_total"] == 0 and entry["splits"]["train"]["index"][0]["key"] == "win_kviz_031"


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
    write_coqui_corpus(root, [*rows, ("kör_01.wav", "Megint.")], demo_corpora[0])  # the last: a real duplicate
    out = tmp_path / "out"
    prepare({"hu": root}, out, PrepareSettings(val_fraction=0.0, speaker_check=False), progress=True)
    assert "7/7" in capsys.readouterr().out  # the progress bar ends at n/n (an expectation of the issue)
    (dup,) = rejected_rows(out)  # only the real duplicate: the same id twice
    assert dup["reason"] == "duplicate_id" and dup["id"] == "kör_01" and dup["line"] == 8
    entry = json.loads((out / "hu" / "corpus.json").read_text())
    assert entry["splits"]["train"]["samples"] == 6
    assert "- ⚠️ 1 input rejected: 1 duplicate_id (rejected.jsonl" in (out / "summary.md").read_text(encoding="utf-8")


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
    srt = [f"{n}\n{srt_time(a)} --> {srt_time(b)}\n{text}\n" for n, (a, b, text) in enumerate(segments, 1)]
    (root / "talk.srt").write_text("\n".join(srt), encoding="utf-8")
    prepare({"talk": root}, tmp_path / "out", PrepareSettings(val_fraction=0.0), tiny_base, progress=False)
    entry = json.loads((tmp_path / "out" / "talk" / "corpus.json").read_text())
    (bad,) = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert bad["reason"] == "unknown_tokens" and bad["segment"] == 2 and bad["line"] == 6  # its timing line
    assert entry["inputs"] == 4 == entry["splits"]["train"]["inputs"] + entry["rejected_total"]
    with tarfile.open(tmp_path / "out" / "talk" / "train-000000.tar") as tar:
        metas = [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
    texts = " ".join(m["text"] for m in metas)
    assert rows[1].split("|")[1] in texts and "Kultúra" not in texts  # the good sentence is kept
    assert sorted(n for m in metas for n in m["segments"]) == [1, 3, 4]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "Inputs 4 (metadata lines and subtitle segments)" in summary


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
    srt = [f"{n}\n{srt_time(a)} --> {srt_time(b)}\n{text}\n" for n, (a, b, text) in enumerate(segments, 1)]
    (root / "talk.srt").write_text("\n".join(srt), encoding="utf-8")
    out = tmp_path / "out"
    prepare({"talk": root}, out, PrepareSettings(val_fraction=0.0, speaker_check=False), progress=False)
    bad = {r["segment"]: r for r in rejected_rows(out)}
    assert sorted(bad) == [2, 4] and {r["reason"] for r in bad.values()} == {"bad_timing"}
    assert bad[2]["line"] == 6 and "ends before it starts" in bad[2]["detail"]
    assert bad[4]["line"] == 14 and "runs past the end of the audio" in bad[4]["detail"]
    with tarfile.open(out / "talk" / "train-000000.tar") as tar:
        metas = [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
    assert sorted(n for m in metas for n in m["segments"]) == [1, 3]
    for m in metas:  # start, end and duration agree
        assert m["end"] - m["start"] == pytest.approx(m["duration"], abs=0.01)


def test_the_summary_reads_true(tmp_path, demo_corpora):
    prepare({"quiz": demo_corpora[0] / "quiz"}, tmp_path / "out", PrepareSettings(), progress=False)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "⚠️ total duration 5.4 min (the seed recommends over 30 minutes)" in summary
    assert "1 corpus, 4 categories" in summary or "1 corpus, 3 categories" in summary
    assert "⚠️ few validation clips: quiz has 2" in summary and "--val_fraction 0.07" in summary
