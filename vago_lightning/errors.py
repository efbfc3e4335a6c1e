"""Expected bad input: one family, printed as one `error:` line that names the file or key and
what to do. Anything else is a bug or a machine problem (CUDA out of memory) and keeps its traceback."""

from __future__ import annotations


class VagoError(Exception):
    """Bad input that the user can fix; the message says where and how."""


class DataError(VagoError):
    """Shards or corpora that cannot be used."""


class BaseModelError(VagoError):
    """A base model directory or checkpoint that cannot be used with this run."""


class PreflightError(VagoError):
    """The run cannot succeed as configured (disk, GPU memory)."""


class OutputExistsError(VagoError):
    """An output that would be overwritten; nothing is overwritten without being asked to."""


class UsageError(VagoError):
    """A command-line value that cannot be used."""


class AudioError(VagoError):
    """A clip that cannot be used; `reason` is the rejection reason recorded in rejected.jsonl."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
