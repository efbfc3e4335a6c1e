"""The recogniser and the error rates: the real whisper-base from the test extra, on espeak speech."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vago_lightning.__main__ import main
from vago_lightning.asr import BASE_SHA256, Recognizer, check_model_dir
from vago_lightning.cer import cer, normalise, wer
from vago_lightning.demo.espeak import synthesize
from vago_lightning.errors import UsageError
from vago_lightning.files import sha256_file
from vago_lightning.metrics import to_16k

SENTENCES = [
    "Jó estét kívánok, kedves nézőink, kezdődik a játék.",
    "Kezdődik a játék, amelyben ma este valaki milliomos lehet.",
    "A helyes válasz a C, gratulálok, Ön továbbjutott!",
]


def _speech(text: str, voice: str = "hu") -> np.ndarray:
    samples, rate = synthesize(text, voice)
    return to_16k(samples.astype(np.float32) / 32768, rate)


def test_normalise_reads_numbers_as_training_does_and_drops_only_punctuation():
    assert normalise("Most a 100 000 Ft-os kérdés: „Ki írta?”") == "most a százezer ft os kérdés ki írta"
    assert normalise("most a százezer ft os kérdés, ki írta") == normalise("Most a 100000 Ft-os kérdés: Ki írta?")
    assert normalise("Ő ÍRTA") == "ő írta"  # accents are letters
    assert cer("Ki írta?", "ki irta") == pytest.approx(1 / 7)  # í is not i: one edit in "ki írta"
    assert cer("Most 100 000 forint.", "most százezer forint") == 0.0
    assert wer("a b c d", "a b x d") == pytest.approx(0.25)
    assert cer("...", "bármi") is None  # no reference text: no figure
    assert cer("valami", "") == 1.0


def test_whisper_base_is_assembled_from_the_wheels_and_checked(whisper_base):
    assert sha256_file(whisper_base / "model.bin") == BASE_SHA256
    assert check_model_dir(whisper_base) == whisper_base
    # the verb refuses to overwrite and says how
    assert main(["whisper-base", "--out", str(whisper_base)]) != 0


def test_a_missing_or_wrong_model_folder_is_one_line_before_anything_is_written(tmp_path, whisper_base, capsys):
    with pytest.raises(UsageError, match="not a folder"):
        check_model_dir(tmp_path / "nowhere")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    with pytest.raises(UsageError, match="ct2-transformers-converter"):
        check_model_dir(wrong)
    xtts_like = tmp_path / "xtts"
    xtts_like.mkdir()
    for name in ("model.bin", "tokenizer.json"):
        (xtts_like / name).write_bytes(b"x")
    (xtts_like / "config.json").write_text(json.dumps({"model_args": {}}))
    with pytest.raises(UsageError, match="not a CTranslate2 Whisper"):
        check_model_dir(xtts_like)
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    for name in ("model.bin", "config.json"):
        (no_tokenizer / name).write_bytes((whisper_base / name).read_bytes())
    with pytest.raises(UsageError, match="no tokenizer.json"):  # faster-whisper would download one
        check_model_dir(no_tokenizer)


def test_whisper_base_hears_espeak_hungarian_and_tells_a_wrong_transcript(whisper_base):
    recognizer = Recognizer.load(whisper_base, "cpu")
    clips = [_speech(s) for s in SENTENCES]
    heard = recognizer.hear(clips, "hu", words=True)
    assert len(heard) == len(SENTENCES)
    right = [cer(s, h.text) for s, h in zip(SENTENCES, heard)]
    wrong = [cer(SENTENCES[(i + 1) % 3], h.text) for i, h in enumerate(heard)]
    assert max(right) < 0.5, right  # whisper-base on espeak: about 0.25
    assert min(wrong) > 0.6, wrong  # another sentence's text: 0.8-0.9
    for clip, h in zip(clips, heard):  # word times lie inside their own clip, in order
        assert h.words and 0 <= h.words[0].start < h.words[-1].end <= len(clip) / 16000 + 0.05
    # one clip at a time hears the same as the batch
    assert recognizer.hear(clips[1:2], "hu")[0].text == heard[1].text
