"""The manifest: what `prepare` wrote and what training reads, in one place.

    data_shards/manifest.json            Manifest: language, settings, base model, every corpus
    data_shards/<corpus>/corpus.json     CorpusEntry: its shards, splits and per-sample index

Both sides depend on this module and on nothing of each other: `prepare` builds these objects and
writes them; the DataModule loads and validates them. The index lets training plan every epoch
before reading any audio.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import DataError

MANIFEST_VERSION = 4  # 4: each corpus records its shards' sizes and SHA-256 (`files`)
READABLE_VERSIONS = (3, 4)  # a version 3 manifest loads with no records: its shards are not checked
CATEGORIES = ("short", "medium", "long", "question")
SPLITS = ("train", "val")


@dataclass
class IndexEntry:
    """One sample as training plans with it: where it is and how long it lasts."""

    key: str
    shard: str
    duration: float
    category: str


@dataclass
class Split:
    shards: list[str]
    samples: int  # clips
    inputs: int  # input lines or subtitle segments in those clips
    seconds: float
    categories: dict[str, int]
    category_seconds: dict[str, float]
    index: list[IndexEntry]

    @classmethod
    def from_dict(cls, d: dict) -> Split:
        return cls(**{**d, "index": [IndexEntry(**e) for e in d["index"]]})


@dataclass
class CorpusEntry:
    corpus: str
    input: str  # the corpus folder prepare read
    format: str  # coqui, ljspeech or subtitles
    fingerprint: str  # of the inputs and settings: unchanged means nothing to rebuild
    inputs: int  # input lines (or subtitle segments) read: train + val inputs + rejected
    settings: dict
    base_model: dict | None  # the base's fingerprint when codes were computed (see model.base)
    codes: bool  # the shards hold precomputed DVAE codes
    sample_rate: int
    splits: dict[str, Split]
    rejected: dict[str, int]  # reason -> count
    rejected_total: int
    speaker_outliers: int = 0  # clips far from the corpus's speaker (speaker_outliers.jsonl)
    speaker_threshold: float | None = None  # the similarity under which a clip counted as one
    files: dict[str, dict] = field(default_factory=dict)  # shard -> {size, sha256}; empty before version 4
    normalised: int = 0  # kept lines whose words coqui's text cleaning changes (normalised.jsonl)
    # The transcript audit (`prepare --asr_model`), None without one: {"asr_model": asr.model_fingerprint,
    # "clips": heard, "median_cer": the corpus's floor (what the recogniser gives real speech), "spread": how far
    # CERs stray from it, "threshold": the CER over which a clip is mismatched, "mismatched": count}
    audit: dict | None = None

    @classmethod
    def from_dict(cls, d: dict) -> CorpusEntry:
        return cls(**{**d, "splits": {name: Split.from_dict(s) for name, s in d["splits"].items()}})

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    def shard_names(self) -> list[str]:
        return [shard for split in self.splits.values() for shard in split.shards]


@dataclass
class Manifest:
    language: str
    settings: dict
    base_model: dict | None
    corpora: dict[str, CorpusEntry]
    totals: dict = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    @classmethod
    def from_dict(cls, d: dict, where: str) -> Manifest:
        if d.get("version") not in READABLE_VERSIONS:
            raise DataError(f"{where}: written by another version of prepare; run prepare again")
        try:
            return cls(**{**d, "corpora": {n: CorpusEntry.from_dict(e) for n, e in d["corpora"].items()}})
        except (KeyError, TypeError) as err:
            raise DataError(f"{where}: not a manifest prepare wrote ({err}); run prepare again") from None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    def samples(self, corpus: str, split: str) -> list[IndexEntry]:
        return self.corpora[corpus].splits[split].index


def totals(entries: dict[str, CorpusEntry]) -> dict:
    t = {"inputs": 0, "train": 0, "val": 0, "train_inputs": 0, "val_inputs": 0, "rejected": 0, "seconds": 0.0}
    for e in entries.values():
        t["inputs"] += e.inputs
        for split in ("train", "val"):
            t[split] += e.splits[split].samples
            t[f"{split}_inputs"] += e.splits[split].inputs
        t["rejected"] += e.rejected_total
        t["seconds"] += e.splits["train"].seconds + e.splits["val"].seconds
    t["seconds"] = round(t["seconds"], 3)
    return t


# ---------------------------------------------------------------------------------------------
# Reading: a local folder or any URL webdataset opens (http(s)://, gs://, pipe:COMMAND)


def is_url(location: str) -> bool:
    return "://" in location or location.startswith("pipe:")


def join(root: str, *parts: str) -> str:
    """A file of the shards folder `root`: the path is appended, or put in place of `{}` for commands
    that take it in the middle (`pipe:aws s3 cp s3://bucket/data_shards/{} -`)."""
    path = "/".join(parts)
    if "{}" in str(root):
        return str(root).replace("{}", path)
    return "/".join([str(root).rstrip("/"), path])


def read_text(location: str) -> str:
    if is_url(location):
        import webdataset as wds

        try:
            with wds.gopen(location) as stream:
                return stream.read().decode("utf-8")
        except OSError as err:  # webdataset's message is the whole Popen call; keep what tells why
            status = re.search(r"exit (-?\d+)", str(err))
            why = f"its reader exited with status {status.group(1)}" if status else str(err)
            raise DataError(
                f"{location}: could not be read ({why}); check --data.shards_dir (a folder, an http(s):// or "
                f"gs:// address, or pipe:COMMAND) and that prepare's output folder was copied there whole"
            ) from None
    path = Path(location)
    if not path.is_file():
        raise DataError(f"{path}: not found; run `python -m vago_lightning prepare ... --out {path.parent}` first")
    return path.read_text(encoding="utf-8")


def load_manifest(shards_dir: str) -> Manifest:
    where = join(shards_dir, "manifest.json")
    text = read_text(where)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: not valid JSON ({err}); run prepare again") from None
    return Manifest.from_dict(data, where)


def prepare_command(manifest: Manifest, shards_dir: str, corpora: list[str]) -> str:
    """The prepare command that rewrites the shards of `corpora` (with the settings prepare used)."""
    parts = ["python -m vago_lightning prepare"]
    parts += [f"--corpus {name}={manifest.corpora[name].input}" for name in corpora]
    parts.append(f"--out {shards_dir}")
    bases = {(manifest.corpora[name].base_model or {}).get("path") for name in corpora} - {None}
    parts += [f"--base_model {base}" for base in sorted(bases)]
    return " ".join(parts)


def check_codes_match(manifest: Manifest, corpora: list[str], base: dict, base_dir: str, where: str) -> None:
    """Refuse shards whose precomputed DVAE codes came from another DVAE or other mel statistics.
    `base` is the fingerprint of the run's base model (`model.base.base_fingerprint`)."""
    for name in corpora:
        entry = manifest.corpora[name]
        if not entry.codes:
            continue
        made_with = entry.base_model or {}
        for file, key in (("dvae.pth", "dvae_sha256"), ("mel_stats.pth", "mel_stats_sha256")):
            if made_with.get(key) != base[key]:
                raise DataError(
                    f"{where}: corpus {name!r} has DVAE codes made with {made_with.get('path')}/{file}, "
                    f"which "
                    f"differs from {Path(base_dir) / file}; run prepare again with --base_model {base_dir}"
                )
