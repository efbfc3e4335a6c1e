"""Writing outputs so that a reader sees the old version or the new one, never half of one."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def publish_dir(final: Path):
    """Yield a fresh folder beside `final`; when the block ends normally it replaces `final` by
    renames. On an error the partial folder is removed; on a kill (or KeyboardInterrupt) it stays
    as `.tmp-<name>-*`, which readers never look at and `prepare` sweeps away."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
    except Exception as err:
        if is_disk_full(err):  # how far it got: the caller says how much space that was
            err.partial_bytes = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` in one rename; an unchanged file is left alone (a re-run changes nothing)."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Large outputs (checkpoints, shards): written through one sink, so that their size and hash come
# for free and a disk that fills up is told apart from any other failure.

NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}  # disk full, or over the user's quota


def _write(f, data) -> int:
    """The one low-level write of every sink (tests make it fail part-way, as a full disk does)."""
    return f.write(data)


class Sink:
    """A binary file being written: counts its bytes, hashes them when asked, and remembers the
    OSError a write raised (torch.save turns it into a RuntimeError that has lost the errno)."""

    def __init__(self, path: Path, sha256: bool = False):
        self.path = Path(path)
        self.file = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        self.size = 0
        self.digest = hashlib.sha256() if sha256 else None
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            written = _write(self.file, data)
        except OSError as err:
            self.error = err
            raise
        view = memoryview(data)
        self.size += view.nbytes
        if self.digest is not None:
            self.digest.update(view)
        return written

    def flush(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as err:
            self.error = err
            raise

    def close(self) -> None:
        try:
            self.file.close()
        except OSError as err:  # the last buffered bytes are written here
            self.error = self.error or err
            raise

    @property
    def disk_full(self) -> bool:
        return self.error is not None and self.error.errno in NO_SPACE

    def sha256(self) -> str:
        return self.digest.hexdigest()


def is_disk_full(err: BaseException) -> bool:
    """Whether `err` (or what caused it) is a write that found no space left."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in NO_SPACE:
            return True
        err = err.__cause__ or err.__context__
    return False


def free_bytes(folder: Path) -> int:
    """Free space on the disk that holds `folder` (or its nearest existing parent)."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
