"""The tool verbs of `python -m vago_lightning`, one function each: a function's signature is its
flags and their defaults, its docstring is its --help, and `--config FILE.yaml` gives them from a
file (`prepare --config prepare.yaml`). Training itself (`fit`, `validate`) is the LightningCLI in
`training/cli.py`.

Flags are written as in the training command line (`--base_model`); `--base-model` is accepted too.
A list takes several values (`--temperature 0.55 0.65`) or a repeated flag (`--reference a.wav
--reference b.wav`); a mapping takes NAME=VALUE (`--corpus quiz=corpora/quiz --corpus ...`).
"""

from __future__ import annotations

import inspect
import json
import os
import types
import typing
from pathlib import Path
from typing import Literal

from .data.prepare import PrepareSettings
from .errors import UsageError
from .inference.settings import DEFAULT_TEMPERATURES, Settings

_PREPARE = PrepareSettings()
_SPEAK = Settings()


def tiny_base(
    out: Path,
    gpt_layers: int = 2,
    gpt_dim: int = 64,
    gpt_heads: int = 4,
    dvae: Literal["tiny", "xtts"] = "tiny",
    seed: int = 0,
    like_release: bool = False,
    release_config: Path | None = None,
    release_vocab: Path | None = None,
    overwrite: bool = False,
) -> None:
    """Write a random base model in the XTTS-v2 release layout (to try the pipeline; it speaks noise).

    Args:
        out: directory to write (new or empty)
        gpt_layers: GPT layers
        gpt_dim: GPT width, a multiple of 32 and of gpt_heads
        gpt_heads: attention heads
        dvae: tiny (fast tests) or xtts (the release's DVAE architecture, 51.5 M params)
        seed: seed of the random weights
        like_release: the release's architecture (30 x 1024 GPT, 441 M params; release DVAE) and file forms
            (model.pth with a pickled config, speakers_xtts.pth); the layer flags are then ignored. 2.1 GB.
        release_config: with like_release: the release's config.json, used as it is
        release_vocab: with like_release: the release's vocab.json, used as it is
        overwrite: replace the files of an existing base
    """
    from .demo.tiny_base import TinyBaseSpec, write_tiny_base

    spec = TinyBaseSpec(
        gpt_layers=gpt_layers,
        gpt_dim=gpt_dim,
        gpt_heads=gpt_heads,
        dvae=dvae,
        seed=seed,
        like_release=like_release,
        config=release_config,
        vocab=release_vocab,
    )
    written = write_tiny_base(out, spec, overwrite=overwrite)
    shape = "the release's architecture" if like_release else f"{spec.gpt_layers} layers, dim {spec.gpt_dim}"
    print(f"base model written to {written} ({shape}, dvae {'xtts' if like_release else spec.dvae}; random weights)")


def whisper_base(out: Path, overwrite: bool = False) -> None:
    """Write the whisper-base speech recogniser (for --asr_model in tests and the demo) from the test extra.

    Its Hungarian is poor (CER about 0.25 on espeak speech): real work wants large-v3 (see the README).

    Args:
        out: directory to write, e.g. models/whisper-base
        overwrite: write it again when it exists
    """
    from .asr import write_whisper_base

    written = write_whisper_base(out, overwrite=overwrite)
    print(f"whisper-base written to {written} (model.bin checked by SHA-256); use it as --asr_model {written}")


def demo_data(out: Path, seed: int = 0, workers: int = 2, overwrite: bool = False) -> None:
    """Synthesize the two Hungarian demo corpora (quiz, interview) offline.

    Args:
        out: parent directory; writes OUT/quiz and OUT/interview
        seed: chooses the interview's composed lines
        workers: synthesis threads
        overwrite: write the corpora again when they exist
    """
    from .demo.corpora import describe, write_demo_corpora

    written = write_demo_corpora(out, seed=seed, workers=workers, overwrite=overwrite)
    for name, rows in written.items():
        print(f"{out}/{name}: {describe(rows)}")


