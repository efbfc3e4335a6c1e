"""The HTTP face of the voice: OpenAI's speech endpoint, the voices, the models, health and a page.

Every answer that is not audio is one JSON line in OpenAI's error shape; bad input is a 4xx and
never touches a file. The model loads in the background, so /health says 503 "loading" until it is
ready; then each request waits its turn in the bounded queue and streams its own audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import formats
from .engine import Engine, SpeechSettings
from .page import PAGE
from .queue import DONE, GenerationQueue, QueueFull

log = logging.getLogger("vago_lightning.serve")

MAX_INPUT_CHARS = 4096  # OpenAI's limit
MAX_BODY_BYTES = 64 * 1024  # 4,096 characters of 4-byte UTF-8 and the other fields fit
OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")  # accepted as names of this model
SETTINGS_ENV = "VAGO_SERVE_SETTINGS"  # how `--workers N` hands the settings to each worker
# The page runs only its own inline script and plays only audio it made itself.
PAGE_POLICY = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; media-src 'self' blob:"


@dataclass
class ServeSettings:
    model: str
    voices: dict[str, list[str]] = field(default_factory=dict)
    device: str = "cpu"
    language: str = "hu"
    max_queue: int = 8
    api_key: str | None = None
    cors: list[str] = field(default_factory=list)
    stream_chunk_size: int = 20
    max_new_tokens: int | None = None
    precision: str = "auto"  # inference.precision: auto, fp32, bf16 or int8
    slots: str | None = None  # with several workers: a folder where each claims its GPU index
    threads: int | None = None  # with several workers on a CPU: each one's share of the cores

    @property
    def model_id(self) -> str:
        return Path(self.model).resolve().name or "xtts"


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None, headers=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}


def error_response(status: int, message: str, param=None, code=None, headers=None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


Temperature = Annotated[float, Field(strict=True, gt=0.0, le=1.5)]
Speed = Annotated[float, Field(strict=True, ge=0.25, le=4.0)]


class SpeechRequest(BaseModel):
    """OpenAI's fields, and three of ours (temperature, language, seed). Unknown fields are refused,
    so a misspelt one does not pass silently."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr
    input: Annotated[StrictStr, Field(max_length=MAX_INPUT_CHARS)]
    voice: Annotated[StrictStr, Field(max_length=200)]
    response_format: StrictStr = "mp3"
    speed: Speed = 1.0
    instructions: StrictStr | None = None  # OpenAI's style prompt: XTTS has none; accepted, unused
    stream_format: StrictStr = "audio"
    temperature: Temperature = 0.65
    language: StrictStr | None = None
    seed: StrictInt = 0


