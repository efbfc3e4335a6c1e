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
import pickle
import random
import shutil
import sys
from array import array
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from itertools import chain, islice
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..constants import MAX_TEXT_TOKENS, MAX_WAV_SAMPLES, SAMPLE_RATE, UNK_TOKEN_ID, language_problem
from ..devices import pick_device
from ..errors import AudioError, DataError, UsageError
from ..files import Sink, free_bytes, human_bytes, is_disk_full, publish_dir, sha256_file, write_text_atomic
from ..log import quiet_known_noise, say
from ..metrics import EMBEDDING_SIZE
from ..normalise import join_digit_groups, spoken_form, words_changed
from .audio import Clip, ClipLimits, check_clip, encode_flac, load_clip
from .corpus import Item, Rejection, key_safe, read_corpus, rejections_of, shard_key
from .manifest import CATEGORIES, MANIFEST_VERSION, CorpusEntry, IndexEntry, Manifest, Split, totals
from .resume import ClipResults


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
TEXT_RULES = 2  # raised when what prepare does to a text changes: corpora are then prepared again


def category(seconds: float, text: str) -> str:
    """The seed's categories: question by its text, else short (< 4 s), medium (4-7 s), long (>= 7 s)."""
    if text.rstrip().endswith("?"):
        return "question"
    return "short" if seconds < 4 else ("medium" if seconds < 7 else "long")


def inputs_fingerprint(
    items: list[Item], rejections: list[Rejection], settings: PrepareSettings, base: dict | None, fmt: str
) -> str:
    """Changes when any input file (content of text files, size and mtime of audio) or setting does."""
    rules = [MANIFEST_VERSION, TEXT_RULES]
    digest = hashlib.sha256(json.dumps([asdict(settings), base, fmt, rules], sort_keys=True).encode())
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
# Per-clip work, in batches of clips, on a few threads of this process

BATCH = 16  # clips decoded together, then run through the DVAE and the speaker encoder together
MIN_BATCH, ROUNDS = 4, 4  # a small corpus gets smaller batches, down to 4 clips, for 4 per thread
CODE_GROUP = 8  # most clips of one padded DVAE batch (more: more padding for no gain on a CPU)
GROUP_SLACK = 0.15  # a DVAE batch computes at most this fraction more frames than its clips hold

_WORKER: dict = {}  # what every batch reads: the settings, and the models, loaded once per process


@dataclass(frozen=True)
class _RunSettings:
    """How prepare runs, which its output does not depend on (so not in the fingerprint)."""

    workers: int  # threads, each processing one batch at a time
    batch: int  # clips per batch
    device: str  # where the DVAE and the speaker encoder run
    progress: bool


def _init_worker(
    base_dir: Path | None, base: dict | None, limits: ClipLimits, settings: PrepareSettings, device: str
) -> None:
    """The settings and models every batch uses; the models are loaded again only for another base
    (its fingerprint) or device, so one prepare loads them once for all its corpora (and drops them
    at its end)."""
    import torch

    _WORKER.update(limits=limits, settings=settings, device=device)
    models = (str(base_dir), json.dumps(base, sort_keys=True), device) if base_dir else None
    if "models" in _WORKER and _WORKER["models"] == models:
        return
    _WORKER.update(models=models, dvae=None, mel=None)
    if base_dir:
        from ..model.base import load_dvae
        from ..model.features import dvae_mel

        _WORKER["dvae"] = load_dvae(Path(base_dir) / "dvae.pth").to(device)
        stats = torch.load(Path(base_dir) / "mel_stats.pth", map_location="cpu", weights_only=True)
        _WORKER["mel"] = dvae_mel(stats).to(device)


def _process(item: Item) -> dict:
    """Decode, check and encode one clip; the result is a record for a shard or a rejection. The
    decoded clip rides along (`_wav`) to its batch's model passes, which take it out."""
    settings: PrepareSettings = _WORKER["settings"]
    try:
        clip = load_clip(item.audio, item.start, item.end)
        if settings.trim_silence:
            clip = trim_silence(clip)
        check_clip(clip, _WORKER["limits"])
    except AudioError as err:
        return {"rejected": err.reason, "detail": err.detail}
    return {
        "flac": encode_flac(clip),
        "seconds": clip.seconds,
        "source_rate": clip.source_rate,
        "source_channels": clip.source_channels,
        "_wav": clip.wav,
    }