def prepare(
    corpus: dict[str, Path],
    out: Path = Path("data_shards"),
    base_model: Path | None = None,
    language: str = _PREPARE.language,
    val_fraction: float = _PREPARE.val_fraction,
    seed: int = _PREPARE.seed,
    min_seconds: float = _PREPARE.min_seconds,
    shard_size: int = _PREPARE.shard_size,
    speaker_check: bool = _PREPARE.speaker_check,
    reject_other_speakers: bool = _PREPARE.reject_other_speakers,
    trim_silence: bool = _PREPARE.trim_silence,
    workers: int = os.cpu_count() or 1,
    device: str = "cpu",
    quiet: bool = False,
) -> None:
    """Corpora to WebDataset shards with a stratified validation split; nothing is lost silently.

    Args:
        corpus: NAME=DIR per corpus: coqui metadata.csv, LJSpeech metadata.csv, or recordings with subtitles
        out: output folder
        base_model: base model folder: precompute DVAE codes and check token counts
        language: language of the text (tokenizer and cleaning)
        val_fraction: fraction held out for validation, stratified by corpus and category
        seed: seed of the split and the shard order
        min_seconds: shorter clips are rejected
        shard_size: samples per shard
        speaker_check: embed every clip (resemblyzer) and flag those far from the corpus's speaker
        reject_other_speakers: reject those clips (reason other_speaker) instead of only flagging them
        trim_silence: trim leading and trailing non-speech (silero-vad) to at most 0.2 s
        workers: threads decoding and encoding clips, a batch of clips each (one process: the models load once)
        device: where the DVAE codes and speaker embeddings are computed: cpu, cuda, cuda:N or auto
        quiet: no progress bar
    """
    from .data.prepare import prepare as run

    settings = PrepareSettings(
        language=language,
        val_fraction=val_fraction,
        seed=seed,
        min_seconds=min_seconds,
        shard_size=shard_size,
        speaker_check=speaker_check,
        reject_other_speakers=reject_other_speakers,
        trim_silence=trim_silence,
    )
    _, rebuilt = run(
        dict(corpus),
        Path(out),
        settings,
        Path(base_model) if base_model else None,
        workers=workers,
        progress=not quiet,
        device=device,
    )
    for name, was_rebuilt in rebuilt.items():
        print(f"{name}: {'prepared' if was_rebuilt else 'unchanged, nothing to do'}")
    print((Path(out) / "summary.md").read_text(encoding="utf-8"))


def export(
    ckpt: Path,
    out: Path,
    base_model: Path | None = None,
    speaker: dict[str, list[Path]] | None = None,
    overwrite: bool = False,
) -> None:
    """A training checkpoint to the XTTS-v2 release layout, which coqui-tts loads as it is.

    Args:
        ckpt: a checkpoint of a run, e.g. checkpoints/combined/best.ckpt
        out: directory to write, e.g. exported/combined
        base_model: the base the run was trained on (default: the one the checkpoint names)
        speaker: NAME=WAV: store a named voice from reference recordings in speakers_xtts.pth
        overwrite: replace an existing export
    """
    from .inference.export import export_checkpoint

    written = export_checkpoint(ckpt, out, base_model, speaker or {}, overwrite=overwrite)
    size = sum(p.stat().st_size for p in written.iterdir()) / 1024**2
    print(f"exported {ckpt} to {written} ({', '.join(sorted(p.name for p in written.iterdir()))}; {size:.0f} MB)")


def generate(
    model: Path,
    reference: list[Path],
    out: Path,
    texts: Path | None = None,
    language: str = _SPEAK.language,
    temperature: list[float] = DEFAULT_TEMPERATURES,
    seed: int = _SPEAK.seed,
    max_new_tokens: int | None = _SPEAK.max_new_tokens,
) -> None:
    """Speech from an exported model: one wav per sentence and temperature, and index.json.

    Args:
        model: an exported model folder
        reference: reference recordings of the voice
        out: output folder
        texts: UTF-8 file, one text per line (default: sentences in both registers)
        language: language of the texts
        temperature: sampling temperatures
        seed: sampling seed
        max_new_tokens: cap on generated codes (1 code = 1024 samples); default: in proportion to the text
    """
    from .inference.synthesis import generate as run
    from .inference.synthesis import read_texts

    index = run(
        model,
        list(reference),
        read_texts(texts),
        list(temperature),
        out,
        Settings(language=language, seed=seed, max_new_tokens=max_new_tokens),
    )
    for s in index["samples"]:
        flags = f" [{', '.join(s['flags'])}]" if s["flags"] else ""
        print(
            f"{Path(out) / s['file']}: {s['duration']:.2f} s, similarity {_similarity(s)}, RTF "
            f"{s['real_time_factor']}{flags}"
        )
    print(f"index: {Path(out) / 'index.json'}")


