"""`prepare`: corpora to WebDataset shards with a stratified validation split, losing nothing.

    data_shards/<corpus>/train-000000.tar ...   val-000000.tar ...   corpus.json   rejected.jsonl
    data_shards/manifest.json   summary.md   rejected.jsonl

Every input line (or subtitle cut) lands in a shard or in rejected.jsonl with its source, line and
reason. A corpus directory appears only complete (written aside, then renamed into place), and a
corpus whose inputs and settings have not changed is not rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..constants import MAX_TEXT_TOKENS, MAX_WAV_SAMPLES, SAMPLE_RATE, UNK_TOKEN_ID
from ..errors import AudioError, DataError, UsageError
from ..files import publish_dir, sha256_file, write_text_atomic
from .audio import Clip, ClipLimits, check_clip, encode_flac, load_clip
from .corpus import Item, Rejection, read_corpus, rejections_of, shard_key
from .manifest import CATEGORIES, MANIFEST_VERSION, CorpusEntry, IndexEntry, Manifest, Split, totals


@dataclass
class PrepareSettings:
    language: str = "hu"
    val_fraction: float = 0.02
    seed: int = 0
    min_seconds: float = 1.0
    max_samples: int = MAX_WAV_SAMPLES
    max_text_tokens: int = MAX_TEXT_TOKENS
    shard_size: int = 64  # samples per shard: several shards per corpus for shuffling and workers
    speaker_check: bool = True  # embed every clip and flag those far from the corpus's speaker
    reject_other_speakers: bool = False  # reject those clips (other_speaker) instead of only flagging them
    trim_silence: bool = False  # trim leading/trailing non-speech to at most TRIM_KEEP seconds


TRIM_KEEP = 0.2  # seconds of silence kept before and after the speech when trimming


def category(seconds: float, text: str) -> str:
    """The seed's categories: question by its text, else short (< 4 s), medium (4-7 s), long (>= 7 s)."""
    if text.rstrip().endswith("?"):
        return "question"
    return "short" if seconds < 4 else ("medium" if seconds < 7 else "long")


def inputs_fingerprint(
    items: list[Item], rejections: list[Rejection], settings: PrepareSettings, base: dict | None, fmt: str
) -> str:
    """Changes when any input file (content of text files, size and mtime of audio) or setting does."""
    digest = hashlib.sha256(json.dumps([asdict(settings), base, fmt, MANIFEST_VERSION], sort_keys=True).encode())
    sources = sorted({i.source for i in items} | {r.source for r in rejections})
    for source in sources:
        digest.update(source.encode())
        if Path(source).is_file():
            digest.update(sha256_file(Path(source)).encode())
    for audio in sorted({i.audio for i in items}):
        stat = audio.stat() if audio.exists() else None
        digest.update(f"{audio}:{stat.st_size if stat else -1}:{stat.st_mtime_ns if stat else -1}".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Per-clip work, in worker processes

_WORKER: dict = {}


def _init_worker(base_dir: str | None, limits: ClipLimits, settings: PrepareSettings, threads: int | None = 1) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)  # worker processes: one per core instead
    _WORKER["limits"] = limits
    _WORKER["settings"] = settings
    _WORKER["dvae"] = None
    if base_dir:
        from ..model.base import load_dvae
        from ..model.features import dvae_mel

        base = Path(base_dir)
        _WORKER["dvae"] = load_dvae(base / "dvae.pth")
        _WORKER["mel"] = dvae_mel(torch.load(base / "mel_stats.pth", map_location="cpu", weights_only=True))


def _process(item: Item) -> dict:
    """Decode, check and encode one clip; the result is a record for a shard or a rejection."""
    settings: PrepareSettings = _WORKER["settings"]
    try:
        clip = load_clip(item.audio, item.start, item.end)
        if settings.trim_silence:
            clip = trim_silence(clip)
        check_clip(clip, _WORKER["limits"])
    except AudioError as err:
        return {"rejected": err.reason, "detail": err.detail}
    record = {
        "flac": encode_flac(clip),
        "seconds": clip.seconds,
        "source_rate": clip.source_rate,
        "source_channels": clip.source_channels,
    }
    if settings.speaker_check:
        from .. import metrics

        # The whole clip (prepared clips are mostly speech), which spares a VAD pass per clip.
        record["embedding"] = metrics.speaker_embedding(clip.wav, SAMPLE_RATE, whole=True)
    if _WORKER["dvae"] is not None:
        import torch

        from ..model.features import dvae_codes

        codes = dvae_codes(_WORKER["dvae"], _WORKER["mel"], torch.from_numpy(clip.wav)[None])[0]
        record["codes"] = codes.numpy().astype(np.int16)
    return record


