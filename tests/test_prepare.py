"""`prepare`: every input format, every rejection reason, the split, idempotence, shards read back."""

from __future__ import annotations

import io
import itertools
import json
import shutil
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch

from vago_lightning.__main__ import main
from vago_lightning.data.corpus import Segment, parse_subtitles, plan_cuts, shard_key
from vago_lightning.data.prepare import PrepareSettings, category, prepare, stratified_split

SR = 22050


def _speech(demo_root, n):
    """The first n quiz clips of the demo corpus as (audio, text)."""
    rows = (demo_root / "quiz" / "metadata.csv").read_text(encoding="utf-8").splitlines()[1 : n + 1]
    out = []
    for row in rows:
        audio_file, text, _ = row.split("|")
        wav, _ = sf.read(demo_root / "quiz" / audio_file, dtype="float32")
        out.append((wav, text))
    return out


@pytest.fixture(scope="module")
def messy(tmp_path_factory, demo_corpora):
    """A coqui-format corpus with one input for every rejection reason, plus good and converted clips."""
    root = tmp_path_factory.mktemp("messy") / "messy"
    (root / "wavs").mkdir(parents=True)
    speech = _speech(demo_corpora[0], 8)
    rows = ["audio_file|text|speaker_name"]

    def add(name, text, wav=None, rate=SR, raw=None):
        path = root / "wavs" / name
        if raw is not None:
            path.write_bytes(raw)
        elif wav is not None:
            sf.write(path, wav, rate)
        rows.append(f"wavs/{name}|{text}|spk")

    for i, (wav, text) in enumerate(speech[:5]):
        add(f"good_{i}.wav", text, wav)
    wav, text = speech[5]
    stereo48 = torch.nn.functional.interpolate(
        torch.from_numpy(wav)[None, None], scale_factor=48000 / SR, mode="linear"
    )[0, 0].numpy()
    add("stereo48.wav", text, np.stack([stereo48, stereo48 * 0.5], axis=1), rate=48000)
    add("name.with.dots.wav", speech[6][1], speech[6][0])
    add("corrupt.wav", "Ez a fájl sérült.", raw=b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    rows.append("wavs/missing.wav|Ez a fájl hiányzik.|spk")
    add("silent.wav", "Itt csend van.", np.zeros(SR * 2, dtype=np.float32))
    add("too_long.wav", "Ez túl hosszú.", np.tile(speech[0][0], 12)[: SR * 13])
    add("too_short.wav", "Rövid.", speech[1][0][: SR // 2])
    add("clipped.wav", "Ez torzít.", np.clip(speech[2][0] * 50, -1, 1))
    add("empty_text.wav", "  ... ", speech[3][0])
    add("good_0.wav", speech[0][1], speech[0][0])  # a duplicate id
    rows.append("only-one-field")  # a malformed line
    add("unknown.wav", "Ez ☃ egy hóember.", speech[4][0])
    add("many_tokens.wav", " ".join([speech[7][1]] * 30), speech[7][0])
    (root / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def messy_prepared(messy, tiny_base, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards-messy")
    prepare(
        {"messy": messy},
        out,
        PrepareSettings(val_fraction=0.2),
        base_dir=tiny_base,
        workers=2,
        progress=False,
    )
    return out, json.loads((out / "manifest.json").read_text())


def test_every_rejection_reason_is_recorded_with_source_and_line(messy_prepared, messy):
    out, manifest = messy_prepared
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in rejected}
    expected = {
        "corrupt": "undecodable",
        "missing": "missing_file",
        "silent": "silent",
        "too_long": "too_long",
        "too_short": "too_short",
        "clipped": "clipped",
        "empty_text": "empty_text",
        "good_0": "duplicate_id",
        "unknown": "unknown_tokens",
        "many_tokens": "too_many_tokens",
    }
    for item_id, reason in expected.items():
        assert by_id[item_id]["reason"] == reason, item_id
        assert by_id[item_id]["source"] == str(messy / "metadata.csv") and by_id[item_id]["line"] > 1
    malformed = [r for r in rejected if r["reason"] == "malformed_line"]
    assert len(malformed) == 1 and malformed[0]["line"] == 17
    entry = manifest["corpora"]["messy"]
    assert entry["rejected_total"] == len(rejected) == 11
    # Every input accounted for, exactly.
    assert entry["inputs"] == 18 == entry["splits"]["train"]["samples"] + entry["splits"]["val"]["samples"] + 11


def _read_tar(path):
    members = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            members[member.name] = tar.extractfile(member).read()
    return members


def test_shards_read_back_with_tarfile_and_webdataset(messy_prepared, tiny_base):
    import webdataset as wds

    from vago_lightning.model.base import load_dvae
    from vago_lightning.model.features import dvae_codes, dvae_mel

    out, manifest = messy_prepared
    entry = manifest["corpora"]["messy"]
    shards = [out / "messy" / s for split in ("train", "val") for s in entry["splits"][split]["shards"]]
    members = {}
    for shard in shards:
        members.update(_read_tar(shard))
    keys = {name.split(".")[0] for name in members}
    # Dots sanitized: one sample, not three (its key readable, with a hash of the id that had to change).
    assert len(keys) == 7 and any(k.startswith("messy_name_with_dots-") for k in keys)
    assert all("." not in k for k in keys)
    assert {n.split(".", 1)[1] for n in members} == {"flac", "json", "codes.npy"}
    meta = json.loads(members["messy_stereo48.json"])
    assert (meta["source_rate"], meta["source_channels"]) == (48000, 2)
    wav, rate = sf.read(io.BytesIO(members["messy_stereo48.flac"]))
    assert rate == 22050 and wav.ndim == 1 and abs(len(wav) / rate - meta["duration"]) < 1e-3
    assert meta["text"] and meta["language"] == "hu" and meta["corpus"] == "messy"
    # A 16-bit 22,050 Hz mono source is stored bit-exact.
    good = json.loads(members["messy_good_1.json"])
    src, _ = sf.read(good["source"], dtype="int16")
    stored, _ = sf.read(io.BytesIO(members["messy_good_1.flac"]), dtype="int16")
    assert np.array_equal(src, stored)
    # Precomputed codes are the base DVAE's codes of the stored audio.
    stats = torch.load(tiny_base / "mel_stats.pth", weights_only=True)
    codes = np.load(io.BytesIO(members["messy_good_1.codes.npy"]))
    wav, _ = sf.read(io.BytesIO(members["messy_good_1.flac"]), dtype="float32")
    expected = dvae_codes(load_dvae(tiny_base / "dvae.pth"), dvae_mel(stats), torch.from_numpy(wav)[None])[0]
    assert np.array_equal(codes, expected.numpy())
    # webdataset groups the same samples by key.
    dataset = wds.WebDataset([str(s) for s in shards], shardshuffle=False, empty_check=False)
    samples = list(dataset)
    assert {s["__key__"] for s in samples} == keys
    assert all({"flac", "json", "codes.npy"} <= set(s) for s in samples)
    assert manifest["base_model"]["dvae_sha256"] and manifest["base_model"]["mel_stats_sha256"]


def test_ljspeech_format(tmp_path, demo_corpora):
    root = tmp_path / "lj"
    (root / "wavs").mkdir(parents=True)
    lines = []
    for i, (wav, text) in enumerate(_speech(demo_corpora[0], 4)):
        sf.write(root / "wavs" / f"LJ001-{i:04d}.wav", wav, SR)
        lines.append(f"LJ001-{i:04d}|{text.upper()}|{text}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    prepare({"lj": root}, tmp_path / "out", PrepareSettings(), progress=False)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    entry = manifest["corpora"]["lj"]
    assert entry["format"] == "ljspeech" and entry["inputs"] == 4 and entry["rejected_total"] == 0
    members = _read_tar(tmp_path / "out" / "lj" / "train-000000.tar")
    texts = {json.loads(v)["text"] for k, v in members.items() if k.endswith(".json")}
    assert all(t != t.upper() for t in texts)  # the normalized (third) column is used
    assert entry["codes"] is False and not any(k.endswith(".npy") for k in members)


def _long_recording(tmp_path, demo_root, n=8, gap=0.6):
    """Demo clips joined with pauses into one 48 kHz stereo recording, with their true segment times."""
    pieces, segments, t = [], [], 0.0
    for i, (wav, text) in enumerate(_speech(demo_root, n)):
        pieces += [wav, np.zeros(int(gap * SR), dtype=np.float32)]
        segments.append(Segment(t, t + len(wav) / SR, text, i + 1))
        t += len(wav) / SR + gap
    audio = np.concatenate(pieces)
    return audio, segments


def _stamp(seconds, sep):
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{int(h):02d}:{int(m):02d}:{int(s):02d}{sep}{int(round((s % 1) * 1000)) % 1000:03d}"


@pytest.mark.parametrize("fmt", ["srt", "vtt", "json"])
def test_long_recordings_with_subtitles_are_cut_at_segment_boundaries(tmp_path, demo_corpora, fmt):
    audio, segments = _long_recording(tmp_path, demo_corpora[0])
    root = tmp_path / "interview"
    root.mkdir()
    sf.write(root / "talk.wav", audio, SR)
    if fmt == "json":
        (root / "talk.json").write_text(
            json.dumps([{"start": s.start, "end": s.end, "text": s.text} for s in segments])
        )
    else:
        sep = "," if fmt == "srt" else "."
        blocks = [f"{i}\n{_stamp(s.start, sep)} --> {_stamp(s.end, sep)}\n{s.text}" for i, s in enumerate(segments, 1)]
        head = "WEBVTT\n\n" if fmt == "vtt" else ""
        (root / f"talk.{fmt}").write_text(head + "\n\n".join(blocks) + "\n", encoding="utf-8")
    parsed = parse_subtitles(root / f"talk.{fmt}")
    assert [p.text for p in parsed] == [s.text for s in segments]
    assert all(abs(p.start - s.start) < 2e-3 for p, s in zip(parsed, segments))
    prepare({"talk": root}, tmp_path / "out", PrepareSettings(val_fraction=0.0), progress=False)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    entry = manifest["corpora"]["talk"]
    assert entry["format"] == "subtitles" and entry["rejected_total"] == 0
    members = _read_tar(tmp_path / "out" / "talk" / "train-000000.tar")
    metas = sorted((json.loads(v) for k, v in members.items() if k.endswith(".json")), key=lambda m: m["start"])
    # Every segment's words land in exactly one clip, in order; cuts are padded but never overlap.
    assert " ".join(m["text"] for m in metas) == " ".join(s.text for s in segments)
    for a, b in zip(metas, metas[1:]):
        assert a["end"] <= b["start"]
    for m in metas:
        assert 1.0 <= m["duration"] <= 10.5


def test_plan_cuts_merges_short_and_splits_long_segments():
    short = [Segment(i * 1.2, i * 1.2 + 1.0, f"Szó {i}.", i + 1) for i in range(6)]
    cuts = plan_cuts(short)
    assert len(cuts) < 6 and all(end - start >= 2.0 for start, end, _, _ in cuts[:-1])
    long_ = [
        Segment(
            0.0,
            16.0,
            "Első mondat itt van. Második mondat is van. Harmadik mondat. Negyedik mondat zárja.",
            1,
        )
    ]
    cuts = plan_cuts(long_)
    assert len(cuts) >= 2 and all(end - start <= 10.5 for start, end, _, _ in cuts)
    assert " ".join(text for _, _, text, _ in cuts) == long_[0].text
    # A long pause is never bridged.
    cuts = plan_cuts([Segment(0, 1.0, "Igen", 1), Segment(5.0, 6.0, "nem.", 2)])
    assert len(cuts) == 2


def test_stratified_split_is_proportional_deterministic_and_never_empty():
    records = [
        {"key": f"k{i:03d}", "category": c}
        for i, c in enumerate(["short"] * 54 + ["medium"] * 67 + ["long"] * 110 + ["question"] * 1)
    ]
    held = stratified_split(records, 0.02, seed=0, corpus="interview")
    assert len(held) == round(232 * 0.02) == 5
    cats = [r["category"] for r in records if r["key"] in held]
    assert cats.count("long") >= 2 and cats.count("medium") >= 1 and cats.count("short") >= 1
    assert held == stratified_split(records, 0.02, seed=0, corpus="interview")
    assert held != stratified_split(records, 0.02, seed=1, corpus="interview")
    assert len(stratified_split(records[:10], 0.02, seed=0, corpus="x")) == 1  # at least one
    assert stratified_split(records[:1], 0.02, seed=0, corpus="x") == set()
    assert category(3.0, "Igen.") == "short" and category(5, "Igen.") == "medium" and category(7, "Igen.") == "long"
    assert category(9, "Hogy van?") == "question"


def test_demo_corpora_end_to_end_rerun_is_idempotent_and_rebuilds_only_what_changed(tmp_path, demo_corpora, capsys):
    root, _ = demo_corpora
    quiz = tmp_path / "quiz"
    shutil.copytree(root / "quiz", quiz)
    out = tmp_path / "shards"
    args = [
        "prepare",
        "--corpus",
        f"quiz={quiz}",
        "--corpus",
        f"interview={root / 'interview'}",
        "--out",
        str(out),
        "--workers",
        "2",
        "--quiet",
    ]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "quiz: prepared" in first and "| **total** |" in first and "several speaking styles" in first
    manifest = json.loads((out / "manifest.json").read_text())
    t = manifest["totals"]
    assert t["inputs"] == t["train"] + t["val"] + t["rejected"] == 82 + 231
    for name in ("quiz", "interview"):
        assert manifest["corpora"][name]["splits"]["val"]["samples"] >= 1
    assert len(manifest["corpora"]["interview"]["splits"]["train"]["shards"]) >= 3  # several shards
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    assert main(args) == 0
    assert "quiz: unchanged, nothing to do" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps

    # Change one corpus: only it is rebuilt.
    metadata = quiz / "metadata.csv"
    metadata.write_text(
        metadata.read_text(encoding="utf-8").replace("Helyes válasz, gratulálok!", "Helyes válasz!"),
        encoding="utf-8",
    )
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "quiz: prepared" in said and "interview: unchanged" in said
    for path, stamp in stamps.items():
        if path.parent.name == "interview":
            assert path.stat().st_mtime_ns == stamp


def test_an_interrupted_run_leaves_no_half_written_shards(tmp_path, demo_corpora, monkeypatch):
    import vago_lightning.data.prepare as prep

    root, _ = demo_corpora
    out = tmp_path / "shards"
    prepare({"quiz": root / "quiz"}, out, PrepareSettings(), progress=False)
    before = json.loads((out / "quiz" / "corpus.json").read_text())
    real = prep.write_shards
    calls = []

    def dying(directory, split, records, shard_size):
        calls.append(split)
        real(directory, split, itertools.islice(records, 3), shard_size)
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(prep, "write_shards", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare({"quiz": root / "quiz"}, out, PrepareSettings(seed=9), progress=False)
    assert calls == ["train"]
    # The complete corpus is still there and unchanged; the partial one is aside, never read.
    assert json.loads((out / "quiz" / "corpus.json").read_text()) == before
    assert list(out.glob(".tmp-quiz-*"))
    monkeypatch.setattr(prep, "write_shards", real)
    prepare({"quiz": root / "quiz"}, out, PrepareSettings(seed=9), progress=False)
    assert not list(out.glob(".tmp-*"))
    assert json.loads((out / "quiz" / "corpus.json").read_text())["settings"]["seed"] == 9


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert main(["prepare", "--corpus", "quiz", "--out", str(tmp_path)]) == 2
    assert "expected NAME=DIRECTORY" in capsys.readouterr().err
    assert main(["prepare", "--corpus", f"q={tmp_path / 'nope'}", "--out", str(tmp_path)]) == 2
    assert "directory not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["prepare", "--corpus", f"e={empty}", "--out", str(tmp_path / "o")]) == 2
    assert "no metadata.csv" in capsys.readouterr().err
    assert main(["prepare", "--corpus", f"a.b={empty}", "--out", str(tmp_path / "o")]) == 2
    assert shard_key("a.b-c d").startswith("a_b-c_d-")  # readable, plus a hash that keeps it distinct from "a_b-c_d"
