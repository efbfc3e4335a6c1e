"""prepare that goes on after a kill: each clip's result (its encoded audio and codes, or why it was
rejected) is appended to `<out>/.resume-<corpus>/results.bin` as soon as it is known. A rerun of the
same command with the same inputs and settings replays those results instead of processing the clips
again, then processes the rest; the shards come out as an uninterrupted run writes them, since
everything after the per-clip work is computed from the same results in the same order. A changed
input or setting starts over, saying why. The folder is removed once the corpus is published.
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

from ..log import say

_LENGTH = struct.Struct("<Q")  # each record: its length, then the pickled result


class ClipResults:
    """The results of one corpus's clips, kept across runs of prepare."""

    def __init__(self, folder: Path, fingerprint: str, settings: dict, corpus: str):
        self.folder = folder
        self.path = folder / "results.bin"
        stamp = {"fingerprint": fingerprint, "settings": settings}
        self.kept = 0
        earlier = self._stamp()
        if earlier is not None and earlier != stamp:
            changed = sorted(k for k in settings if earlier.get("settings", {}).get(k) != settings[k])
            why = f"settings changed ({', '.join(changed)})" if changed else "its input files changed"
            say(f"{corpus}: {why} since the interrupted prepare; its clips are processed again from the start")
            shutil.rmtree(folder, ignore_errors=True)
        elif earlier is not None:
            self.kept = self._complete_records()
            if self.kept:
                say(f"{corpus}: going on after an interrupted prepare: {self.kept} clips were processed already")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "stamp.json").write_text(json.dumps(stamp), encoding="utf-8")
        self.file = open(self.path, "a+b")  # noqa: SIM115 - closed by close()

    def _stamp(self) -> dict | None:
        try:
            return json.loads((self.folder / "stamp.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _complete_records(self) -> int:
        """Records written whole; a record cut by the kill is dropped from the file."""
        count, end = 0, 0
        if not self.path.is_file():
            return 0
        size = self.path.stat().st_size
        with open(self.path, "r+b") as f:
            while end + _LENGTH.size <= size:
                (length,) = _LENGTH.unpack(f.read(_LENGTH.size))
                if end + _LENGTH.size + length > size:
                    break
                f.seek(length, 1)
                end += _LENGTH.size + length
                count += 1
            f.truncate(end)
        return count

    def replay(self) -> Iterator[dict]:
        """The results kept from earlier runs, one at a time."""
        with open(self.path, "rb") as f:
            for _ in range(self.kept):
                (length,) = _LENGTH.unpack(f.read(_LENGTH.size))
                yield pickle.loads(f.read(length))  # written by record() below, in this folder

    def record(self, results: Iterator[dict]) -> Iterator[dict]:
        """Pass `results` through, appending each to the file first."""
        for result in results:
            data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
            self.file.write(_LENGTH.pack(len(data)) + data)
            self.file.flush()
            yield result

    def close(self) -> None:
        self.file.close()

    def done(self) -> None:
        """The corpus is published: the results are in its shards."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)
