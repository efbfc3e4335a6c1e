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