def _process_batch(items: list[Item]) -> list[dict]:
    """`_process` each of `items`, then the model passes over the clips kept: one speaker-encoder
    pass for all of them, and DVAE passes over groups of similar length. Results in item order."""
    records = [_process(item) for item in items]
    kept = [r for r in records if "_wav" in r]
    wavs = [r.pop("_wav") for r in kept]
    if kept and _WORKER["settings"].speaker_check:
        from .. import metrics

        # The whole clip (prepared clips are mostly speech), which spares a VAD pass per clip.
        for record, embedding in zip(kept, metrics.speaker_embeddings(wavs, SAMPLE_RATE, _WORKER["device"])):
            record["embedding"] = embedding
    if kept and _WORKER["dvae"] is not None:
        import torch

        from ..model.features import dvae_codes_many

        for group in length_groups([len(w) for w in wavs]):
            codes = dvae_codes_many(_WORKER["dvae"], _WORKER["mel"], [torch.from_numpy(wavs[i]) for i in group])
            for i, c in zip(group, codes):
                kept[i]["codes"] = c.cpu().numpy().astype(np.int16)
    return records


def length_groups(lengths: list[int], most: int = CODE_GROUP, slack: float = GROUP_SLACK) -> list[list[int]]:
    """Indices of `lengths` in groups of similar length, shortest first: each group pads its clips to
    its longest, so a group grows only while that padding stays within `slack` of its clips' length."""
    groups: list[list[int]] = []
    total = 0
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        group = groups[-1] if groups else None
        if group and len(group) < most and (len(group) + 1) * lengths[i] <= (1 + slack) * (total + lengths[i]):
            group.append(i)
            total += lengths[i]
        else:
            groups.append([i])
            total = lengths[i]
    return groups