class Server:
    """What one worker holds: its settings, the engine once loaded, the queue."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.engine: Engine | None = None
        self.load_error: str | None = None
        self.queue = GenerationQueue(settings.max_queue)
        self.formats = formats.available_formats()

    def load(self) -> None:
        try:
            self.engine = Engine(
                Path(self.settings.model), self.settings.voices, self.settings.device, self.settings.precision
            )
            log.warning(
                "model %s loaded on %s (%s); voices: %s",
                self.settings.model,
                self.settings.device,
                self.engine.precision,
                ", ".join(self.engine.voices) or "none",
            )
        except Exception as err:  # reported by /health and every request
            self.load_error = f"{type(err).__name__}: {err}"
            log.error("the model could not be loaded: %s", self.load_error)

    def ready(self) -> Engine:
        if self.engine is None:
            if self.load_error:
                raise ApiError(503, f"the model could not be loaded: {self.load_error}", code="model_failed")
            raise ApiError(
                503, "the model is still loading; retry shortly", code="loading", headers={"Retry-After": "5"}
            )
        return self.engine

    def check(self, body: SpeechRequest, engine: Engine) -> SpeechSettings:
        names = [self.settings.model_id, *OPENAI_MODELS]
        if body.model not in names:
            raise ApiError(400, f"model {body.model!r}: unknown; models: {', '.join(names)}", param="model")
        if not body.input.strip():
            raise ApiError(400, "input is empty: give the text to speak", param="input")
        if body.voice not in engine.voices:
            known = ", ".join(engine.voices) or "none (start the server with --voice NAME=WAV)"
            raise ApiError(
                400, f"voice {body.voice[:80]!r}: unknown; a voice is a name, one of: {known}", param="voice"
            )
        if body.response_format not in self.formats:
            raise ApiError(
                400,
                f"response_format {body.response_format[:40]!r}: not available here; "
                f"formats: {', '.join(self.formats)}",
                param="response_format",
            )
        if body.stream_format != "audio":
            raise ApiError(
                400, f"stream_format {body.stream_format[:40]!r}: only 'audio' is served", param="stream_format"
            )
        language = body.language or self.settings.language
        if language not in engine.languages:
            raise ApiError(
                400,
                f"language {language[:20]!r}: not one XTTS-v2 speaks; languages: {', '.join(engine.languages)}",
                param="language",
            )
        return SpeechSettings(
            language=language,
            temperature=body.temperature,
            speed=body.speed,
            seed=body.seed,
            stream_chunk_size=self.settings.stream_chunk_size,
            max_new_tokens=self.settings.max_new_tokens,
        )

    def health(self) -> tuple[int, dict]:
        if self.engine is None:
            status = "failed" if self.load_error else "loading"
            return 503, {"status": status, "error": self.load_error}
        stats = self.queue.stats
        return 200, {
            "status": "ok",
            "model": self.settings.model_id,
            "device": self.settings.device,
            "precision": self.engine.precision,
            "voices": len(self.engine.voices),
            "queue": self.queue.state(),
            "served": stats.served,
            "cancelled": stats.cancelled,
            "rejected": stats.rejected,
            "failed": stats.failed,
            "rss_mb": round(rss_bytes() / 2**20, 1),
            "pid": os.getpid(),
        }


def rss_bytes() -> int:
    """This process's resident memory now (Linux /proc; elsewhere 0)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return 0


