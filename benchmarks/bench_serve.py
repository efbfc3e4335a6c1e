"""Benchmark of `serve` under load: time to first audio, real-time factor, requests per second and
p50/p95 latency at several concurrencies, and the server's memory after 20 and after 200 requests;
with `--coqui`, first the same model served by coqui-tts's own `tts-server` against ours, side by side.

    python benchmarks/bench_serve.py --model exported/demo-combined [--voice demo_host]
        [--concurrency 1 4 8] [--requests 8] [--max_new_tokens 60] [--memory 20 200] [--coqui]
    python benchmarks/bench_serve.py --release_shaped     # a `tiny-base --like_release` folder (2.1 GB)

`--coqui` needs Flask (`pip install -e '.[bench]'`). coqui's server runs as its users start it
(`tts-server --model_path DIR --config_path DIR/config.json --language_idx hu`: fp32, the whole answer
at once, under its lock), with one change: its GPT's cap on audio tokens per sentence is set to ours,
since a random model never says stop and coqui's own cap is 605 tokens (28 s) per sentence. Both
answer the same texts in turn (one client); the real-time factor is wall time over the seconds of
speech made (coqui's server appends 0.42 s of silence to every sentence; that is printed but not
counted as speech); first audio is the first byte of the body for a three-sentence text (ours
streamed PCM, coqui's WAV).

The server is `python -m vago_lightning serve` in its own process on a free loopback port, as a user
starts it; every request streams PCM (the first audio is the first byte of the body). Texts are the
default Hungarian sentences of `generate`. A random model never says stop, so each sentence runs to
its cap (`--max_new_tokens`): the real-time factor is the generation time over the audio it made.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import soundfile as sf

from vago_lightning.constants import OUTPUT_RATE
from vago_lightning.inference.synthesis import DEFAULT_SENTENCES

TEXTS = [s.text for s in DEFAULT_SENTENCES]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: Path, flags: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "vago_lightning", "serve", "--model", str(model), "--port", str(port), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, wait_ready(process, f"http://127.0.0.1:{port}", "/health")


def wait_ready(process: subprocess.Popen, url: str, path: str) -> str:
    started = time.perf_counter()
    while True:
        if process.poll() is not None:
            sys.exit(f"the server exited ({process.returncode}); run it by hand to see why")
        try:
            if httpx.get(f"{url}{path}", timeout=5).status_code == 200:
                print(f"server ready in {time.perf_counter() - started:.1f} s")
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)


def one(url: str, voice: str, text: str, response_format: str = "pcm", **extra) -> dict:
    body = {"model": "tts-1", "input": text, "voice": voice, "response_format": response_format, **extra}
    start = time.perf_counter()
    first, data = None, bytearray()
    with httpx.stream("POST", f"{url}/v1/audio/speech", json=body, timeout=3600) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes():
            if chunk and first is None:
                first = time.perf_counter() - start
            data += chunk
    seconds = time.perf_counter() - start
    audio = len(data) / 2 / OUTPUT_RATE if response_format == "pcm" else sf.info(io.BytesIO(bytes(data))).duration
    return {"ttfa": first or seconds, "latency": seconds, "audio": audio}


COQUI_SERVER = """
import os
from TTS.server import server  # parses sys.argv and loads the model, as `tts-server` does
server.api.synthesizer.tts_model.gpt.max_gen_mel_tokens = int(os.environ["BENCH_TOKEN_CAP"])
server.main()
"""


def start_coqui(model: Path, language: str, cap: int, scratch: Path, device: str) -> tuple[subprocess.Popen, str]:
    """coqui-tts's own server on a copy of model.pth (coqui rewrites a release-form model.pth in place
    when it loads it); the other files are linked."""
    import shutil

    folder = scratch / "coqui-model"
    folder.mkdir()
    for item in Path(model).iterdir():
        if item.name == "model.pth":
            shutil.copyfile(item, folder / item.name)
        else:
            (folder / item.name).symlink_to(item.resolve())
    port = free_port()
    args = ["--model_path", str(folder), "--config_path", str(folder / "config.json")]
    args += ["--language_idx", language, "--port", str(port), "--device", device]
    env = dict(os.environ, BENCH_TOKEN_CAP=str(cap))
    process = subprocess.Popen(
        [sys.executable, "-c", COQUI_SERVER, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    return process, wait_ready(process, f"http://127.0.0.1:{port}", "/")


def side_by_side(urls: dict[str, str], voice: str, rounds: int, temperature: float) -> None:
    """Sequential requests of the default sentences on each server, then one three-sentence text. Ours
    samples at coqui's temperature (the model config's; coqui's server takes none from a request)."""
    from TTS.utils.synthesizer import PAD_SILENCE_SAMPLES  # coqui appends this silence to every sentence

    three = " ".join(TEXTS[:3])
    print("| server | sentences | audio received | speech | RTF (speech) | RTF (received) | first audio, 3 sentences |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    figures = {}
    for name, url in urls.items():
        fmt, extra = ("pcm", {"temperature": temperature}) if name == "ours" else ("wav", {})
        one(url, voice, TEXTS[0], fmt, **extra)  # warm-up
        runs = [one(url, voice, text, fmt, **extra) for _ in range(rounds) for text in TEXTS]
        wall, audio = sum(r["latency"] for r in runs), sum(r["audio"] for r in runs)
        # Each text is one sentence: ours answers it alone; coqui's adds its pause after it.
        speech = audio - (len(runs) * PAD_SILENCE_SAMPLES / OUTPUT_RATE if name == "coqui" else 0.0)
        first = one(url, voice, three, fmt, **extra)
        figures[name] = (wall / speech, first["ttfa"])
        print(
            f"| {name} | {len(runs)} | {audio:.1f} s | {speech:.1f} s | {wall / speech:.2f} | {wall / audio:.2f} | "
            f"{first['ttfa']:.2f} s |"
        )
    (ours_rtf, ours_first), (coqui_rtf, coqui_first) = figures["ours"], figures["coqui"]
    print(
        f"ours vs coqui: real-time factor (speech) {coqui_rtf / ours_rtf:.2f}x better; "
        f"first audio in {ours_first / coqui_first:.2f} of coqui's time"
    )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def load(url: str, voice: str, concurrency: int, requests: int) -> dict:
    texts = [TEXTS[i % len(TEXTS)] for i in range(requests)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda t: one(url, voice, t), texts))
    wall = time.perf_counter() - start
    latencies = [r["latency"] for r in results]
    return {
        "concurrency": concurrency,
        "requests": requests,
        "ttfa_p50": statistics.median(r["ttfa"] for r in results),
        "rtf": wall / sum(r["audio"] for r in results),  # wall time per second of audio served
        "rps": requests / wall,
        "p50": percentile(latencies, 0.5),
        "p95": percentile(latencies, 0.95),
    }


