"""Benchmark of `prepare`: audio-seconds prepared per wall-second on the demo corpora,
with and without DVAE code precomputation, and the CPU time (user + sys, every thread) each took.

    python benchmarks/bench_prepare.py [--workers N] [--batch N] [--device cpu|cuda] [--base-dvae tiny|xtts]

Writes the demo corpora and a tiny base to a temporary folder first (not timed). The models load
inside the timed call, as in a `prepare` command.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from vago_lightning.data.prepare import BATCH, PrepareSettings, prepare
from vago_lightning.demo.corpora import write_demo_corpora
from vago_lightning.demo.tiny_base import TinyBaseSpec, write_tiny_base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="prepare's threads")
    parser.add_argument("--batch", type=int, default=BATCH, help="clips per batch (at most)")
    parser.add_argument("--device", default="cpu", help="where the DVAE and the speaker encoder run")
    parser.add_argument(
        "--base-dvae",
        choices=["tiny", "xtts"],
        default="xtts",
        help="DVAE size for the code pass (xtts: the release's 51.5 M params)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_demo_corpora(tmp / "corpora")
        base = write_tiny_base(tmp / "base", TinyBaseSpec(dvae=args.base_dvae))
        corpora = {"quiz": tmp / "corpora" / "quiz", "interview": tmp / "corpora" / "interview"}
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}, workers {args.workers}, batch {args.batch}, device {args.device}"
        )
        for label, base_dir in (("audio only", None), (f"with codes ({args.base_dvae} DVAE)", base)):
            start, cpu = time.perf_counter(), _cpu_seconds()
            manifest, _ = prepare(
                corpora,
                tmp / f"shards-{base_dir is not None}",
                PrepareSettings(),
                base_dir,
                workers=args.workers,
                progress=False,
                batch=args.batch,
                device=args.device,
            )
            wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
            audio = manifest.totals["seconds"]
            print(
                f"{label:28s} {audio:8.1f} s of audio in {wall:6.1f} s wall: {audio / wall:7.1f} audio-s/s "
                f"({cpu:.1f} s CPU)"
            )


def _cpu_seconds() -> float:
    """User + system time of this process (all its threads) and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
