"""Stopping a run on request: Ctrl-C, SIGTERM from a scheduler, Ctrl-Break on Windows, or a reason
found by the run itself (too many clips that cannot be decoded).

`StopSignals` only records that a stop was asked for; the run's checkpoint callback (RunCheckpoint)
saves last.ckpt at the step reached and then raises `RunStopped`, whose message says how to go on.
A second signal exits at once.
"""

from __future__ import annotations

import os
import signal

from ..errors import VagoError
from ..log import say


class RunStopped(VagoError):
    """The run stopped on request after saving its state; `code` is the process's exit status."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


NAMES = {"SIGINT": "Ctrl-C", "SIGTERM": "SIGTERM", "SIGBREAK": "Ctrl-Break"}


def _stop_signals() -> list[signal.Signals]:
    # SIGBREAK exists on Windows only (Ctrl-Break in a console).
    return [getattr(signal, name) for name in NAMES if hasattr(signal, name)]


class StopSignals:
    """While installed, the first stop signal records a request (`requested`: the signal's name) and
    a second one ends the process at once with status 128 + signal number. Only the main thread can
    install handlers; elsewhere (a run started from a thread) the signals keep their behaviour."""

    def __init__(self):
        self.requested: str | None = None
        self.reason: str | None = None  # a stop the run itself asked for (not a signal)
        self.code = 0
        self._previous: dict = {}

    def install(self) -> None:
        if self._previous:
            return
        try:
            for sig in _stop_signals():
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread
            self.uninstall()

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        name = NAMES.get(signal.Signals(signum).name, signal.Signals(signum).name)
        if self.requested is not None:
            # Said on stderr directly: the logging machinery may be in the middle of a line.
            os.write(2, f"\n{name} again: exiting at once; the last saved checkpoint is kept\n".encode())
            os._exit(128 + signum)
        self.requested, self.code = name, 128 + signum
        say(f"{name}: stopping after this step and saving last.ckpt; {name} again exits at once")

    def ask(self, reason: str) -> None:
        """A stop the run itself asks for (it ends with status 1 and `reason` as an error line)."""
        if self.reason is None:
            self.reason = reason

    @property
    def pending(self) -> bool:
        return self.requested is not None or self.reason is not None
