"""Shards as prepare wrote them: the pre-flight's size (and, asked for, SHA-256) check against the
manifest, and reading a shard over a connection that may drop.

A shard cut short (a copy that did not finish) or altered (a flaky USB disk) is named before the first
step, not found when training reaches it. Local sizes come from the file system, http(s) sizes from the
server's Content-Length; other addresses (pipe:, gs://) are checked only with `verify`.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.request
from pathlib import Path

from ..errors import DataError
from ..files import sha256_file
from .manifest import Manifest, is_url, join, prepare_command


def remote_size(url: str) -> int | None:
    """The Content-Length a HEAD request reports, or None when the server gives none."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - http(s) only, checked
            length = response.headers.get("Content-Length")
    except OSError as err:
        raise DataError(f"{url}: cannot be reached ({err}); check --data.shards_dir and the server") from None
    return int(length) if length is not None else None


def shard_size(location: str) -> int | None:
    if not is_url(location):
        try:
            return os.path.getsize(location)
        except FileNotFoundError:
            return -1
    if location.startswith(("http://", "https://")):
        return remote_size(location)
    return None


def shard_sha256(location: str) -> str:
    if not is_url(location):
        return sha256_file(Path(location))
    import webdataset as wds

    digest = hashlib.sha256()
    with wds.gopen(location) as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_shards(manifest: Manifest, shards_dir: str, corpora: list[str], verify: bool = False) -> str:
    """Compare every shard of `corpora` with the manifest's record: its size always (where the address
    tells it), its SHA-256 with `verify`. Raises one DataError line naming the shard; returns what was
    checked."""
    where = join(shards_dir, "manifest.json")
    unrecorded = [name for name in corpora if not manifest.corpora[name].files]
    if unrecorded:
        return (
            f"shard sizes are not recorded in {where} for {', '.join(unrecorded)} (an older prepare): "
            "run prepare again to add them; those shards are not checked"
        )
    checked = sized = 0
    for name in corpora:
        entry = manifest.corpora[name]
        for shard in entry.shard_names():
            record, location = entry.files.get(shard), join(shards_dir, name, shard)
            if record is None:
                raise DataError(f"{location}: not recorded in {where}; run prepare again")
            redo = (
                f"copy prepare's output folder again, or rewrite the shards with "
                f"`{prepare_command(manifest, shards_dir, [name])}`"
            )
            size = shard_size(location)
            if size == -1:
                raise DataError(f"{location}: missing (listed in {where}); {redo}")
            if size is not None:
                sized += 1
                if size != record["size"]:
                    raise DataError(
                        f"{location}: {size} bytes, but prepare wrote {record['size']}: the shard was cut short "
                        f"or altered (a copy that did not finish?); {redo}"
                    )
            if verify and shard_sha256(location) != record["sha256"]:
                raise DataError(
                    f"{location}: its SHA-256 differs from the one prepare recorded: its bytes changed "
                    f"(a flaky disk or copy?); {redo}"
                )
            checked += 1
    what = "sizes and SHA-256" if verify else "sizes"
    if not verify and sized < checked:
        return f"shards: {sized} of {checked} sizes checked (this address gives none); data.verify true hashes them"
    return f"shards: {what} of {checked} shards match the manifest"


def read_with_retries(read, location: str, retries: int = 4, backoff: float = 1.0, on_retry=None):
    """Run `read()` (which reads a whole shard from `location`), again after a failure, waiting
    backoff, 2 x backoff, ... seconds between tries; local files are not retried. The last failure
    becomes one DataError line."""
    attempt = 0
    while True:
        try:
            return read()
        except Exception as err:  # noqa: BLE001 - any failure of a remote read is worth another try
            if not is_url(location) or attempt >= retries:
                if not is_url(location):
                    raise
                raise DataError(
                    f"{location}: reading it failed {attempt + 1} times (last: {type(err).__name__}: "
                    f"{str(err)[:160]}); check the server and the network, then run the same command to resume"
                ) from None
            if on_retry is not None:
                on_retry(attempt + 1, err)
            time.sleep(backoff * 2**attempt)
            attempt += 1
