"""The honest judge: speech metrics from models that are not the one being judged."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf

from vago_lightning import metrics
from vago_lightning.__main__ import main
from vago_lightning.data.prepare import PrepareSettings, prepare
from vago_lightning.demo import espeak
from vago_lightning.demo.text import interview_sentences, quiz_sentences

RATE = 22050


def _say(text: str, voice: str = "hu", speed: int = 150, pitch: int = 58) -> np.ndarray:
    samples, rate = espeak.synthesize(text, voice, speed, pitch)
    assert rate == RATE
    return samples.astype(np.float32) / 32768


@pytest.fixture(scope="module")
def reference():
    texts = quiz_sentences()[:5]
    return metrics.Reference.of([(_say(t), RATE) for t in texts], texts)


def test_similarity_separates_the_voice_from_another_voice_and_from_noise(reference):
    texts = quiz_sentences()[5:10]
    same = [metrics.judge(_say(t), RATE, t, reference) for t in texts]
    other = [metrics.judge(_say(t, "hu+f3"), RATE, t, reference) for t in texts]
    noise = np.random.default_rng(0).standard_normal(RATE * 3).astype(np.float32) * 0.3
    judged_noise = metrics.judge(noise, RATE, "Jó estét kívánok!", reference)
    assert min(s["speaker_similarity"] for s in same) >= 0.85
    assert max(s["speaker_similarity"] for s in other) <= 0.75
    assert judged_noise["speaker_similarity"] is None and judged_noise["flags"] == ["no_speech"]  # means nothing
    assert metrics.cosine(metrics.speaker_embedding(noise, RATE), reference.embedding) < 0.7
    assert all(s["flags"] == [] and s["speech_ratio"] > 0.7 for s in same)
    silence = metrics.judge(np.zeros(RATE * 2, np.float32), RATE, "Csend.", reference)
    assert silence["speaker_similarity"] is None and silence["flags"] == ["no_speech"]


def test_speech_timing_and_speaking_rate(reference):
    text = quiz_sentences()[6]
    speech = _say(text)
    padded = np.concatenate([np.zeros(2 * RATE, np.float32), speech, np.zeros(2 * RATE, np.float32)])
    timing = metrics.speech_timing(padded, RATE)
    assert abs(timing.leading_silence - 2.0) < 0.1 and timing.trailing_silence > 2.0
    assert timing.speech_ratio < 0.6 and not timing.no_speech
    fast = metrics.judge(_say(text, speed=220), RATE, text, reference)
    slow = metrics.judge(_say(text, speed=100), RATE, text, reference)
    assert "too_fast" in fast["flags"] and "too_slow" in slow["flags"]
    assert 8 < reference.rate < 15  # letters per second of espeak speech at 150 words a minute
    assert "runaway" in metrics.judge(speech, RATE, text, reference, hit_token_limit=True)["flags"]


def test_outliers_by_a_centroid_that_the_other_voice_does_not_pull():
    rng = np.random.default_rng(0)
    speaker, other = rng.normal(size=256), rng.normal(size=256)
    unit = lambda v: (v / np.linalg.norm(v)).astype(np.float32)  # noqa: E731
    embeddings = [unit(speaker + rng.normal(scale=0.3, size=256)) for _ in range(16)]
    embeddings += [unit(other + rng.normal(scale=0.3, size=256)) for _ in range(4)] + [None]
    similarities, threshold = metrics.speaker_outliers(embeddings)
    flagged = [i for i, s in enumerate(similarities) if s < threshold]
    assert flagged == [16, 17, 18, 19] and math.isnan(similarities[20])


def test_prepare_flags_the_clips_of_a_second_voice_and_can_reject_them(tmp_path):
    root = tmp_path / "mixed"
    (root / "wavs").mkdir(parents=True)
    lines = ["audio_file|text|speaker_name"]
    texts = [t for t in interview_sentences(0) if len(t) < 90][:16]  # under 10 s each
    for i, text in enumerate(texts):
        # Every fourth line: the interviewer, another voice.
        wav = _say(text, "hu+f3", 150, 58) if i % 4 == 3 else _say(text, "hu", 145, 44)
        if i == 0:  # subtitle-like cuts carry silence
            wav = np.concatenate([np.zeros(RATE, np.float32), wav, np.zeros(RATE, np.float32)])
        sf.write(root / "wavs" / f"line_{i:02d}.wav", wav, RATE, subtype="PCM_16")
        lines.append(f"wavs/line_{i:02d}.wav|{text}|host")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    out = tmp_path / "flagged"
    prepare({"mixed": root}, out, PrepareSettings(val_fraction=0.0), workers=1, progress=False)
    flagged = [json.loads(x) for x in (out / "speaker_outliers.jsonl").read_text().splitlines()]
    assert sorted(o["id"] for o in flagged) == ["line_03", "line_07", "line_11", "line_15"]
    assert all(o["similarity"] < 0.75 and o["similarity"] < o["threshold"] for o in flagged)
    assert "4 clips far from the corpus's speaker" in (out / "summary.md").read_text()
    entry = json.loads((out / "mixed" / "corpus.json").read_text())
    assert entry["splits"]["train"]["samples"] == 16 and entry["speaker_outliers"] == 4  # flagged, kept

    out = tmp_path / "rejected"
    prepare(
        {"mixed": root},
        out,
        PrepareSettings(val_fraction=0.0, reject_other_speakers=True, trim_silence=True),
        workers=1,
        progress=False,
    )
    rejected = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rejected) == ["line_03", "line_07", "line_11", "line_15"]
    assert {r["reason"] for r in rejected} == {"other_speaker"}
    entry = json.loads((out / "mixed" / "corpus.json").read_text())
    assert entry["splits"]["train"]["samples"] == 12 and entry["rejected_total"] == 4
    import tarfile

    with tarfile.open(out / "mixed" / "train-000000.tar") as tar:
        metas = {m.name: json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")}
        flac = next(m for m in tar.getmembers() if m.name.startswith("mixed_line_00"))
        wav, _ = sf.read(tar.extractfile(flac))
    timing = metrics.speech_timing(wav, RATE)
    assert timing.leading_silence < 0.35 and timing.trailing_silence < 0.35  # trimmed from over 1 s
    assert all(0.8 < m["speaker_similarity"] <= 1.0 for m in metas.values())


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