class BodyLimit:
    """Refuse a body over `limit` bytes with 413, by its Content-Length or as it arrives."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:
            return await error_response(413, f"the body is over {self.limit} bytes", code="body_too_large")(
                scope, receive, send
            )
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await error_response(413, f"the body is over {self.limit} bytes", code="body_too_large")(
                scope, receive, send
            )


class _TooLarge(Exception):
    pass


def create_app(settings: ServeSettings, load: bool = True) -> FastAPI:
    server = Server(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if load:
            threading.Thread(target=server.load, name="load-model", daemon=True).start()
        yield
        server.queue.shutdown()

    app = FastAPI(
        title="vago_lightning voice server", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.server = server

    @app.exception_handler(ApiError)
    async def api_error(request, err: ApiError):
        return error_response(err.status, err.message, err.param, err.code, err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, err: RequestValidationError):
        return error_response(400, *describe_validation(err))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, err):
        return error_response(err.status_code, str(err.detail), headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request, err):
        log.exception("unexpected error")
        return error_response(500, f"internal error: {type(err).__name__}", code="internal")

    async def authorized(request: Request) -> None:
        key = settings.api_key
        if not key:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, f"Bearer {key}".encode()):
            raise ApiError(
                401,
                "missing or wrong API key: send the header Authorization: Bearer KEY",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/health")
    async def health():
        status, body = server.health()
        return JSONResponse(body, status_code=status)

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def models():
        server.ready()
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "owned_by": "vago_lightning"}
                for name in [settings.model_id, *OPENAI_MODELS]
            ],
        }

    @app.get("/v1/audio/voices", dependencies=[Depends(authorized)])
    async def voices():
        return {"voices": list(server.ready().voices), "language": settings.language, "auth": bool(settings.api_key)}

    @app.post("/v1/audio/speech", dependencies=[Depends(authorized)])
    async def speech(body: SpeechRequest, request: Request):
        engine = server.ready()
        speech_settings = server.check(body, engine)
        text, voice, fmt = body.input, body.voice, body.response_format
        try:
            job = server.queue.submit(lambda stop: engine.stream(text, voice, speech_settings, stop))
        except QueueFull as full:
            raise ApiError(503, str(full), code="queue_full", headers={"Retry-After": str(full.retry_after)}) from None
        try:
            first = await next_chunk(job, request)
        except BaseException:
            job.cancel()
            raise
        if first is None:  # the client left while it waited
            return Response(status_code=499)
        if fmt in formats.STREAMED:
            return StreamingResponse(stream_body(job, first, fmt == "wav"), media_type=formats.MEDIA_TYPES[fmt])
        audio, item = [], first
        while item is not DONE:
            if item is None:  # the client left: its job is cancelled
                return Response(status_code=499)
            audio.append(item)
            item = await next_chunk(job, request)
        data = formats.encode(np.concatenate(audio) if audio else np.zeros(0, np.float32), fmt)
        return Response(data, media_type=formats.MEDIA_TYPES[fmt])

    if settings.cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    return app


async def next_chunk(job, request: Request):
    """The job's next chunk or DONE; None when the client disconnected first (the job is cancelled).
    Raises the job's own exception as a 500 before any audio was sent."""
    getter = asyncio.ensure_future(job.chunks.get())
    try:
        while True:
            done, _ = await asyncio.wait({getter}, timeout=0.25)
            if done:
                break
            if await request.is_disconnected():
                job.cancel()
                return None
    finally:
        if not getter.done():
            getter.cancel()
    item = getter.result()
    if isinstance(item, BaseException):
        raise ApiError(500, f"generation failed: {type(item).__name__}: {item}", code="generation_failed")
    return item


async def stream_body(job, first, wav: bool):
    """The response body: chunks as they come. A client that leaves cancels the generation here
    (Starlette cancels this generator when the connection closes)."""
    try:
        if wav:
            yield formats.wav_stream_header()
        item = first
        while item is not DONE:
            if isinstance(item, BaseException):
                log.error("generation failed mid-stream: %s", item)
                return
            yield formats.pcm16(item)
            item = await job.chunks.get()
    finally:
        job.cancel()


def describe_validation(err: RequestValidationError) -> tuple[str, str | None]:
    """(one-line message, the field) for pydantic's first complaint."""
    first = err.errors()[0] if err.errors() else {}
    kind = first.get("type", "")
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    if kind == "json_invalid":
        return "the body is not valid JSON; send a JSON object with model, input and voice", None
    if kind == "missing":
        return f"{param}: required", param
    if kind == "extra_forbidden":
        return f"{param}: unknown field; fields: {', '.join(SpeechRequest.model_fields)}", param
    if kind in ("model_attributes_type", "dict_type") or not loc:
        return "the body must be a JSON object with model, input and voice", None
    return f"{param}: {first.get('msg', 'invalid')}", param


def create_app_from_env() -> FastAPI:
    """The app of one of `--workers N` processes: the settings from the environment, and this
    worker's own GPU when there are several."""
    data = json.loads(os.environ[SETTINGS_ENV])
    settings = ServeSettings(**data)
    if settings.slots and settings.device == "cuda":
        settings.device = f"cuda:{claim_slot(Path(settings.slots))}"
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    return create_app(settings)


def claim_slot(folder: Path) -> int:
    """A worker index, claimed by creating a file no other worker has (one GPU per worker)."""
    from ..devices import gpu_count

    count = max(1, gpu_count())
    for index in range(64):
        try:
            os.close(os.open(folder / f"slot-{index}", os.O_CREAT | os.O_EXCL))
            return index % count
        except FileExistsError:
            continue
    return os.getpid() % count


def settings_json(settings: ServeSettings) -> str:
    return json.dumps(asdict(settings))
