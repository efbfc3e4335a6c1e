"""What a generation is asked: the sampling settings of `generate`, `compare`, `serve` and the
training-time samples, and their defaults. No torch here: the verbs' flags take their defaults from
this module, so `--help` costs no model import."""

from __future__ import annotations

from dataclasses import dataclass

from ..constants import language_problem
from ..errors import UsageError

DEFAULT_TEMPERATURES = [0.55, 0.65, 0.75]  # the seed's listening range


@dataclass
class Settings:
    language: str = "hu"
    temperature: float = 0.65
    top_k: int = 50
    top_p: float = 0.85
    repetition_penalty: float = 5.0
    seed: int = 0
    max_new_tokens: int | None = None  # None: token_cap(text), proportional to the text

    def __post_init__(self):
        problem = language_problem(self.language, "--language")
        if problem:
            raise UsageError(problem)  # coqui's own answer is a 43-line traceback, after the model loaded
