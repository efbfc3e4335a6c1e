"""Start the server: every check that can fail is made here, before uvicorn starts, so a mistake is
one line; then one process (or `--workers N` processes, one model each) serves the port."""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from pathlib import Path

from ..devices import pick_device
from ..errors import UsageError
from ..inference.precision import resolve_precision
from .app import SETTINGS_ENV, ServeSettings, create_app, settings_json
from .engine import VOICE_NAME

API_KEY_ENV = "VAGO_API_KEY"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_settings(
    model: Path,
    host: str,
    port: int,
    device: str,
    api_key: str | None,
    voices: dict[str, list[Path]],
    language: str,
    max_queue: int,
    workers: int,
    cors: list[str],
    stream_chunk_size: int = 20,
    max_new_tokens: int | None = None,
    precision: str = "auto",
) -> ServeSettings:
    from ..data.audio import load_clip
    from ..errors import AudioError
    from ..model.base import check_base_dir, load_xtts_config

    key = api_key or os.environ.get(API_KEY_ENV) or None
    if not is_loopback(host) and not key:
        raise UsageError(
            f"--host {host}: serving beyond this machine needs an API key; give --api_key KEY (or set "
            f"{API_KEY_ENV}), and clients send Authorization: Bearer KEY"
        )
    model = check_base_dir(model, kind="model folder")
    languages = list(load_xtts_config(model).languages)
    if language not in languages:
        raise UsageError(f"--language {language}: not one XTTS-v2 speaks; languages: {', '.join(languages)}")
    for name, paths in voices.items():
        if not VOICE_NAME.match(name):
            raise UsageError(
                f"--voice {name}: a voice name is letters, digits and _ . - (at most 64), e.g. --voice host=ref.wav"
            )
        for path in paths:
            try:
                load_clip(Path(path))
            except AudioError as err:
                raise UsageError(f"--voice {name}={path}: {err}") from None
    if max_queue < 1:
        raise UsageError(f"--max_queue {max_queue}: at least 1 (requests that may wait for the model)")
    if workers < 1:
        raise UsageError(f"--workers {workers}: at least 1 (model replicas)")
    if stream_chunk_size < 1:
        raise UsageError(f"--stream_chunk_size {stream_chunk_size}: at least 1 (audio tokens per streamed chunk)")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise UsageError(f"--max_new_tokens {max_new_tokens}: at least 1, or leave it out")
    if not 0 < port < 65536:
        raise UsageError(f"--port {port}: choose a port from 1 to 65535")
    check_port_free(host, port)
    device = pick_device(device)
    resolve_precision(precision, device)  # a bad choice is one line before anything loads
    return ServeSettings(
        model=str(model),
        voices={name: [str(p) for p in paths] for name, paths in voices.items()},
        device=device,
        language=language,
        max_queue=max_queue,
        api_key=key,
        cors=list(cors),
        stream_chunk_size=stream_chunk_size,
        max_new_tokens=max_new_tokens,
        precision=precision,
    )


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as err:
            raise UsageError(
                f"--host {host} --port {port}: cannot listen there ({err.strerror}); choose another --port"
            ) from None


def run_server(settings: ServeSettings, host: str, port: int, workers: int, log_level: str = "info") -> None:
    import uvicorn

    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    print(
        f"serving {settings.model} on {settings.device} at {where}/ (page) and {where}/v1/audio/speech "
        f"(OpenAI API); {'API key required' if settings.api_key else 'no API key (this machine only)'}; "
        f"{workers} worker{'s' if workers > 1 else ''}, queue {settings.max_queue} each; Ctrl-C stops",
        flush=True,
    )
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
        return
    with tempfile.TemporaryDirectory(prefix="vago-serve-") as slots:
        settings.slots = slots
        if settings.device == "cpu":
            settings.threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ[SETTINGS_ENV] = settings_json(settings)
        uvicorn.run(
            "vago_lightning.serve.app:create_app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            timeout_graceful_shutdown=5,
        )
