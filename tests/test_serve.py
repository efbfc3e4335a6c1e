"""`serve`: a real uvicorn server on a free loopback port with the demo export; real HTTP clients,
the official OpenAI SDK, and headless Chromium. No mocks."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from vago_lightning.constants import OUTPUT_RATE

from browser import Browser, chromium_path

KEY = "test-key-3f9a"
# Short answers keep the tests fast: the tiny random model never says stop, so every sentence runs
# to the cap; 8 audio tokens (~0.37 s) in chunks of 4 (the HiFi-GAN decoder is most of a request's
# time with a GPT this small).
FAST = ["--max_new_tokens", "8", "--stream_chunk_size", "4"]
TEXTS = [
    "Jó estét kívánok!",
    "Melyik folyó szeli ketté Budapestet?",
    "A helyes válasz a C.",
    "Gratulálok, Ön továbbjutott!",
    "Most jön a következő kérdés.",
    "Hát, ez jó kérdés.",
    "Erről még senki nem kérdezett.",
    "Köszönöm, hogy itt lehettem.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A `python -m vago_lightning serve` process and its address."""

    def __init__(self, model: Path, cwd: Path, *flags: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cwd = cwd
        self.log = open(cwd / "server.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vago_lightning", "serve", "--model", str(model), "--port", str(self.port), *flags],
            cwd=cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (cwd / "server.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            time.sleep(0.5)
        raise TimeoutError((cwd / "server.log").read_text())

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=10).json()

    def wait_health(self, check, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.health()
            if check(state):
                return state
            time.sleep(0.1)
        raise TimeoutError(f"health never satisfied the check: {state}")

    def speech(self, text: str, headers: dict | None = None, **fields) -> httpx.Response:
        body = {"model": "tts-1", "input": text, "voice": "demo_host", "response_format": "pcm", **fields}
        return httpx.post(f"{self.url}/v1/audio/speech", json=body, headers=headers, timeout=300)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture(scope="module")
def reference(demo_corpora):
    root, _ = demo_corpora
    return root / "quiz" / "wavs" / "quiz_0002.wav"


@pytest.fixture(scope="module")
def server(exported, reference, tmp_path_factory):
    """The demo export served as a user would start it, plus a voice from a recording."""
    served = Served(exported, tmp_path_factory.mktemp("serve"), "--voice", f"guest={reference}", *FAST)
    yield served
    served.stop()


@pytest.fixture(scope="module")
def keyed_server(exported, tmp_path_factory):
    """A server that needs a key and lets one request wait."""
    folder = tmp_path_factory.mktemp("serve-key")
    served = Served(
        exported, folder, "--max_queue", "1", "--cors", "https://ok.example", *FAST, env={"VAGO_API_KEY": KEY}
    )
    yield served
    served.stop()


def pcm_audio(data: bytes) -> np.ndarray:
    assert len(data) % 2 == 0
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768


def test_health_voices_and_models(server, exported):
    health = server.health()
    assert health["status"] == "ok" and health["voices"] == 2
    voices = httpx.get(f"{server.url}/v1/audio/voices").json()["voices"]
    assert voices == ["demo_host", "guest"]  # the export's named speaker and the one given at start
    models = [m["id"] for m in httpx.get(f"{server.url}/v1/models").json()["data"]]
    assert models[0] == exported.name and "tts-1" in models


def test_the_openai_sdk_gets_audio(server, tmp_path):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="not-needed-on-loopback")
    response = client.audio.speech.create(
        model="tts-1", voice="guest", input="Jó estét kívánok!", response_format="wav"
    )
    path = tmp_path / "sdk.wav"
    response.write_to_file(path)
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    audio = pcm_audio(data[44:])
    assert len(audio) > 0.2 * OUTPUT_RATE and np.isfinite(audio).all() and np.abs(audio).max() > 0
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="demo_host", input="Hát, ez jó kérdés.", response_format="pcm"
    ) as streamed:
        assert streamed.headers["content-type"] == "audio/pcm"
        assert len(b"".join(streamed.iter_bytes())) > 0


def test_every_format_decodes(server):
    for fmt in ("flac", "mp3", "opus"):
        response = server.speech("Jó estét kívánok!", response_format=fmt)
        assert response.status_code == 200, response.text
        audio, rate = sf.read(io.BytesIO(response.content))
        assert rate in (OUTPUT_RATE, 48000) and len(audio) > 0.15 * rate, fmt
    wav = server.speech("Jó estét kívánok!", response_format="wav")
    pcm = server.speech("Jó estét kívánok!", response_format="pcm")
    assert wav.headers["content-type"] == "audio/wav" and wav.content[44:] == pcm.content  # the same voice, seed


def test_eight_concurrent_requests_each_get_their_own_audio(server):
    alone = {text: server.speech(text).content for text in TEXTS}  # one at a time: the truth
    assert len(set(alone.values())) == len(TEXTS)  # different texts, different audio
    with concurrent.futures.ThreadPoolExecutor(len(TEXTS)) as pool:
        together = dict(zip(TEXTS, pool.map(lambda t: server.speech(t), TEXTS), strict=True))
    for text, response in together.items():
        assert response.status_code == 200, response.text
        assert response.content == alone[text], f"the audio of {text!r} is not its own"