def _similarity(judged: dict) -> str:
    """A sample's speaker similarity as shown: "–" where it has no speech (the figure means nothing)."""
    value = judged["speaker_similarity"]
    return "–" if value is None or "no_speech" in judged.get("flags", []) else f"{value:.3f}"


def compare(
    model: dict[str, Path],
    reference: list[Path],
    out: Path,
    texts: Path | None = None,
    language: str = _SPEAK.language,
    temperature: list[float] = DEFAULT_TEMPERATURES,
    seed: int = _SPEAK.seed,
    max_new_tokens: int | None = _SPEAK.max_new_tokens,
) -> None:
    """The same sentences from several exported models, side by side on one HTML page.

    Args:
        model: NAME=DIR per exported model (two or more)
        reference: reference recordings of the voice
        out: output folder (index.html, report.json)
        texts: UTF-8 file, one text per line (default: sentences in both registers)
        language: language of the texts
        temperature: sampling temperatures
        seed: sampling seed
        max_new_tokens: cap on generated codes (1 code = 1024 samples); default: in proportion to the text
    """
    from .inference.compare import compare as run
    from .inference.synthesis import read_texts

    if len(model) < 2:
        raise UsageError("--model: give two or more, e.g. --model A=exported/milliomos --model B=exported/combined")
    report = run(
        dict(model),
        list(reference),
        read_texts(texts),
        list(temperature),
        out,
        Settings(language=language, seed=seed, max_new_tokens=max_new_tokens),
    )
    for name, m in report["models"].items():
        similarity = "–" if m["speaker_similarity"] is None else f"{m['speaker_similarity']:.3f}"
        print(
            f"{name}: speaker similarity {similarity} (over samples with speech), no speech in {m['no_speech']} of "
            f"{m['count']}, runaway {m['runaway']}, mean duration {m['duration']:.2f} s, "
            f"RTF {m['real_time_factor']:.2f}"
        )
    print(f"page: {Path(out) / 'index.html'}")


def report(run: str, out: Path | None = None, baseline: str | None = None, logs: Path = Path("lightning_logs")) -> None:
    """Did the run keep its baseline's voice and learn the new corpus? One self-contained page from the
    runs' TensorBoard logs and best checkpoints (nothing is re-run).

    Args:
        run: the run's name (lightning_logs/<run>/)
        out: output folder (default: reports/<run>)
        baseline: the run it continued from (default: the one its model.init_from names)
        logs: where the runs' TensorBoard logs are
    """
    from .inference.report import build_report

    out = out or Path("reports") / run
    result = build_report(run, baseline, Path(out), Path(logs))
    if result["verdict"]:
        print(f"{run}: {result['verdict']['summary']}")
        for line in result["verdict"]["lines"]:
            print(f"  {line}")
    print(f"page: {Path(out) / 'index.html'}")


def demo() -> None:
    """The whole demo in the current folder: tiny base, demo corpora, prepare, both training stages,
    export, samples, compare; each stage skipped when its output is there (run it again to go on)."""
    from .demo.pipeline import run_demo

    run_demo(VERBS)