def _run_clips(
    items: list[Item],
    base_dir: Path | None,
    limits: ClipLimits,
    settings: PrepareSettings,
    workers: int,
    label: str,
    progress: bool,
    done_before: int = 0,
) -> list[dict]:
    """Decode, check and encode `items` in worker processes, in order. The progress bar counts every
    clip of the corpus: `done_before` were settled already (rejected for their text)."""
    from contextlib import nullcontext

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    args = (str(base_dir) if base_dir else None, limits, settings)
    if workers <= 1:
        _init_worker(*args, threads=None)  # in this process: leave its thread count alone
        pool, mapped = nullcontext(), map(_process, items)
    else:
        pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=args)
        mapped = pool.map(_process, items, chunksize=4)
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with pool, Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(label, total=len(items) + done_before, completed=done_before)
        results = []
        for result in mapped:
            results.append(result)
            bar.advance(task)
        return results


def trim_silence(clip: Clip) -> Clip:
    """The clip with its leading and trailing non-speech cut to at most TRIM_KEEP seconds (subtitle
    cuts often carry silence); a clip with no detected speech is left as it is."""
    from .. import metrics

    timing = metrics.speech_timing(clip.wav, SAMPLE_RATE)
    if not timing.segments:
        return clip
    start = max(0, int((timing.segments[0][0] - TRIM_KEEP) * SAMPLE_RATE))
    end = min(len(clip.wav), int((timing.segments[-1][1] + TRIM_KEEP) * SAMPLE_RATE))
    return replace(clip, wav=clip.wav[start:end])


# ---------------------------------------------------------------------------------------------
# Split and shards


def stratified_split(records: list[dict], fraction: float, seed: int, corpus: str) -> set[str]:
    """Keys held out for validation: `fraction` of each (corpus, category) stratum, apportioned by
    largest remainder so the corpus total is round(n * fraction), and at least one clip for a corpus
    of two or more. Deterministic for a seed."""
    n = len(records)
    if n < 2 or fraction <= 0:
        return set()
    target = max(1, round(n * fraction))
    strata: dict[str, list[str]] = {}
    for r in sorted(records, key=lambda r: r["key"]):
        strata.setdefault(r["category"], []).append(r["key"])
    quotas = {c: len(keys) * target / n for c, keys in strata.items()}
    counts = {c: int(q) for c, q in quotas.items()}
    for c in sorted(quotas, key=lambda c: (-(quotas[c] - counts[c]), c))[: target - sum(counts.values())]:
        counts[c] += 1
    held = set()
    for c, keys in sorted(strata.items()):
        rng = random.Random(f"{seed}/{corpus}/{c}")
        held.update(rng.sample(keys, min(counts[c], len(keys))))
    return held


def _encode_sample(record: dict) -> dict:
    sample = {
        "__key__": record["key"],
        "flac": record["flac"],
        "json": json.dumps(record["meta"], ensure_ascii=False).encode("utf-8"),
    }
    if "codes" in record:
        buffer = io.BytesIO()
        np.save(buffer, record["codes"])
        sample["codes.npy"] = buffer.getvalue()
    return sample


def write_shards(directory: Path, split: str, records: list[dict], shard_size: int) -> list[str]:
    """Write `records` in order into shards of `shard_size`; each record gets its shard's name."""
    import webdataset as wds

    names = []
    for start in range(0, len(records), shard_size):
        name = f"{split}-{len(names):06d}.tar"
        with wds.TarWriter(str(directory / name), mtime=0) as sink:
            for record in records[start : start + shard_size]:
                sink.write(_encode_sample(record))
                record["shard"] = name
        names.append(name)
    return names


def _split(shards: list[str], records: list[dict]) -> Split:
    """A split's entry; its index is what the trainer plans epochs with before reading any audio."""
    cats = Counter(r["category"] for r in records)
    return Split(
        shards=shards,
        samples=len(records),
        inputs=sum(r["inputs"] for r in records),
        seconds=round(sum(r["meta"]["duration"] for r in records), 3),
        categories={c: cats.get(c, 0) for c in CATEGORIES},
        category_seconds={
            c: round(sum(r["meta"]["duration"] for r in records if r["category"] == c), 3) for c in CATEGORIES
        },
        index=[IndexEntry(r["key"], r["shard"], r["meta"]["duration"], r["category"]) for r in records],
    )