def test_a_client_that_drops_mid_stream_stops_its_generation(server):
    before = server.health()
    long_text = " ".join(f"Ez a {i}. mondat a hosszú szövegből." for i in range(1, 40))
    body = {"model": "tts-1", "input": long_text, "voice": "demo_host", "response_format": "pcm"}
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=body, timeout=120) as response:
        assert response.status_code == 200
        first = next(response.iter_bytes())
        assert first
    # The connection is closed: the generation stops at its next chunk, and the server serves others.
    after = server.wait_health(lambda h: h["cancelled"] > before["cancelled"] and h["queue"]["running"] == 0)
    assert after["served"] == before["served"]
    assert server.speech("Jó estét kívánok!").status_code == 200


def test_long_text_is_split_under_the_limits(server):
    text = ("Ez egy nagyon hosszú mondat vesszők nélkül amely sosem ér véget " * 4).strip() + ". Rövid."
    response = server.speech(text)
    assert response.status_code == 200 and len(response.content) > 0
    four_thousand = ("Ez egy mondat. " * 300)[:4096]
    assert server.speech(four_thousand, max_new_tokens=1).status_code == 400  # not a field of ours


def test_bad_input_is_one_json_line_and_touches_no_file(server):
    base = {"model": "tts-1", "input": "Jó estét!", "voice": "demo_host"}
    cases = {
        "empty input": ({**base, "input": ""}, 400, "input"),
        "blank input": ({**base, "input": "   "}, 400, "input"),
        "input too long": ({**base, "input": "a" * 4097}, 400, "input"),
        "unknown voice": ({**base, "voice": "nobody"}, 400, "voice"),
        "a path as voice": ({**base, "voice": "../../etc/passwd"}, 400, "voice"),
        "an absolute path": ({**base, "voice": "/etc/hostname"}, 400, "voice"),
        "unknown format": ({**base, "response_format": "ogg"}, 400, "response_format"),
        "aac": ({**base, "response_format": "aac"}, 400, "response_format"),
        "too fast": ({**base, "speed": 5}, 400, "speed"),
        "too slow": ({**base, "speed": 0.1}, 400, "speed"),
        "speed as text": ({**base, "speed": "fast"}, 400, "speed"),
        "input as number": ({**base, "input": 123}, 400, "input"),
        "missing voice": ({"model": "tts-1", "input": "Jó estét!"}, 400, "voice"),
        "unknown field": ({**base, "sped": 1.0}, 400, "sped"),
        "unknown model": ({**base, "model": "whisper-1"}, 400, "model"),
        "unknown language": ({**base, "language": "hun"}, 400, "language"),
        "a list": ([1, 2], 400, None),
    }
    for name, (body, status, param) in cases.items():
        response = httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=30)
        assert response.status_code == status, (name, response.text)
        assert "\n" not in response.text.strip() and response.json()["error"]["param"] == param, name
        assert response.json()["error"]["message"], name
    raw = {
        "not JSON": (b"model=tts-1&input=hello", 400),
        "oversized": (json.dumps({**base, "input": "a" * 200_000}).encode(), 413),
    }
    for name, (content, status) in raw.items():
        response = httpx.post(
            f"{server.url}/v1/audio/speech", content=content, headers={"content-type": "application/json"}
        )
        assert response.status_code == status and response.json()["error"]["message"], name
    assert response.json()["error"]["message"] and not any(
        p.name != "server.log" for p in server.cwd.iterdir()
    )  # nothing written beside the server
    assert server.health()["failed"] == 0


