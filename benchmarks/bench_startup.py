"""Benchmark of the tools' fixed cost: whole commands as a user types them, from the process's start
to its exit (or, for `serve`, until it listens and until it is ready), several runs each.

    python benchmarks/bench_startup.py [--runs 7] [--cases help prepare-help ...] [--code DIR] [--vs DIR]
        [--imports] [--work DIR]

Cases: `help` (`python -m vago_lightning --help`), `version`, `prepare-help`, `fit-help`, `prepare-2`
(a 2-clip `prepare` without a base model: decoding, checks, the speaker check), `prepare-2-base` (the same
with `--base_model` on a tiny base: DVAE codes and token counts too), `serve` (`serve --model` on a tiny
base, an XTTS-v2 release layout: until the port accepts a connection, then until `/health` says ready),
`prepare-90` (the first 90 clips of the demo interview corpus with a 6 x 512 base and the release's
DVAE, as `bench_fit.py` prepares them) and `serve-release` (`serve` on a `tiny-base --like_release`
folder: the release's 441 M GPT, 2.1 GB, with `../shared/xtts-release/config.json` where it is there);
the last two are not in the default set.

Each command runs `--runs` times after one warm-up run that is not counted (the files it reads are then
in the page cache, as on a second use); every `prepare` writes to a new folder. Printed per case: the
median, min and max of wall seconds, CPU seconds (user + sys of the process and its children) and the
peak RSS. `--code DIR` runs another checkout's package (its `vago_lightning/` folder on PYTHONPATH), to
measure the code before a change on the same machine; `--vs DIR` runs a second checkout's package
in turn with it (A B A B ...), and prints both and the ratio of each pair, which holds when the
machine's speed drifts. `--imports` adds, per case, one run under
`python -X importtime`: the seconds spent importing and the heavy packages imported.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CASES = ["help", "version", "prepare-help", "fit-help", "prepare-2", "prepare-2-base", "serve"]
HEAVY = ["torch", "lightning", "transformers", "TTS", "tensorboard", "scipy", "librosa", "numba", "resemblyzer"]
HEAVY += ["silero_vad", "fastapi", "uvicorn", "jsonargparse", "matplotlib", "torchmetrics", "peft", "webdataset"]


def fixtures(work: Path, cases: list[str]) -> dict:
    """A tiny base, two espeak clips in coqui's format and, for prepare-90, the first 90 clips of the demo
    interview corpus and a 6 x 512 base with the release's DVAE. Made in a child process, so that this
    one stays small (a child's peak RSS counts its parent's pages until it starts its own program)."""
    found = {"base": work / "tiny-base", "two": work / "two-clips"}
    if "prepare-90" in cases:
        found |= {"ninety": work / "bench", "big_base": work / "base-6x512"}
    release_config = REPO.parent / "shared" / "xtts-release" / "config.json"
    if "serve-release" in cases:
        found["release_base"] = work / "release-base"
    script = f"""
import sys
from pathlib import Path
from vago_lightning.demo.corpora import QUIZ_VOICE, synthesize
from vago_lightning.demo.tiny_base import TinyBaseSpec, write_tiny_base
work = Path({str(work)!r})
if not (work / "tiny-base").is_dir():
    write_tiny_base(work / "tiny-base", TinyBaseSpec())
two = work / "two-clips"
if not (two / "metadata.csv").is_file():
    (two / "wavs").mkdir(parents=True, exist_ok=True)
    lines = ["audio_file|text|speaker_name"]
    for i, text in enumerate(["Jó estét kívánok, kedves nézők!", "Melyik folyó szeli ketté Budapestet?"]):
        synthesize(text, QUIZ_VOICE, two / "wavs" / f"clip_{{i}}.wav")
        lines.append(f"wavs/clip_{{i}}.wav|{{text}}|host")
    (two / "metadata.csv").write_text("\\n".join(lines) + "\\n", encoding="utf-8")
if {"prepare-90" in cases}:
    sys.path.insert(0, {str(REPO / "benchmarks")!r})
    from bench_fit import make_corpus
    if not (work / "bench" / "metadata.csv").is_file():
        make_corpus(work, 90)
    if not (work / "base-6x512").is_dir():
        write_tiny_base(work / "base-6x512", TinyBaseSpec(gpt_layers=6, gpt_dim=512, gpt_heads=8, dvae="xtts"))
if {"serve-release" in cases} and not (work / "release-base").is_dir():
    config = Path({str(release_config)!r})
    spec = TinyBaseSpec(like_release=True, config=config if config.is_file() else None)
    write_tiny_base(work / "release-base", spec)