# ---------------------------------------------------------------------------------------------
# One corpus


def text_problem(text: str, tokenizer, settings: PrepareSettings) -> tuple[str, str] | None:
    """(reason, detail) when a text cannot be used, before any audio is read."""
    if not any(ch.isalnum() for ch in text):
        return "empty_text", "no text after cleaning"
    if tokenizer is not None:
        ids = tokenizer.encode(text, settings.language)
        if UNK_TOKEN_ID in ids:
            unknown = unknown_characters(text, tokenizer, settings.language)
            return (
                "unknown_tokens",
                f"the base model's vocab.json does not know {' '.join(map(repr, unknown))}",
            )
        if len(ids) > settings.max_text_tokens:
            return "too_many_tokens", f"{len(ids)} tokens > {settings.max_text_tokens}"
    return None


def unknown_characters(text: str, tokenizer, language: str) -> list[str]:
    """The characters of `text` (after coqui's cleaning) that encode to [UNK]."""
    cleaned = tokenizer.preprocess_text(text, language)
    return [c for c in dict.fromkeys(cleaned) if not c.isspace() and UNK_TOKEN_ID in tokenizer.tokenizer.encode(c).ids]


def prepare_corpus(
    name: str,
    root: Path,
    out: Path,
    settings: PrepareSettings,
    base_dir: Path | None,
    base: dict | None,
    workers: int,
    progress: bool,
    previous: CorpusEntry | None,
) -> tuple[CorpusEntry, bool]:
    """Build (or keep) `out/<name>`; returns its corpus.json entry and whether it was rebuilt."""
    tokenizer = None
    if base_dir is not None:
        from ..model.base import load_tokenizer

        tokenizer = load_tokenizer(base_dir)
    items, rejections, fmt = read_corpus(root, lambda text: text_problem(text, tokenizer, settings))
    fingerprint = inputs_fingerprint(items, rejections, settings, base, fmt)
    target = out / name
    if previous and previous.fingerprint == fingerprint and all((target / s).is_file() for s in previous.shard_names()):
        return previous, False

    rejected = list(rejections)
    accepted: list[tuple[Item, str, str]] = []
    seen: set[str] = set()
    for item in items:
        key = shard_key(f"{name}_{item.id}")
        text = " ".join(item.text.split())
        if key in seen:
            problem = "duplicate_id", f"id {item.id!r} (key {key}) appears earlier in the corpus"
        else:
            problem = text_problem(text, tokenizer, settings)
        seen.add(key)
        if problem:
            rejected += rejections_of(item, *problem)
            continue
        accepted.append((item, key, text))

    limits = ClipLimits(min_seconds=settings.min_seconds, max_samples=settings.max_samples)
    results = _run_clips(
        [a[0] for a in accepted], base_dir, limits, settings, workers, name, progress, len(items) - len(accepted)
    )
    records = []
    items_of = {}
    for (item, key, text), result in zip(accepted, results):
        if "rejected" in result:
            rejected += rejections_of(item, result["rejected"], result["detail"])
            continue
        cat = category(result["seconds"], text)
        meta = {
            "id": item.id,
            "key": key,
            "text": text,
            "language": settings.language,
            "speaker": item.speaker,
            "corpus": name,
            "category": cat,
            "duration": round(result["seconds"], 4),
            "source": str(item.audio),
            "metadata": item.source,
            "line": item.line,
            "start": item.start,
            "end": item.end,
            "source_rate": result["source_rate"],
            "source_channels": result["source_channels"],
        }
        if item.segments:
            meta["segments"] = [number for number, _ in item.segments]
        records.append(dict(result, key=key, category=cat, meta=meta, inputs=item.inputs))
        items_of[key] = item

    outliers, threshold = _speaker_check(records, settings) if settings.speaker_check else ([], None)
    if settings.reject_other_speakers:
        for o in outliers:
            detail = f"similarity {o['similarity']:.3f} to the corpus's speaker < {threshold:.2f}"
            rejected += rejections_of(items_of[o["key"]], "other_speaker", detail)
        gone = {o["key"] for o in outliers}
        records = [r for r in records if r["key"] not in gone]

    held = stratified_split(records, settings.val_fraction, settings.seed, name)
    train = [r for r in records if r["key"] not in held]
    val = sorted((r for r in records if r["key"] in held), key=lambda r: r["key"])
    random.Random(f"{settings.seed}/{name}/order").shuffle(train)  # mixed categories in every shard

    entry = CorpusEntry(
        corpus=name,
        input=str(root),
        format=fmt,
        fingerprint=fingerprint,
        inputs=sum(item.inputs for item in items) + len(rejections),
        settings=asdict(settings),
        base_model=base,
        codes=base is not None,
        sample_rate=SAMPLE_RATE,
        splits={},
        rejected=dict(sorted(Counter(r.reason for r in rejected).items())),
        rejected_total=len(rejected),
        speaker_outliers=len(outliers),
        speaker_threshold=None if threshold is None or threshold != threshold else round(threshold, 4),
    )
    with publish_dir(target) as tmp:
        for split, rows in (("train", train), ("val", val)):
            entry.splits[split] = _split(write_shards(tmp, split, rows, settings.shard_size), rows)
        with open(tmp / "rejected.jsonl", "w", encoding="utf-8") as f:
            for row in rejected:
                f.write(json.dumps(dict(asdict(row), corpus=name), ensure_ascii=False) + "\n")
        with open(tmp / "speaker_outliers.jsonl", "w", encoding="utf-8") as f:
            for row in outliers:
                f.write(
                    json.dumps(dict(row, corpus=name, rejected=settings.reject_other_speakers), ensure_ascii=False)
                    + "\n"
                )
        (tmp / "corpus.json").write_text(entry.to_json(), encoding="utf-8")
    return entry, True


