"""Error rates of what the recogniser heard against a text: one normalisation for every figure printed.

As papers score TTS intelligibility (Seed-TTS-eval, F5-TTS, CosyVoice's CV3-Eval): both texts are
normalised, then the character error rate (CER) and word error rate (WER) come from jiwer. For
Hungarian CER is the figure to read: its long compound words make one wrong letter a wrong word.

The normalisation: digits read the way training reads them (numbers in groups of three joined, then
coqui's cleaning for the language, so "100 000" and "százezer" compare as the same words), NFKC, lower
case, punctuation and symbols to spaces, accents kept (they are letters in Hungarian), whitespace
collapsed.
"""

from __future__ import annotations

import functools
import unicodedata

from .normalise import join_digit_groups


def normalise(text: str, language: str = "hu") -> str:
    """`text` in the form every error rate here compares."""
    text = unicodedata.normalize("NFKC", text)
    text = _spoken(join_digit_groups(" ".join(text.split())), language)
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch)[0] in "PSZC" else ch for ch in text)
    return " ".join(text.split())


@functools.lru_cache(maxsize=4096)
def _spoken(text: str, language: str) -> str:
    """coqui's cleaning (numbers and abbreviations spelled out); a language it has no cleaner for is
    only lower-cased."""
    from .normalise import spoken_form

    try:
        return spoken_form(text, language)
    except (NotImplementedError, ImportError, KeyError):
        return text.lower()


def cer(reference: str, heard: str, language: str = "hu") -> float | None:
    """Character error rate of `heard` against `reference` (edits over the reference's characters,
    spaces included, after `normalise`); None when the reference holds no text."""
    import jiwer

    ref, hyp = normalise(reference, language), normalise(heard, language)
    if not ref:
        return None
    return float(jiwer.cer(ref, hyp)) if hyp else 1.0


def wer(reference: str, heard: str, language: str = "hu") -> float | None:
    """Word error rate, as `cer` but over words."""
    import jiwer

    ref, hyp = normalise(reference, language), normalise(heard, language)
    if not ref:
        return None
    return float(jiwer.process_words(ref, hyp).wer) if hyp else 1.0
