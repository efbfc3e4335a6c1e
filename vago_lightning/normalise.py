"""What XTTS reads: coqui's tokenizer rewrites every text before it encodes it (lower case, numbers
and abbreviations spelled out: `dr.` -> `doktor`, `3.` -> `harmadik`). A transcript rewritten into
other words may no longer match its audio, so prepare lists every line whose words changed.

One rewrite of our own runs first: digits grouped by spaces (`100 000`, with a no-break or thin space
too) are one number. coqui reads `100.000` as one number but `100 000` as "száz nulla".
"""

from __future__ import annotations

import re

# A 1-3 digit lead and groups of exactly three digits, apart by a space, no-break or thin space.
_SPACE_GROUPS = re.compile(r"(?<![\d.,])\d{1,3}(?:[ \u00a0\u2009\u202f]\d{3})+(?!\d)")
_WORD = re.compile(r"\w+")


def join_digit_groups(text: str) -> str:
    """`100 000 Ft` -> `100000 Ft`: the spaces inside a number written in groups of three go."""
    return _SPACE_GROUPS.sub(lambda m: re.sub(r"\D", "", m.group(0)), text)


def spoken_form(text: str, language: str, tokenizer=None) -> str:
    """The text as the model reads it: coqui's cleaning for `language` (the base model's tokenizer
    when there is one, else coqui's cleaner itself, which is the same)."""
    language = language.split("-")[0]  # zh-cn: as coqui's encode() does
    if tokenizer is not None:
        return tokenizer.preprocess_text(text, language)
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer

    return VoiceBpeTokenizer.preprocess_text(_NoVocab(), text, language)


class _NoVocab:
    """preprocess_text needs a tokenizer only for Japanese (its `katsu` reader)."""

    @property
    def katsu(self):
        import cutlet

        return cutlet.Cutlet()


def words_changed(original: str, spoken: str) -> bool:
    """Whether the cleaning changed the words, not only their case, spacing or punctuation."""
    return _WORD.findall(original.lower()) != _WORD.findall(spoken.lower())
