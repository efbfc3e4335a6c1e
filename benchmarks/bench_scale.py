"""Benchmark of the data path at scale: the memory of `prepare` and of the training loader's workers
for corpora of 300, 3,000 and 30,000 short clips, and shard reads per epoch.

    python benchmarks/bench_scale.py [--sizes 300 3000 30000] [--workers 2] [--keep DIR]

Each corpus is a few dozen short espeak phrases re-used under different keys (symbolic links): a third
of the clips in a `quiz` corpus, two thirds in `interview`. Then, each in a process of its own:

- prepare, as `python -m vago_lightning prepare` runs it (DVAE codes from a tiny base, the speaker
  check, `--workers` processes);
- one epoch of the train loader with the real collate and no model step (batch 3, `--workers`
  DataLoader workers started by spawn, so that a worker's memory is its own and not pages it shares
  with its parent).

It prints, per size: the peak RSS of prepare's main process and of its largest worker; of the loader's
main process and of each of its workers; shard reads per epoch against the train shards; and the
most clips a worker held at once. Memory and counts only: no time is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

PHRASES = 40  # distinct recordings re-used under different keys


def write_corpora(root: Path, clips: int) -> dict[str, Path]:
    """`root/quiz` and `root/interview` in coqui's format, `clips` lines in all, every line its own key."""
    from vago_lightning.demo.corpora import INTERVIEW_VOICE, QUIZ_VOICE, SPEAKER, synthesize
    from vago_lightning.demo.text import interview_sentences, quiz_sentences

    sources = root / "sources"
    sources.mkdir(parents=True)
    texts = [" ".join(t.split()[:4]).rstrip(",.?!") + "." for t in quiz_sentences() + interview_sentences(0)]
    texts = list(dict.fromkeys(texts))[:PHRASES]
    for i, text in enumerate(texts):
        synthesize(text, QUIZ_VOICE if i % 2 else INTERVIEW_VOICE, sources / f"phrase_{i:02d}.wav")
    corpora = {"quiz": root / "quiz", "interview": root / "interview"}
    counts = {"quiz": clips // 3, "interview": clips - clips // 3}
    for name, folder in corpora.items():
        (folder / "wavs").mkdir(parents=True)
        lines = ["audio_file|text|speaker_name"]
        for i in range(counts[name]):
            phrase = (i * 7) % len(texts)
            (folder / "wavs" / f"{name}_{i:06d}.wav").symlink_to(sources / f"phrase_{phrase:02d}.wav")
            lines.append(f"wavs/{name}_{i:06d}.wav|{texts[phrase]}|{SPEAKER}")
        (folder / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return corpora


def peak_mb(pid: int | str = "self") -> float | None:
    """The peak RSS of a process (VmHWM, which starts afresh at exec; `ru_maxrss` would carry over the
    RSS of the parent that forked it), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


class ChildPeaks(threading.Thread):
    """Polls the peak RSS of this process's children (prepare's worker processes) while they live."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peaks: dict[int, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        me = os.getpid()
        while not self.done.wait(0.2):
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == me and (peak := peak_mb(stat.parent.name)) is not None:
                    self.peaks[int(stat.parent.name)] = max(peak, self.peaks.get(int(stat.parent.name), 0.0))


# --- the phases, each in a fresh process --------------------------------------------------------


def phase_prepare(work: Path, workers: int) -> dict:
    from vago_lightning.data.prepare import PrepareSettings, prepare

    corpora = {"quiz": work / "corpora" / "quiz", "interview": work / "corpora" / "interview"}
    children = ChildPeaks()
    children.start()
    manifest, _ = prepare(corpora, work / "shards", PrepareSettings(), work / "base", workers=workers, progress=False)
    children.done.set()
    children.join()
    return {
        "main_mb": peak_mb(),
        "worker_mb": max(children.peaks.values(), default=0.0),
        "train": manifest.totals["train"],
        "val": manifest.totals["val"],
        "train_shards": sum(len(e.splits["train"].shards) for e in manifest.corpora.values()),
    }


if os.environ.get("BENCH_SCALE_PHASE") == "loader":  # here and in the spawned workers, which import this file
    from vago_lightning.data.datamodule import PlannedShardDataset

    class Measured(PlannedShardDataset):
        """Writes, at the end of each worker's pass, its peak RSS, shard reads and most clips held."""

        report_dir = ""

        def __iter__(self):
            from torch.utils.data import get_worker_info

            batches = 0
            for batch in super().__iter__():
                batches += 1
                yield batch
            info = get_worker_info()
            worker = info.id if info else 0
            report = {
                "worker": worker,
                "peak_mb": peak_mb(),
                "batches": batches,
                "shard_reads": getattr(self, "shard_reads", None),
                "peak_cached": getattr(self, "peak_cached", None),
            }
            Path(self.report_dir, f"worker-{worker}.json").write_text(json.dumps(report))


def phase_loader(work: Path, workers: int) -> dict:
    from vago_lightning.data.datamodule import ShardDataModule

    reports = work / "worker-reports"
    reports.mkdir(exist_ok=True)
    for stale in reports.glob("*.json"):
        stale.unlink()
    dm = ShardDataModule(
        shards_dir=str(work / "shards"),
        base_model=str(work / "base"),
        num_workers=workers,
        multiprocessing_context="spawn" if workers else None,
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.dataset.__class__ = Measured
    loader.dataset.report_dir = str(reports)
    clips = sum(len(batch.key) for batch in loader)
    per_worker = [json.loads(p.read_text()) for p in sorted(reports.glob("*.json"))]
    return {"main_mb": peak_mb(), "clips": clips, "batches": len(loader), "workers": per_worker}


# --- the driver -------------------------------------------------------------------------------


def run_phase(phase: str, work: Path, workers: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--phase", phase, "--work", str(work), "--workers", str(workers)],
        env=dict(os.environ, BENCH_SCALE_PHASE=phase),
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 3_000, 30_000])
    parser.add_argument("--workers", type=int, default=2, help="prepare processes and DataLoader workers")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--phase", choices=["prepare", "loader"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        run = phase_prepare if args.phase == "prepare" else phase_loader
        print(json.dumps(run(args.work, args.workers)))
        return

    from vago_lightning.demo.tiny_base import TinyBaseSpec, write_tiny_base

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    print(f"{os.cpu_count()} cores, {args.workers} prepare processes and DataLoader workers, work in {root}")
    header = (
        "| clips | train | prepare main | prepare worker | loader main | loader workers | "
        "shard reads / train shards | most clips held by a worker |"
    )
    rows = [header, "|---:|---:|---:|---:|---:|---|---|---:|"]
    for size in args.sizes:
        work = root / f"n{size}"
        if not (work / "corpora").is_dir():
            write_corpora(work / "corpora", size)
        if not (work / "base").is_dir():
            write_tiny_base(work / "base", TinyBaseSpec())
        shutil.rmtree(work / "shards", ignore_errors=True)  # else prepare finds them up to date
        prep = run_phase("prepare", work, args.workers)
        load = run_phase("loader", work, args.workers)
        assert load["clips"] == prep["train"], (load["clips"], prep["train"])
        workers = load["workers"]
        reads = sum(w["shard_reads"] or 0 for w in workers)
        worker_mb = " / ".join(f"{w['peak_mb']:.0f}" for w in workers)
        rows.append(
            f"| {size:,} | {prep['train']:,} | {prep['main_mb']:.0f} MB | {prep['worker_mb']:.0f} MB | "
            f"{load['main_mb']:.0f} MB | {worker_mb} MB | "
            f"{reads} / {prep['train_shards']} | {max((w['peak_cached'] or 0) for w in workers)} |"
        )
        print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
