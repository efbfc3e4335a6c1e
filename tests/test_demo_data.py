"""The demo corpora: real Hungarian speech in coqui's fine-tuning format, deterministic per seed."""

from __future__ import annotations

import csv
import hashlib

import pytest
import soundfile as sf

from vago_lightning.__main__ import main
from vago_lightning.demo.corpora import INTERVIEW_VOICE, write_corpus
from vago_lightning.demo.text import interview_sentences, quiz_sentences


def _read_metadata(corpus):
    with open(corpus / "metadata.csv", encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="|"))


@pytest.mark.parametrize("name,low,high", [("quiz", 70, 90), ("interview", 220, 240)])
def test_corpus_layout_and_audio(demo_corpora, name, low, high):
    root, _ = demo_corpora
    rows = _read_metadata(root / name)
    assert rows[0] == ["audio_file", "text", "speaker_name"]
    assert low <= len(rows) - 1 <= high
    assert len({r[0] for r in rows[1:]}) == len(rows) - 1  # unique files
    for audio_file, text, speaker in rows[1:]:
        info = sf.info(root / name / audio_file)
        assert info.samplerate == 22050 and info.channels == 1
        assert 0.5 < info.frames / info.samplerate <= 10.0
        assert text.strip() and speaker == "demo_host"


def test_interview_spans_short_medium_and_long_clips(demo_corpora):
    _, rows = demo_corpora
    seconds = [r["seconds"] for r in rows["interview"]]
    assert sum(s < 4 for s in seconds) >= 20
    assert sum(4 <= s < 7 for s in seconds) >= 40
    assert sum(7 <= s <= 10 for s in seconds) >= 40  # the seed's long 7-10 s lines
    assert max(seconds) <= 10.0


def test_text_is_real_hungarian_with_numbers_accents_and_questions():
    quiz, interview = quiz_sentences(), interview_sentences(0)
    everything = " ".join(quiz + interview)
    assert set("áéíóöőúüű") <= set(everything.lower())
    assert sum(t.endswith("?") for t in quiz) >= 20 and any(t.endswith("?") for t in interview)
    assert any(ch.isdigit() for ch in " ".join(quiz)) and any(ch.isdigit() for ch in " ".join(interview))
    assert len(set(interview)) == len(interview) == 231


def test_deterministic_for_a_seed(tmp_path):
    assert interview_sentences(3) == interview_sentences(3) != interview_sentences(4)
    texts = interview_sentences(3)[:3]
    a = write_corpus(tmp_path / "a", texts, INTERVIEW_VOICE, "x")
    b = write_corpus(tmp_path / "b", texts, INTERVIEW_VOICE, "x")
    digest = lambda d: [hashlib.sha256((d / r["audio_file"]).read_bytes()).hexdigest() for r in a]  # noqa: E731
    assert a == b and digest(tmp_path / "a") == digest(tmp_path / "b")
    assert (tmp_path / "a" / "metadata.csv").read_bytes() == (tmp_path / "b" / "metadata.csv").read_bytes()


def test_refuses_to_overwrite(demo_corpora, capsys):
    root, _ = demo_corpora
    before = (root / "quiz" / "metadata.csv").read_bytes()
    assert main(["demo-data", "--out", str(root)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (root / "quiz" / "metadata.csv").read_bytes() == before
