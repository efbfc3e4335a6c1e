"""Offline Hungarian speech for the demo corpora: eSpeak NG without root, on Linux, Windows and macOS.

The PyPI wheel `espeakng-loader` bundles libespeak-ng and its voice data; this module drives that
library through ctypes. Where the wheel does not install (musl, 32-bit Windows), an `espeak-ng` on
PATH is used instead. Both give 22,050 Hz mono 16-bit speech; for the voices the demo uses (`hu`
and its variants without breath noise) the two are byte-identical.

Two facts about the library shape this module (found by testing it):
- libespeak-ng keeps synthesis state between utterances in C statics that espeak_Terminate does not
  reset, so only the first utterance after loading is reproducible. Every call therefore loads the
  library, speaks one utterance and unloads it again (about 15 ms).
- espeak-ng 1.52 seeds its noise generator from the clock; it is reseeded before each utterance.
All state is process-wide, so calls are serialized by a lock.
"""

from __future__ import annotations

import _ctypes
import atexit
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import wave

import numpy as np

from ..errors import UsageError

# From espeak-ng's speak_lib.h (API revision 12: 1.51 and 1.52).
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_DONT_EXIT = 0x8000  # without it, a bad data path makes the library call exit(1)
CHARS_UTF8, PHONEMES, ENDPAUSE = 0x1, 0x100, 0x1000
SYNTH_FLAGS = CHARS_UTF8 | PHONEMES | ENDPAUSE  # what the espeak-ng command line uses
POS_CHARACTER = 1
RATE, VOLUME, PITCH, RANGE, WORDGAP = 1, 2, 3, 4, 7
EE_OK = 0
# The data path is copied into a buffer of 160 bytes (230 on Windows); longer paths fail.
MAX_DATA_PATH = 229 if sys.platform == "win32" else 159


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_lock = threading.RLock()
_chunks: list[bytes] = []
_backend: dict | None = None
_short_data: str | None = None


@_CALLBACK
def _on_audio(wav, count, events):  # runs inside espeak_Synth, in the calling thread
    if wav and count > 0:
        _chunks.append(ctypes.string_at(wav, count * 2))
    return 0


def _data_path(path: str) -> bytes:
    """The data path as the library reads it (fopen: the ANSI code page on Windows), moved to a short
    temporary link or copy when it is too long for the library's buffer."""
    global _short_data
    encode = (lambda p: p.encode("mbcs")) if sys.platform == "win32" else os.fsencode
    try:
        if len(encode(path)) <= MAX_DATA_PATH:
            return encode(path)
    except UnicodeError:
        pass
    if _short_data is None:
        tmp = tempfile.mkdtemp(prefix="espk")
        _short_data = os.path.join(tmp, "d")
        try:
            os.symlink(path, _short_data, target_is_directory=True)
        except (OSError, NotImplementedError):  # Windows without the symlink privilege
            shutil.copytree(path, _short_data)
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    return encode(_short_data)


def _load() -> dict:
    """Load and initialize the bundled library (raises ImportError/OSError when it is not there)."""
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint),
        ctypes.c_void_p,
    ]
    lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.espeak_Info.restype = ctypes.c_char_p
    seed = getattr(lib, "espeak_ng_SetRandSeed", None)  # 1.52 and later
    if seed is not None:
        seed.argtypes = [ctypes.c_long]
    rate = lib.espeak_Initialize(
        AUDIO_OUTPUT_SYNCHRONOUS, 0, _data_path(espeakng_loader.get_data_path()), INITIALIZE_DONT_EXIT
    )
    if rate <= 0:
        _unload(lib)
        raise OSError(f"espeak_Initialize failed ({rate})")
    lib.espeak_SetSynthCallback(_on_audio)
    return {"lib": lib, "seed": seed, "rate": rate, "version": lib.espeak_Info(None).decode()}


def _unload(lib) -> None:
    lib.espeak_Terminate()
    (_ctypes.FreeLibrary if sys.platform == "win32" else _ctypes.dlclose)(lib._handle)


def backend() -> dict:
    """Which eSpeak NG speaks: {"backend": "library" | "command", "version": ...}; decided once."""
    global _backend
    with _lock:
        if _backend is None:
            try:
                loaded = _load()
                _backend = {"backend": "library", "version": loaded["version"]}
                _unload(loaded["lib"])
            except (ImportError, OSError) as err:
                exe = shutil.which("espeak-ng")
                if exe is None:
                    raise UsageError(
                        f"no eSpeak NG for the demo speech: the espeakng-loader package did not load ({err}) "
                        "and espeak-ng is not on PATH; `pip install espeakng-loader`, or install espeak-ng"
                    ) from None
                version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
                _backend = {"backend": "command", "version": version, "exe": exe}
        return _backend


def synthesize(text: str, voice: str = "hu", speed: int = 150, pitch: int = 50) -> tuple[np.ndarray, int]:
    """`text` spoken by eSpeak NG: (int16 mono samples, sample rate). `voice` may carry a variant
    ("hu+f1"); `speed` in words per minute, `pitch` 0-99. The same call gives the same samples."""
    with _lock:
        if backend()["backend"] == "command":
            return _synthesize_command(text, voice, speed, pitch)
        loaded = _load()
        try:
            return _synthesize_library(loaded, text, voice, speed, pitch)
        finally:
            _unload(loaded["lib"])


def _synthesize_library(loaded: dict, text: str, voice: str, speed: int, pitch: int):
    lib = loaded["lib"]
    if lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
        raise UsageError(f"eSpeak NG has no voice {voice!r}")
    for parameter, value in ((RATE, speed), (PITCH, pitch), (VOLUME, 100), (RANGE, 50), (WORDGAP, 0)):
        lib.espeak_SetParameter(parameter, int(value), 0)
    if loaded["seed"] is not None:
        loaded["seed"](0)
    data = text.encode("utf-8") + b"\0"
    _chunks.clear()
    try:
        if lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, SYNTH_FLAGS, None, None) != EE_OK:
            raise UsageError(f"eSpeak NG could not speak {text[:40]!r}")
        lib.espeak_Synchronize()
        return np.frombuffer(b"".join(_chunks), dtype="<i2").copy(), loaded["rate"]
    finally:
        _chunks.clear()


def _synthesize_command(text: str, voice: str, speed: int, pitch: int):
    fd, path = tempfile.mkstemp(suffix=".wav")
    os.close(fd)
    try:
        args = [
            backend()["exe"],
            "-v",
            voice,
            "-s",
            str(int(speed)),
            "-p",
            str(int(pitch)),
            "-w",
            path,
            "--",
            text,
        ]
        subprocess.run(args, check=True, capture_output=True)
        with wave.open(path, "rb") as w:
            return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy(), w.getframerate()
    finally:
        os.unlink(path)