# ---------------------------------------------------------------------------------------------
# All corpora


def prepare(
    corpora: dict[str, Path],
    out: Path,
    settings: PrepareSettings,
    base_dir: Path | None = None,
    workers: int = 1,
    progress: bool = True,
) -> tuple[Manifest, dict[str, bool]]:
    """Prepare every corpus; returns the manifest and, per corpus, whether it was rebuilt."""
    for name in corpora:
        if shard_key(name) != name:
            raise UsageError(f"--corpus {name}=...: corpus names may hold only letters, digits, _ and -")
    base = None
    if base_dir is not None:
        from ..model.base import base_fingerprint, check_base_dir

        base = base_fingerprint(check_base_dir(base_dir))
    out.mkdir(parents=True, exist_ok=True)
    for stale in list(out.glob(".tmp-*")) + list(out.glob(".old-*")):
        shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted run; never read
    entries, rebuilt = {}, {}
    for name, root in corpora.items():
        if not Path(root).is_dir():
            raise DataError(f"--corpus {name}={root}: directory not found")
        entries[name], rebuilt[name] = prepare_corpus(
            name,
            Path(root),
            out,
            settings,
            base_dir,
            base,
            workers,
            progress,
            _previous(out / name / "corpus.json"),
        )
    manifest = Manifest(
        language=settings.language,
        settings=asdict(settings),
        base_model=base,
        corpora=entries,
        totals=totals(entries),
    )
    write_text_atomic(out / "manifest.json", manifest.to_json())
    for listing in ("rejected.jsonl", "speaker_outliers.jsonl"):
        lines = "".join(
            (out / n / listing).read_text(encoding="utf-8") for n in entries if (out / n / listing).is_file()
        )
        write_text_atomic(out / listing, lines)
    write_text_atomic(out / "summary.md", summary(manifest))
    return manifest, rebuilt


def _speaker_check(records: list[dict], settings: PrepareSettings) -> tuple[list[dict], float]:
    """Every clip's similarity to its corpus's speaker (in its metadata) and the clips far from it."""
    from .. import metrics

    similarities, threshold = metrics.speaker_outliers([r.pop("embedding", None) for r in records])
    outliers = []
    for record, similarity in zip(records, similarities):
        record["meta"]["speaker_similarity"] = None if similarity != similarity else round(similarity, 4)
        if similarity < threshold:
            meta = record["meta"]
            outliers.append(
                {
                    "key": record["key"],
                    "id": meta["id"],
                    "source": meta["source"],
                    "metadata": meta["metadata"],
                    "line": meta["line"],
                    "similarity": round(similarity, 4),
                    "threshold": round(threshold, 4),
                }
            )
    return sorted(outliers, key=lambda o: o["similarity"]), threshold


