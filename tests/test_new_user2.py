"""What a new user hit, round two (issue 22): each case failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import soundfile as sf

from vago_lightning.data.corpus import shard_key
from vago_lightning.data.prepare import PrepareSettings, prepare

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


def test_accented_file_names_are_not_duplicates(tmp_path, demo_corpora):
    rows = [("ő_ű.wav", "Jó estét!"), ("á_é.wav", "Jó napot!"), ("kérdés 01.wav", "Ki az?")]
    rows += [("kérdés_01.wav", "Mi az?"), ("kör_01.wav", "Egy kör."), ("kér_01.wav", "Egy kérés.")]
    root = tmp_path / "hu"
    _coqui_corpus(root, [*rows, ("kör_01.wav", "Megint.")], demo_corpora[0])  # the last: a real duplicate
    out = tmp_path / "out"
    prepare({"hu": root}, out, PrepareSettings(val_fraction=0.0, speaker_check=False), progress=False)
    (dup,) = _rejected(out)  # only the real duplicate: the same id twice
    assert dup["reason"] == "duplicate_id" and dup["id"] == "kör_01" and dup["line"] == 8
    entry = json.loads((out / "hu" / "corpus.json").read_text())
    assert entry["splits"]["train"]["samples"] == 6
