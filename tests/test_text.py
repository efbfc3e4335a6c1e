"""Text as XTTS reads it: characters its vocabulary lacks are named, numbers in groups of three are one
number, the lines its cleaning rewrites are listed, a text over coqui's character limit is named once."""

from __future__ import annotations

import json

from vago_lightning.data.prepare import PrepareSettings, prepare
from vago_lightning.normalise import join_digit_groups, spoken_form

from helpers import rejected_rows, write_coqui_corpus, write_ljspeech


def test_unknown_tokens_names_the_characters(tmp_path, demo_corpora, tiny_base):
    root = tmp_path / "lj"
    write_ljspeech(root, ["snow|Ez ☃ egy hóember ♫.|Ez ☃ egy hóember ♫."], demo_corpora[0])
    prepare({"lj": root}, tmp_path / "out", PrepareSettings(), tiny_base, progress=False)
    (row,) = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert row["reason"] == "unknown_tokens" and "'☃'" in row["detail"] and "'♫'" in row["detail"]


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
    write_coqui_corpus(root, rows, demo_corpora[0])
    out = tmp_path / "out"
    prepare({"hu": root}, out, PrepareSettings(val_fraction=0.0, speaker_check=False), progress=False)
    (row,) = [json.loads(x) for x in (out / "normalised.jsonl").read_text(encoding="utf-8").splitlines()]
    assert row["original"] == rows[0][1] and row["spoken"] == "a harmadik kérdés százezer ft-ért, doktor kovács!"
    assert row["line"] == 2 and row["source"] == str(root / "metadata.csv") and row["id"] == "q1"
    assert "text normalisation changed the words of 1 line" in (out / "summary.md").read_text(encoding="utf-8")


def test_a_text_over_coquis_character_limit_is_named_once(tmp_path, demo_corpora, tiny_base, caplog):
    sentence = "Jó estét kívánok, kedves nézők, kezdődik a mai játék!"
    rows = [("long.wav", " ".join([sentence] * 5)), ("short.wav", sentence)]
    root = tmp_path / "long"
    write_coqui_corpus(root, rows, demo_corpora[0])
    out = tmp_path / "out"
    settings = PrepareSettings(val_fraction=0.0, speaker_check=False)
    prepare({"long": root}, out, settings, tiny_base, progress=False)
    assert rejected_rows(out) == []
    named = [r.getMessage() for r in caplog.records if "characters, over the 224" in r.getMessage()]
    assert named == [
        f"long: {root / 'metadata.csv'} line 2: 269 characters, over the 224 coqui-tts advises for 'hu' "
        "in one piece (it may cut such a text short when speaking it); training reads it whole"
    ]
    assert "exceeds the character limit" not in caplog.text  # coqui's own warning, which named no line
