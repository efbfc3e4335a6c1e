"""Benchmark of `prepare`: audio-seconds prepared per wall-second on the demo corpora,
with and without DVAE code precomputation.

    python benchmarks/bench_prepare.py [--workers N] [--base-dvae tiny|xtts]

Writes the demo corpora and a tiny base to a temporary folder first (not timed).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from vago_lightning.data.prepare import PrepareSettings, prepare
from vago_lightning.demo.corpora import write_demo_corpora
from vago_lightning.demo.tiny_base import TinyBaseSpec, write_tiny_base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
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
            f"torch {torch.__version__}, workers {args.workers}"
        )
        for label, base_dir in (("audio only", None), (f"with codes ({args.base_dvae} DVAE)", base)):
            start = time.perf_counter()
            manifest, _ = prepare(
                corpora,
                tmp / f"shards-{base_dir is not None}",
                PrepareSettings(),
                base_dir,
                workers=args.workers,
                progress=False,
            )
            wall = time.perf_counter() - start
            audio = manifest.totals["seconds"]
            print(f"{label:28s} {audio:8.1f} s of audio in {wall:6.1f} s wall: {audio / wall:7.1f} audio-s/s")


if __name__ == "__main__":
    main()