def test_the_key_is_required_and_the_queue_is_bounded(keyed_server):
    good = {"Authorization": f"Bearer {KEY}"}
    assert keyed_server.speech("Jó estét!").status_code == 401
    assert keyed_server.speech("Jó estét!", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{keyed_server.url}/v1/audio/voices").status_code == 401
    assert keyed_server.speech("Jó estét!", headers=good).status_code == 200

    # One generation running, one waiting (max_queue 1): the third is told to come back.
    long_text = " ".join(f"Ez a {i}. mondat." for i in range(1, 60))
    body = {"model": "tts-1", "input": long_text, "voice": "demo_host", "response_format": "pcm"}
    with httpx.stream("POST", f"{keyed_server.url}/v1/audio/speech", json=body, headers=good, timeout=120) as first:
        assert first.status_code == 200
        next(first.iter_bytes())
        waiting: dict = {}
        second = threading.Thread(target=lambda: waiting.update(r=keyed_server.speech("Jó estét!", headers=good)))
        second.start()
        keyed_server.wait_health(lambda h: h["queue"]["waiting"] == 1)
        third = keyed_server.speech("Jó estét!", headers=good)
        assert third.status_code == 503 and int(third.headers["Retry-After"]) >= 1
        assert third.json()["error"]["code"] == "queue_full"
    second.join(timeout=120)
    assert waiting["r"].status_code == 200 and len(waiting["r"].content) > 0


def test_browsers_of_other_sites_only_where_cors_allows(server, keyed_server):
    def allowed(served, origin: str):
        preflight = {"Origin": origin, "Access-Control-Request-Method": "POST"}
        response = httpx.options(f"{served.url}/v1/audio/speech", headers=preflight)
        return response.headers.get("access-control-allow-origin")

    assert allowed(server, "https://ok.example") is None  # CORS is off by default
    assert allowed(keyed_server, "https://ok.example") == "https://ok.example"
    assert allowed(keyed_server, "https://evil.example") is None


def test_an_open_bind_without_a_key_is_refused(exported, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vago_lightning", "serve", "--model", str(exported), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "VAGO_API_KEY"},
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--api_key" in lines[0] and "0.0.0.0" in lines[0], result.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "vago_lightning", "serve", "--model", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr


def test_a_release_form_folder_is_served_and_left_as_it_was(exported, tmp_path):
    """The original XTTS-v2 files pickle their config into model.pth; coqui's own loader rewrites that
    file on load. Serving reads it and leaves every file as it was."""
    import shutil
    import threading as th

    import torch

    from vago_lightning.demo.tiny_base import write_release_model_pth
    from vago_lightning.model.base import load_xtts_config
    from vago_lightning.serve.engine import Engine, SpeechSettings

    folder = tmp_path / "XTTS-v2"
    shutil.copytree(exported, folder)
    state = torch.load(exported / "model.pth", weights_only=True)["model"]
    write_release_model_pth(folder / "model.pth", state, load_xtts_config(exported))
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    engine = Engine(folder)
    chunks = list(engine.stream("Jó estét!", "demo_host", SpeechSettings(max_new_tokens=8), th.Event()))
    assert sum(len(c) for c in chunks) > 0
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()} == before
    long_piece = "szó " * 400
    pieces = engine.pieces(long_piece + ". Rövid mondat.", "hu")
    assert all(len(p) <= 224 for p in pieces) and pieces[-1] == "Rövid mondat."
    assert all(len(engine.model.tokenizer.encode(p.lower(), lang="hu")) < 400 for p in pieces)


def test_the_page_plays_what_it_streams(server):
    if chromium_path() is None:
        pytest.skip("chromium not installed (make test installs it)")
    browser = Browser()
    try:
        browser.call("Page.navigate", url=f"{server.url}/")
        browser.wait_for("document.getElementById('voice') && document.getElementById('voice').options.length")
        browser.type_into("#text", "Jó estét kívánok, kezdődik a mai játék!")
        browser.click("#play")
        duration = browser.wait_for(
            "(() => { const a = document.getElementById('player');"
            " return a.src.startsWith('blob:') && a.duration > 0 ? a.duration : 0; })()"
        )
        assert duration > 0.2
        status = browser.evaluate("document.getElementById('status').textContent")
        assert "first audio after" in status, status
        assert browser.evaluate("!document.getElementById('download').hidden")
    finally:
        browser.close()


def test_the_queue_runs_one_job_at_a_time_and_is_bounded():
    """The queue alone (no model): jobs never overlap, each gets only its own chunks, the line past
    its bound is refused, and a job cancelled while it waits never runs."""
    import asyncio

    from vago_lightning.serve.queue import DONE, GenerationQueue, QueueFull

    events: list[str] = []

    gate = threading.Event()

    def produce(name: str):
        def run(stop):
            events.append(f"start {name}")
            gate.wait(10)  # a holds the model until the line is full
            for i in range(3):
                time.sleep(0.01)
                yield f"{name}{i}"
            events.append(f"end {name}")

        return run

    async def main():
        queue = GenerationQueue(max_waiting=2)
        jobs = {"a": queue.submit(produce("a"))}
        while queue.state()["running"] == 0:
            await asyncio.sleep(0.01)
        jobs |= {name: queue.submit(produce(name)) for name in ("b", "c")}  # both wait
        with pytest.raises(QueueFull) as full:
            queue.submit(produce("d"))
        assert full.value.retry_after >= 1 and queue.state() == {"running": 1, "waiting": 2, "max_waiting": 2}
        jobs["c"].cancel()  # it leaves the line before its turn
        gate.set()
        got = {}
        for name, job in jobs.items():
            items = []
            while (item := await job.chunks.get()) is not DONE:
                items.append(item)
            got[name] = items
        queue.shutdown()
        return got, queue.stats

    got, stats = asyncio.run(main())
    assert got["a"] == ["a0", "a1", "a2"] and got["b"] == ["b0", "b1", "b2"] and got["c"] == []
    assert events == ["start a", "end a", "start b", "end b"]  # one after the other, c never started
    assert (stats.served, stats.cancelled, stats.rejected) == (2, 1, 1)