def _previous(path: Path) -> CorpusEntry | None:
    """The corpus entry an earlier run wrote, or None when there is none that this version can read."""
    try:
        return CorpusEntry.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


MIN_VAL_CLIPS = 5  # fewer validation clips per corpus make its validation loss a noisy figure


def summary(manifest: Manifest) -> str:
    """Markdown: samples and minutes per corpus and category, totals, and the seed's quality checks."""
    lines = ["# Prepared data", "", "| corpus | category | samples | minutes |", "|---|---|---:|---:|"]
    all_cats: Counter = Counter()
    for name, e in manifest.corpora.items():
        for c in CATEGORIES:
            n = sum(e.splits[s].categories[c] for s in ("train", "val"))
            sec = sum(e.splits[s].category_seconds[c] for s in ("train", "val"))
            if n:
                all_cats[c] += n
                lines.append(f"| {name} | {c} | {n} | {sec / 60:.1f} |")
        n = e.splits["train"].samples + e.splits["val"].samples
        sec = e.splits["train"].seconds + e.splits["val"].seconds
        lines.append(f"| **{name}** | all | **{n}** | **{sec / 60:.1f}** |")
    t = manifest.totals
    lines += [f"| **total** | | **{t['train'] + t['val']}** | **{t['seconds'] / 60:.1f}** |", ""]
    if not any(e.format == "subtitles" for e in manifest.corpora.values()):
        lines.append(
            f"Inputs {t['inputs']} = train {t['train']} + validation {t['val']} + rejected {t['rejected']}"
            " (rejected.jsonl says which and why)."
        )
    else:  # subtitle sources: several segments make one clip
        lines.append(
            f"Inputs {t['inputs']} (metadata lines and subtitle segments) = {t['train_inputs']} in "
            f"{t['train']} train clips + {t['val_inputs']} in {t['val']} validation clips + rejected "
            f"{t['rejected']} (rejected.jsonl says which and why)."
        )
    lines += ["", "## Quality checks", ""]
    minutes = t["seconds"] / 60
    styles = len(manifest.corpora)
    few_val = {
        n: e.splits["val"].samples for n, e in manifest.corpora.items() if e.splits["val"].samples < MIN_VAL_CLIPS
    }
    smallest = min((_clips(manifest, n) for n in few_val), default=1)
    checks = [
        (minutes > 30, f"total duration {minutes:.1f} min (the seed recommends over 30 minutes)"),
        (
            styles >= 2 and len(all_cats) >= 3,
            f"several speaking styles: {styles} {'corpus' if styles == 1 else 'corpora'}, "
            f"{len(all_cats)} {'category' if len(all_cats) == 1 else 'categories'}",
        ),
        (
            not few_val,
            f"validation clips in every corpus: {t['val']} held out"
            if not few_val
            else "few validation clips: "
            + ", ".join(f"{n} has {v}" for n, v in few_val.items())
            + f" (under {MIN_VAL_CLIPS}, its validation loss is noisy); raise --val_fraction, e.g. "
            f"--val_fraction {min(0.2, round(MIN_VAL_CLIPS / max(1, smallest) + 0.005, 2))}",
        ),
        (t["rejected"] == 0, f"every input usable: {t['rejected']} rejected"),
    ]
    for name, e in manifest.corpora.items():
        if e.speaker_outliers:
            verb = "rejected (other_speaker)" if e.settings.get("reject_other_speakers") else "kept"
            checks.append(
                (
                    False,
                    f"{name}: {e.speaker_outliers} clips far from the corpus's speaker (similarity < "
                    f"{e.speaker_threshold:.2f}), {verb}: see speaker_outliers.jsonl; another speaker "
                    "(an interviewer?) or degraded audio. --reject_other_speakers true leaves them out",
                )
            )
        elif e.settings.get("speaker_check"):
            checks.append((True, f"{name}: every clip close to the corpus's speaker"))
    lines += [f"- {'✅' if ok else '⚠️'} {text}" for ok, text in checks]
    return "\n".join(lines) + "\n"


def _clips(manifest: Manifest, name: str) -> int:
    e = manifest.corpora[name]
    return e.splits["train"].samples + e.splits["val"].samples