def _run_clips(
    items: Iterable[Item], total: int, run: _RunSettings, label: str, done_before: int = 0
) -> Iterator[dict]:
    """The result of each of `items`, in order: decoded, checked and encoded in batches of `run.batch`
    clips on `run.workers` threads of this process (the models are loaded once, not once per worker
    process), a few batches per thread in flight at a time, so that results never pile up whatever
    the corpus size. The progress bar counts every clip of the corpus (`total`): `done_before` were
    settled already (rejected for their text)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    pool = ThreadPoolExecutor(run.workers, thread_name_prefix="prepare") if run.workers > 1 else None
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with pool or nullcontext(), Progress(*columns, disable=not run.progress) as bar:
        task = bar.add_task(label, total=total, completed=done_before)
        in_flight: deque = deque()
        try:
            items, size = iter(items), _batch_size(total - done_before, run)
            while chunk := list(islice(items, size)):
                in_flight.append(pool.submit(_process_batch, chunk) if pool else chunk)
                if len(in_flight) >= 2 * run.workers:
                    yield from _advanced(bar, task, _result(in_flight.popleft()))
            while in_flight:
                yield from _advanced(bar, task, _result(in_flight.popleft()))
        finally:
            for job in in_flight:  # stopped early (an error, a kill): the batches not started are dropped
                if isinstance(job, Future):
                    job.cancel()


def _batch_size(clips: int, run: _RunSettings) -> int:
    """`run.batch`, or less for a small corpus: at least ROUNDS batches per thread, so the threads
    finish close together (the last batch runs while the other threads may have nothing left)."""
    if run.workers == 1:
        return run.batch
    return min(run.batch, max(MIN_BATCH, -(-clips // (ROUNDS * run.workers))))


def _advanced(bar, task, results: list[dict]) -> Iterator[dict]:
    """Each result, the bar moved before it is handed on: the caller stops at the last one, so a bar
    moved after it would end at n-1 of n."""
    for result in results:
        bar.advance(task)
        yield result


def _result(job) -> list[dict]:
    return job.result() if isinstance(job, Future) else _process_batch(job)


@contextmanager
def _running(run: _RunSettings):
    """One torch thread per prepare thread on a CPU (each batch runs on one core, as in a worker
    process before, instead of every thread's operations waiting on one shared pool); the models
    are let go at the end."""
    import torch

    threads = torch.get_num_threads()
    if run.workers > 1 and run.device == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        _WORKER.clear()


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


def write_shards(directory: Path, split: str, records: Iterable[dict], shard_size: int) -> list[str]:
    """Write `records` in order into shards of `shard_size` (the i-th record lands in shard
    i // shard_size); returns the shard names."""
    import webdataset as wds

    names: list[str] = []
    with ExitStack() as open_shard:
        for i, record in enumerate(records):
            if i % shard_size == 0:
                open_shard.close()
                names.append(f"{split}-{len(names):06d}.tar")
                out = Sink(directory / names[-1])  # through files.Sink: a full disk is told apart
                open_shard.callback(out.close)  # after the tar's end is written
                sink = open_shard.enter_context(wds.TarWriter(out, mtime=0))
            sink.write(_encode_sample(record))
    return names


def shard_records(directory: Path, shards: list[str]) -> dict[str, dict]:
    """Each shard's size and SHA-256, which the pre-flight compares with what it finds."""
    return {s: {"size": (directory / s).stat().st_size, "sha256": sha256_file(directory / s)} for s in shards}


class _Kept(NamedTuple):
    """What prepare holds per clip while a corpus is processed; the clip itself waits in the spool."""

    key: str
    category: str
    duration: float
    inputs: int
    item: int  # its index in the corpus's items


class _Spool:
    """Processed clips on disk until the split is known: appended to one file and read back by
    offset, so prepare holds one clip at a time whatever the corpus size. With `embeddings`, speaker
    embeddings go to a second file (a NaN row for a clip without one), read back in chunks. The
    folder is removed when the spool is closed."""

    def __init__(self, folder: Path, embeddings: bool):
        folder.mkdir()
        self.folder = folder
        self.clips = open(folder / "clips.bin", "w+b")  # noqa: SIM115 - closed on exit
        self.embeddings = open(folder / "embeddings.f32", "w+b") if embeddings else None  # noqa: SIM115
        self.ends = array("q", [0])  # clip i is bytes ends[i]:ends[i + 1]

    def __enter__(self) -> _Spool:
        return self

    def __exit__(self, *exc) -> None:
        self.clips.close()
        if self.embeddings is not None:
            self.embeddings.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def add(self, record: dict, embedding: np.ndarray | None) -> None:
        self.clips.seek(self.ends[-1])
        self.clips.write(pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL))
        self.ends.append(self.clips.tell())
        if self.embeddings is not None:
            row = np.full(EMBEDDING_SIZE, np.nan, dtype=np.float32) if embedding is None else embedding
            self.embeddings.write(np.asarray(row, dtype=np.float32).tobytes())

    def __getitem__(self, i: int) -> dict:
        self.clips.seek(self.ends[i])
        return pickle.loads(self.clips.read(self.ends[i + 1] - self.ends[i]))  # written by add() above

    def embedding_chunks(self, rows: int = 4096) -> Iterator[np.ndarray]:
        self.embeddings.flush()
        self.embeddings.seek(0)
        while chunk := self.embeddings.read(rows * EMBEDDING_SIZE * 4):
            yield np.frombuffer(chunk, dtype=np.float32).reshape(-1, EMBEDDING_SIZE)


def _split(shards: list[str], kept: list[_Kept], shard_size: int) -> Split:
    """A split's entry; its index is what the trainer plans epochs with before reading any audio."""
    cats = Counter(k.category for k in kept)
    return Split(
        shards=shards,
        samples=len(kept),
        inputs=sum(k.inputs for k in kept),
        seconds=round(sum(k.duration for k in kept), 3),
        categories={c: cats.get(c, 0) for c in CATEGORIES},
        category_seconds={c: round(sum(k.duration for k in kept if k.category == c), 3) for c in CATEGORIES},
        index=[IndexEntry(k.key, shards[i // shard_size], k.duration, k.category) for i, k in enumerate(kept)],
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
    tokenizer,
    run: _RunSettings,
    previous: CorpusEntry | None,
) -> tuple[CorpusEntry, bool]:
    """Build (or keep) `out/<name>`; returns its corpus.json entry and whether it was rebuilt."""
    items, rejections, fmt = read_corpus(root, lambda text: text_problem(text, tokenizer, settings))
    fingerprint = inputs_fingerprint(items, rejections, settings, base, fmt)
    target = out / name
    if previous and previous.fingerprint == fingerprint and _shards_intact(target, previous):
        return previous, False

    rejected = list(rejections)
    accepted = array("l")  # indices of the items whose text can be used
    seen: dict[str, str] = {}  # key -> id
    for index, item in enumerate(items):
        key = shard_key(f"{name}_{item.id}")
        if seen.get(key) == item.id:
            problem = "duplicate_id", f"id {item.id!r} appears earlier in the corpus"
        elif key in seen:  # a hash collision of two ids: astronomically rare, but never a silent overwrite
            problem = "duplicate_id", f"id {item.id!r} has the same key {key} as {seen[key]!r}: rename one"
        else:
            problem = text_problem(_clean(item.text), tokenizer, settings)
        seen.setdefault(key, item.id)
        if problem:
            rejected += rejections_of(item, *problem)
        else:
            accepted.append(index)
            _say_if_long(name, item, tokenizer, settings.language)
    del seen

    limits = ClipLimits(min_seconds=settings.min_seconds, max_samples=settings.max_samples)
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
        rejected={},
        rejected_total=0,
    )
    with publish_dir(target) as tmp, ExitStack() as stack:
        # Each clip goes to the spool as soon as it is processed; only (key, category, duration) stay.
        spool = stack.enter_context(_Spool(tmp / ".spool", embeddings=settings.speaker_check))
        kept: list[_Kept] = []
        # Results of an interrupted run of the same command are replayed, not computed again.
        done = ClipResults(out / f".resume-{name}", fingerprint, asdict(settings), name)
        stack.callback(done.close)
        normalised: list[dict] = []  # lines whose words coqui's cleaning changes
        if len(accepted) > done.kept:
            _init_worker(base_dir, base, limits, settings, run.device)
        results = closing(
            _run_clips(
                (items[i] for i in accepted[done.kept :]),
                len(items),
                run,
                name,
                len(items) - len(accepted) + done.kept,
            )
        )
        for index, result in zip(accepted, chain(done.replay(), done.record(stack.enter_context(results)))):
            item = items[index]
            if "rejected" in result:
                rejected += rejections_of(item, result["rejected"], result["detail"])
                continue
            key, text = shard_key(f"{name}_{item.id}"), _clean(item.text)
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
            spoken = spoken_form(text, settings.language, tokenizer)
            if words_changed(item.text, spoken):
                where = {"corpus": name, "id": item.id, "source": item.source, "line": item.line}
                normalised.append({**where, "original": item.text, "spoken": spoken})
            record = {"key": key, "flac": result["flac"], "meta": meta}
            if "codes" in result:
                record["codes"] = result["codes"]
            spool.add(record, result.get("embedding"))
            kept.append(_Kept(key, sys.intern(cat), meta["duration"], item.inputs, index))

        similarities, outliers, threshold = None, [], None
        if settings.speaker_check:
            similarities, outliers, threshold = _speaker_check(spool)
        gone = set()
        if settings.reject_other_speakers:
            for o in outliers:
                detail = f"similarity {o['similarity']:.3f} to the corpus's speaker < {threshold:.2f}"
                rejected += rejections_of(items[kept[o["spooled"]].item], "other_speaker", detail)
            gone = {o["spooled"] for o in outliers}

        usable = [i for i in range(len(kept)) if i not in gone]  # positions in the spool
        strata = [{"key": kept[i].key, "category": kept[i].category} for i in usable]
        held = stratified_split(strata, settings.val_fraction, settings.seed, name)
        train = [i for i in usable if kept[i].key not in held]
        val = sorted((i for i in usable if kept[i].key in held), key=lambda i: kept[i].key)
        random.Random(f"{settings.seed}/{name}/order").shuffle(train)  # mixed categories in every shard

        for split, order in (("train", train), ("val", val)):
            clips = (_final(spool[i], similarities, i) for i in order)
            shards = write_shards(tmp, split, clips, settings.shard_size)
            entry.files.update(shard_records(tmp, shards))
            entry.splits[split] = _split(shards, [kept[i] for i in order], settings.shard_size)
        stack.close()  # the spool and its folder go before the corpus folder is published
        entry.rejected = dict(sorted(Counter(r.reason for r in rejected).items()))
        entry.rejected_total = len(rejected)
        entry.speaker_outliers = len(outliers)
        entry.normalised = len(normalised)
        entry.speaker_threshold = None if threshold is None or threshold != threshold else round(threshold, 4)
        with open(tmp / "rejected.jsonl", "w", encoding="utf-8") as f:
            for row in rejected:
                f.write(json.dumps(dict(asdict(row), corpus=name), ensure_ascii=False) + "\n")
        with open(tmp / "normalised.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in normalised)
        with open(tmp / "speaker_outliers.jsonl", "w", encoding="utf-8") as f:
            for o in outliers:
                row = {k: v for k, v in o.items() if k != "spooled"}
                f.write(
                    json.dumps(dict(row, corpus=name, rejected=settings.reject_other_speakers), ensure_ascii=False)
                    + "\n"
                )
        (tmp / "corpus.json").write_text(entry.to_json(), encoding="utf-8")
    done.done()
    return entry, True


def _say_if_long(name: str, item: Item, tokenizer, language: str) -> None:
    """coqui's "exceeds the character limit" warning, once per line and naming it."""
    limit = getattr(tokenizer, "char_limits", {}).get(language.split("-")[0], 250)
    if tokenizer is not None and len(_clean(item.text)) > limit:
        say(
            f"{name}: {item.source} line {item.line}: {len(_clean(item.text))} characters, over the {limit} "
            f"coqui-tts advises for '{language}' in one piece (it may cut such a text short when speaking it); "
            "training reads it whole"
        )


def _clean(text: str) -> str:
    """White space collapsed, and numbers written in groups of three joined (see normalise.py)."""
    return join_digit_groups(" ".join(text.split()))


def _final(record: dict, similarities: np.ndarray | None, i: int) -> dict:
    """A spooled clip as it goes into its final shard: with its similarity to the corpus's speaker."""
    if similarities is not None:
        similarity = float(similarities[i])
        record["meta"]["speaker_similarity"] = None if similarity != similarity else round(similarity, 4)
    return record


# ---------------------------------------------------------------------------------------------
# All corpora


def prepare(
    corpora: dict[str, Path],
    out: Path,
    settings: PrepareSettings,
    base_dir: Path | None = None,
    workers: int = 1,
    progress: bool = True,
    batch: int = BATCH,
    device: str = "cpu",
) -> tuple[Manifest, dict[str, bool]]:
    """Prepare every corpus; returns the manifest and, per corpus, whether it was rebuilt. `workers`
    threads process `batch` clips at a time each; the DVAE and the speaker encoder run on `device`."""
    quiet_known_noise()
    problem = language_problem(settings.language, "--language")
    if problem:
        raise UsageError(problem)  # before any folder is made
    run = _RunSettings(max(1, workers), max(1, batch), pick_device(device), progress)
    for name in corpora:
        if not key_safe(name):
            raise UsageError(f"--corpus {name}=...: corpus names may hold only letters, digits, _ and -")
    base, tokenizer = None, None
    if base_dir is not None:
        from ..model.base import base_fingerprint, check_base_dir, load_tokenizer

        base = base_fingerprint(check_base_dir(base_dir))
        tokenizer = load_tokenizer(base_dir)  # once for every corpus
    out.mkdir(parents=True, exist_ok=True)
    for stale in list(out.glob(".tmp-*")) + list(out.glob(".old-*")):
        shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted run; never read
    entries, rebuilt = {}, {}
    with _running(run):  # the thread setting, and the models dropped at the end
        for name, root in corpora.items():
            if not Path(root).is_dir():
                raise DataError(f"--corpus {name}={root}: directory not found")
            try:
                entries[name], rebuilt[name] = prepare_corpus(
                    name,
                    Path(root),
                    out,
                    settings,
                    base_dir,
                    base,
                    tokenizer,
                    run,
                    _previous(out / name / "corpus.json"),
                )
            except OSError as err:
                if not is_disk_full(err):
                    raise
                reached = getattr(err, "partial_bytes", None)
                need = f", and corpus {name!r} needs more than the {human_bytes(reached)} written" if reached else ""
                raise DataError(
                    f"{out}: the disk is full ({human_bytes(free_bytes(out))} free{need}); what {out} held "
                    f"before is untouched and the partial output was removed. Free some space and run the same "
                    "command again"
                ) from None
    manifest = Manifest(
        language=settings.language,
        settings=asdict(settings),
        base_model=base,
        corpora=entries,
        totals=totals(entries),
    )
    write_text_atomic(out / "manifest.json", manifest.to_json())
    for listing in ("rejected.jsonl", "speaker_outliers.jsonl", "normalised.jsonl"):
        lines = "".join(
            (out / n / listing).read_text(encoding="utf-8") for n in entries if (out / n / listing).is_file()
        )
        write_text_atomic(out / listing, lines)
    write_text_atomic(out / "summary.md", summary(manifest))
    return manifest, rebuilt


def _speaker_check(spool: _Spool) -> tuple[np.ndarray, list[dict], float]:
    """Every clip's similarity to its corpus's speaker, the clips far from it (with their position
    in the spool), and the threshold."""
    from .. import metrics

    similarities, threshold = metrics.speaker_outliers_in(spool.embedding_chunks)
    outliers = []
    for i in np.flatnonzero(similarities < threshold):
        meta = spool[int(i)]["meta"]
        outliers.append(
            {
                "key": meta["key"],
                "id": meta["id"],
                "source": meta["source"],
                "metadata": meta["metadata"],
                "line": meta["line"],
                "similarity": round(float(similarities[i]), 4),
                "threshold": round(threshold, 4),
                "spooled": int(i),
            }
        )
    return similarities, sorted(outliers, key=lambda o: o["similarity"]), threshold


def _shards_intact(target: Path, previous: CorpusEntry) -> bool:
    """Whether the shards an earlier run wrote are there with the sizes and SHA-256 it recorded (a
    shard cut short or altered since is written again; so is one of a prepare that recorded none)."""
    for shard in previous.shard_names():
        record, path = previous.files.get(shard), target / shard
        if record is None or not path.is_file() or path.stat().st_size != record["size"]:
            return False
        if sha256_file(path) != record["sha256"]:
            return False
    return True


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
            f"Inputs {t['inputs']} (metadata lines and subtitle segments) = {t['train_inputs']} making the "
            f"{t['train']} train clips + {t['val_inputs']} making the {t['val']} validation clips + rejected "
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
        _rejected_check(manifest),
        _normalised_check(manifest),
    ]
    for name, e in manifest.corpora.items():
        if e.speaker_outliers:
            rejecting = e.settings.get("reject_other_speakers")
            verb = "rejected (other_speaker)" if rejecting else "kept"
            hint = "" if rejecting else ". --reject_other_speakers true leaves them out"
            checks.append(
                (
                    False,
                    f"{name}: {e.speaker_outliers} clips far from the corpus's speaker (similarity < "
                    f"{e.speaker_threshold:.2f}), {verb}: see speaker_outliers.jsonl; another speaker "
                    f"(an interviewer?) or degraded audio{hint}",
                )
            )
        elif e.settings.get("speaker_check"):
            checks.append((True, f"{name}: every clip close to the corpus's speaker"))
    lines += [f"- {'✅' if ok else '⚠️'} {text}" for ok, text in checks]
    return "\n".join(lines) + "\n"


def _rejected_check(manifest: Manifest) -> tuple[bool, str]:
    """Rejections counted per reason, over every corpus."""
    reasons: Counter = Counter()
    for e in manifest.corpora.values():
        reasons.update(e.rejected)
    if not reasons:
        return True, "every input usable: none rejected"
    n = sum(reasons.values())
    counts = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items(), key=lambda rc: (-rc[1], rc[0])))
    return False, f"{n} {'input' if n == 1 else 'inputs'} rejected: {counts} (rejected.jsonl says which and why)"


def _normalised_check(manifest: Manifest) -> tuple[bool, str]:
    n = sum(e.normalised for e in manifest.corpora.values())
    if not n:
        return True, "text normalisation changed no line's words"
    return (
        False,
        f"text normalisation changed the words of {n} {'line' if n == 1 else 'lines'} (numbers and abbreviations "
        "spelled out, as XTTS reads them): normalised.jsonl lists each, original and spoken; make sure each "
        "still matches its audio, or write the words out in the transcript",
    )


def _clips(manifest: Manifest, name: str) -> int:
    e = manifest.corpora[name]
    return e.splits["train"].samples + e.splits["val"].samples
