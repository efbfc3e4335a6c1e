"""Fixed facts of XTTS v2 that every stage shares (read off coqui-tts 0.28.0 and the v2 release)."""

from __future__ import annotations

import re

SAMPLE_RATE = 22050  # training audio, the DVAE and the conditioning encoder
OUTPUT_RATE = 24000  # what the HiFiGAN decoder speaks at
MAX_WAV_SAMPLES = 255_995  # coqui's max_wav_length, ~11.6 s
MAX_TEXT_TOKENS = 200  # coqui's max_text_length
CODE_STRIDE = 1024  # samples per DVAE code: hop 256 and two stride-2 layers (gpt_code_stride_len)
MIN_COND_SAMPLES = 66_150  # 3 s: coqui's min_conditioning_length
MAX_COND_SAMPLES = 132_300  # 6 s: coqui's max_conditioning_length
UNK_TOKEN_ID = 1  # [UNK] in every XTTS vocab.json

# A sentence ends at . ! ? or … followed by white space (subtitle cuts and long-text synthesis).
SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")

# The language codes of the XTTS-v2 release (its config.json "languages"); coqui's tokenizer raises
# NotImplementedError for any other.
# fmt: off
XTTS_LANGUAGES = (
    "en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar", "zh-cn", "hu", "ko", "ja", "hi",
)
# fmt: on
_LANGUAGE_NAMES = {"magyar": "hu", "hungarian": "hu", "hun": "hu", "english": "en", "eng": "en", "deutsch": "de"}


def language_problem(code: str, where: str) -> str | None:
    """One line for a language code XTTS-v2 does not know (`where`: the flag or key), else None."""
    if code in XTTS_LANGUAGES:
        return None
    import difflib

    close = _LANGUAGE_NAMES.get(str(code).lower()) or next(
        iter(difflib.get_close_matches(str(code), XTTS_LANGUAGES, 1)), None
    )
    hint = f" (did you mean {close}?)" if close else ""
    return f"{where} {code!r}: not a language code XTTS-v2 knows{hint}; use one of: {' '.join(XTTS_LANGUAGES)}"