def serve(
    model: Path,
    host: str = "127.0.0.1",
    port: int = 8020,
    device: str = "auto",
    api_key: str | None = None,
    voice: dict[str, list[Path]] | None = None,
    language: str = "hu",
    max_queue: int = 8,
    workers: int = 1,
    cors: list[str] | None = None,
    stream_chunk_size: int = 20,
    max_new_tokens: int | None = None,
    precision: str = "auto",
    log_level: str = "info",
) -> None:
    """Serve a voice: OpenAI's POST /v1/audio/speech (streamed), GET /v1/audio/voices, /v1/models,
    /health, and a page at / to try it. Any folder in the XTTS-v2 release layout (an export, or the
    release itself); never two generations at once on one model.

    Args:
        model: the model folder, e.g. exported/combined
        host: address to listen on; anything but this machine (127.0.0.1, ::1) needs an API key
        port: port to listen on
        device: auto (a GPU when there is one), cpu, cuda or cuda:N
        api_key: clients must send Authorization: Bearer KEY (default: $VAGO_API_KEY; none on 127.0.0.1)
        voice: NAME=WAV: a voice from reference recordings (latents computed once, at start)
        language: the language of the texts (a request may give another in its language field)
        max_queue: requests that may wait for the model; past it the answer is 503 with Retry-After
        workers: model replicas behind the port (one per GPU, or a few on a big CPU)
        cors: allow browser pages from these origins (e.g. https://example.org); none by default
        stream_chunk_size: audio tokens per streamed chunk (20 = ~0.93 s; fewer: earlier first audio, more work)
        max_new_tokens: cap on audio tokens per sentence (1 = ~46 ms); default: in proportion to the text
        precision: auto (bf16 on a GPU or a CPU with native bf16, else the GPT's blocks in int8), fp32, bf16, int8
        log_level: uvicorn's log level (info logs every request)
    """
    from .serve.run import check_settings, run_server

    settings = check_settings(
        Path(model),
        host,
        port,
        device,
        api_key,
        voice or {},
        language,
        max_queue,
        workers,
        list(cors or []),
        stream_chunk_size,
        max_new_tokens,
        precision,
    )
    run_server(settings, host, port, workers, log_level)


VERBS = {
    "tiny-base": tiny_base,
    "whisper-base": whisper_base,
    "demo-data": demo_data,
    "prepare": prepare,
    "export": export,
    "generate": generate,
    "compare": compare,
    "report": report,
    "demo": demo,
    "serve": serve,
}


# ---------------------------------------------------------------------------------------------
# The flag forms users type, turned into the ones jsonargparse reads


def _kind(function, name: str) -> str:
    """'bool', 'list', 'dict', 'dict-of-lists' or '' for a parameter's (possibly Optional) type."""
    annotation = typing.get_type_hints(function).get(name)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if annotation is bool:
        return "bool"
    origin = typing.get_origin(annotation)
    if origin is dict:
        return "dict-of-lists" if typing.get_origin(typing.get_args(annotation)[1]) is list else "dict"
    return "list" if origin is list else ""


def normalize(verb: str, argv: list[str]) -> list[str]:
    """`--base-model` -> `--base_model`; a bare `--overwrite` -> `--overwrite true`; the values of a list
    flag (several, or the flag repeated) -> one JSON list; NAME=VALUE pairs -> one JSON mapping."""
    kinds = {name: _kind(VERBS[verb], name) for name in inspect.signature(VERBS[verb]).parameters}
    out: list[str] = []
    gathered: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or token == "--":
            out.append(token)
            i += 1
            continue
        flag, has_value, value = token[2:].partition("=")
        flag = flag.replace("-", "_")
        values = [value] if has_value else []
        i += 1
        kind = kinds.get(flag, "")
        if kind in ("list", "dict", "dict-of-lists"):
            while not has_value and i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            if len(values) == 1 and values[0].lstrip()[:1] in "[{":
                out += [f"--{flag}", values[0]]  # already JSON or YAML
            else:
                gathered.setdefault(flag, []).extend(values)
            continue
        if kind == "bool" and not values and (i >= len(argv) or argv[i].startswith("--")):
            values = ["true"]
        out += [f"--{flag}", *values]
    for flag, values in gathered.items():
        kind = kinds[flag]
        out += [
            f"--{flag}",
            json.dumps(values if kind == "list" else _pairs(flag, values, kind == "dict-of-lists")),
        ]
    return out


PAIR_EXAMPLES = {
    "corpus": "NAME=DIRECTORY, e.g. --corpus quiz=corpora/demo/quiz",
    "model": "NAME=DIRECTORY, e.g. --model combined=exported/combined",
    "speaker": "NAME=WAV, e.g. --speaker vago=ref.wav",
    "voice": "NAME=WAV, e.g. --voice host=ref.wav",
}


def _pairs(flag: str, values: list[str], many: bool) -> dict:
    """NAME=VALUE tokens as a mapping; `many`: a name may come back (its values form a list)."""
    pairs: dict[str, list[str]] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--{flag} {value}: expected {PAIR_EXAMPLES.get(flag, 'NAME=VALUE')}")
        if name in pairs and not many:
            raise UsageError(f"--{flag} {name}: given twice")
        pairs.setdefault(name, []).append(path)
    return pairs if many else {name: paths[0] for name, paths in pairs.items()}