"""
    subprocess.run([sys.executable, "-c", script], check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    return found


def command(case: str, files: dict, out: Path, port: int) -> list[str]:
    tool = [sys.executable, "-m", "vago_lightning"]
    prepare = [*tool, "prepare", "--out", str(out), "--quiet", "--workers", "2"]
    return {
        "help": [*tool, "--help"],
        "version": [*tool, "--version"],
        "prepare-help": [*tool, "prepare", "--help"],
        "fit-help": [*tool, "fit", "--help"],
        "prepare-2": [*prepare, "--corpus", f"two={files['two']}"],
        "prepare-2-base": [*prepare, "--corpus", f"two={files['two']}", "--base_model", str(files["base"])],
        "prepare-90": [
            *prepare,
            "--corpus",
            f"interview={files.get('ninety')}",
            "--base_model",
            f"{files.get('big_base')}",
        ],
        "serve": [*tool, "serve", "--model", str(files["base"]), "--port", str(port), "--log_level", "warning"],
        "serve-release": [*tool, "serve", "--model", f"{files.get('release_base')}", "--port", str(port)]
        + ["--log_level", "warning"],
    }[case]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_once(case: str, files: dict, work: Path, env: dict, python_flags: list[str]) -> dict:
    out = Path(tempfile.mkdtemp(dir=work, prefix="out-"))
    port = free_port()
    cmd = command(case, files, out / "shards", port)
    cmd = [cmd[0], *python_flags, *cmd[1:]]
    log = out / "stderr.txt"
    with open(log, "w") as err:  # a file, not a pipe: -X importtime writes more than a pipe holds
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=err)
        found = {}
        if case.startswith("serve"):
            found["listens"] = _until(proc, start, lambda: _connects(port))
            found["ready"] = _until(proc, start, lambda: _healthy(port))
            proc.send_signal(signal.SIGINT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = log.read_text(errors="replace")
    shutil.rmtree(out, ignore_errors=True)
    return {
        "wall": found.get("ready", wall),
        **found,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
        "stderr": stderr,
        "rc": proc.returncode,
    }


def _until(proc, start: float, ready, timeout: float = 600) -> float:
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited with {proc.returncode} before it was ready")
        if ready():
            return time.perf_counter() - start
        time.sleep(0.005)
    raise SystemExit("serve: not ready in time")


def _connects(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def imports(stderr: str) -> tuple[float, list[str]]:
    """Seconds spent importing (the sum of each module's own time) and the heavy packages imported."""
    own, names = 0, set()
    for m in re.finditer(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", stderr):
        own += int(m[1])
        names.add(m[2].split(".")[0])
    return own / 1e6, [h for h in HEAVY if h in names]


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES)
    parser.add_argument("--code", type=Path, default=REPO, help="the checkout whose package is measured")
    parser.add_argument("--work", type=Path, default=None, help="where the fixtures are kept (default: temporary)")
    parser.add_argument("--vs", type=Path, default=None, help="a second checkout, run in turn with --code")
    parser.add_argument("--imports", action="store_true", help="one more run per case under -X importtime")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-startup-"))
    work.mkdir(parents=True, exist_ok=True)
    files = fixtures(work, args.cases)
    codes = [args.code] + ([args.vs] if args.vs else [])
    envs = [dict(os.environ, PYTHONPATH=str(code.resolve())) for code in codes]
    for env in envs:
        env.pop("VAGO_API_KEY", None)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; python "
        f"{platform.python_version()}; code {', '.join(str(c.resolve()) for c in codes)}; {args.runs} runs "
        "after 1 warm-up" + (", in turn" if args.vs else "")
    )
    print("| case | code | wall s: median (min-max) | CPU s | peak RSS MB | until it listens s |")
    print("|---|---|---|---|---|---|")
    for case in args.cases:
        firsts = [run_once(case, files, work, env, []) for env in envs]
        if any(f["rc"] not in (0, -signal.SIGINT, 130) for f in firsts):
            rcs = ", ".join(str(f["rc"]) for f in firsts)
            print(f"| `{case}` | | exit {rcs} (not in every code) | | | |")
            continue
        runs = [[] for _ in envs]
        for _ in range(args.runs):
            for got, env in zip(runs, envs):
                got.append(run_once(case, files, work, env, []))
        for code, got in zip(codes, runs):
            failed = [r for r in got if r["rc"] not in (0, -signal.SIGINT, 130)]
            if failed:
                raise SystemExit(f"{case}: exit {failed[0]['rc']}\n{failed[0]['stderr'][-2000:]}")
            listens = spread([r["listens"] for r in got]) if case.startswith("serve") else ""
            print(
                f"| `{case}` | {code.name} | {spread([r['wall'] for r in got])} | {spread([r['cpu'] for r in got])} | "
                f"{spread([r['rss_mb'] for r in got], '{:.0f}')} | {listens} |",
                flush=True,
            )
        if args.vs:
            ratios = [b["wall"] / a["wall"] for a, b in zip(*runs)]
            print(f"|   `{case}`: {args.vs.name} / {args.code.name}, pair by pair | {spread(ratios)} | | | | |")
        if args.imports:
            for code, env in zip(codes, envs):
                seconds, heavy = imports(run_once(case, files, work, env, ["-X", "importtime"])["stderr"])
                heavy = ", ".join(heavy) or "none of the heavy"
                print(f"|   imports of `{case}` | {code.name} | {seconds:.2f} s importing: {heavy} | | | |")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