def rss_mb(url: str) -> float:
    return httpx.get(f"{url}/health", timeout=10).json()["rss_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a model folder in the release layout")
    parser.add_argument("--release_shaped", action="store_true", help="write and serve a like_release base")
    parser.add_argument("--voice", default="demo_host")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 8], help="none: skip the load part")
    parser.add_argument("--requests", type=int, default=8, help="requests per concurrency (at least the concurrency)")
    parser.add_argument("--max_new_tokens", type=int, default=60, help="audio tokens per sentence (60 = 2.8 s)")
    parser.add_argument("--memory", type=int, nargs="*", default=[20, 200], help="RSS after this many requests")
    parser.add_argument("--coqui", action="store_true", help="first, coqui-tts's tts-server against ours")
    parser.add_argument("--rounds", type=int, default=1, help="with --coqui: passes over the sentences")
    parser.add_argument("--language", default="hu")
    parser.add_argument("--device", default="cpu", help="cpu or cuda, for both servers")
    parser.add_argument("--precision", default="auto", help="ours: auto, fp32, bf16 or int8")
    parser.add_argument("--memory_tokens", type=int, default=8, help="audio tokens per memory request")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if args.release_shaped:
            from vago_lightning.demo.tiny_base import TinyBaseSpec, write_tiny_base

            model = write_tiny_base(Path(tmp) / "release-shaped", TinyBaseSpec(like_release=True))
        if model is None:
            parser.error("give --model DIR or --release_shaped")
        cpu = platform.processor() or platform.machine()
        print(f"machine: {os.cpu_count()} CPU cores ({cpu}), torch threads default; model {model}")
        if args.coqui:
            servers = {}
            try:
                flags = ["--max_new_tokens", str(args.max_new_tokens), "--device", args.device]
                servers["ours"] = start(model, [*flags, "--precision", args.precision])
                coqui_device = "cpu" if args.device == "cpu" else "cuda"
                servers["coqui"] = start_coqui(model, args.language, args.max_new_tokens, Path(tmp), coqui_device)
                temperature = json.loads((model / "config.json").read_text())["temperature"]
                side_by_side({name: url for name, (_, url) in servers.items()}, args.voice, args.rounds, temperature)
            finally:
                for process, _ in servers.values():
                    process.terminate()
                    process.wait()
        flags = ["--device", args.device, "--precision", args.precision]
        if args.concurrency:
            process, url = start(model, ["--max_new_tokens", str(args.max_new_tokens), "--max_queue", "64", *flags])
            try:
                one(url, args.voice, TEXTS[0])  # warm-up
                print("| concurrency | requests | first audio (p50) | RTF | requests/s | p50 latency | p95 latency |")
                print("|---|---|---|---|---|---|---|")
                for c in args.concurrency:
                    r = load(url, args.voice, c, max(args.requests, c))
                    print(
                        f"| {c} | {r['requests']} | {r['ttfa_p50']:.2f} s | {r['rtf']:.2f} | {r['rps']:.3f} | "
                        f"{r['p50']:.2f} s | {r['p95']:.2f} s |"
                    )
            finally:
                process.terminate()
                process.wait()
        if args.memory:
            # Memory: short answers, many of them; what matters is what stays behind per request.
            process, url = start(model, ["--max_new_tokens", str(args.memory_tokens), *flags])
            try:
                done, marks = 0, {}
                print(f"RSS after start: {rss_mb(url):.0f} MB")
                for mark in sorted(args.memory):
                    while done < mark:
                        one(url, args.voice, TEXTS[done % len(TEXTS)])
                        done += 1
                    marks[mark] = rss_mb(url)
                    print(f"RSS after {mark} requests: {marks[mark]:.0f} MB")
                first, last = marks[min(marks)], marks[max(marks)]
                print(f"growth from {min(marks)} to {max(marks)} requests: {100 * (last - first) / first:+.1f}%")
            finally:
                process.terminate()
                process.wait()


if __name__ == "__main__":
    main()
