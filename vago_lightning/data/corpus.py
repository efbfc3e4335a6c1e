"""Reading corpora: coqui's fine-tuning CSV, LJSpeech, and long recordings with subtitles.

Every physical line of a metadata.csv, and every subtitle segment, is one input: it becomes part of
an `Item` (a clip to prepare) or a `Rejection` that names its source, line and reason, so that what
`prepare` writes can be accounted for input by input.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..constants import SENTENCE_END
from ..errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
SUBTITLE_SUFFIXES = (".srt", ".vtt", ".json")

# (reason, detail) when a text cannot be used, else None (see prepare's text checks).
TextCheck = Callable[[str], "tuple[str, str] | None"]


@dataclass
class Item:
    """One clip to prepare: an input line, or a cut of a long recording."""

    id: str
    text: str
    audio: Path
    source: str  # the file the item came from (metadata.csv or the subtitle file)
    line: int | None  # 1-based line in `source` (for subtitles: the first segment's timing line)
    speaker: str = ""
    start: float | None = None  # seconds into `audio`, for cuts of long recordings
    end: float | None = None
    segments: list[tuple[int, int | None]] = field(default_factory=list)  # subtitle (number, line) in the clip

    @property
    def inputs(self) -> int:
        """How many inputs this clip accounts for: one line, or its subtitle segments."""
        return max(1, len(self.segments))


@dataclass
class Rejection:
    source: str
    line: int | None
    reason: str
    detail: str
    id: str = ""
    segment: int | None = None  # the subtitle segment number, for subtitle sources


def rejections_of(item: Item, reason: str, detail: str) -> list[Rejection]:
    """An item that cannot be used, as one rejection per input it stands for."""
    if not item.segments:
        return [Rejection(item.source, item.line, reason, detail, item.id)]
    return [Rejection(item.source, line, reason, detail, item.id, number) for number, line in item.segments]


_KEY_SAFE = re.compile(r"[A-Za-z0-9_-]+")
_HASHED = re.compile(r".*-[0-9a-f]{8}")


def shard_key(item_id: str) -> str:
    """A WebDataset key, distinct for distinct ids. WebDataset cuts keys at the first dot, so a key
    holds only [A-Za-z0-9_-]: an id of those alone is its own key; any other id is folded to them
    (accents dropped, the rest _) for a readable key, and gets 8 hex digits of its SHA-1, so that
    `kör_01` and `kér_01`, or `a b` and `a_b`, stay apart. Own keys never end like a hashed one."""
    if _KEY_SAFE.fullmatch(item_id) and not _HASHED.fullmatch(item_id):
        return item_id
    folded = "".join(c for c in unicodedata.normalize("NFKD", item_id) if not unicodedata.combining(c))
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", folded)
    return f"{readable}-{hashlib.sha1(item_id.encode('utf-8')).hexdigest()[:8]}"


def key_safe(name: str) -> bool:
    """Whether `name` may be used as it is inside keys (corpus names)."""
    return bool(_KEY_SAFE.fullmatch(name))


def read_corpus(root: Path, text_check: TextCheck | None = None) -> tuple[list[Item], list[Rejection], str]:
    """Items of the corpus at `root`, inputs that could not be read, and the format found. Subtitle
    segments whose text fails `text_check` are rejected alone, before any are merged into clips."""
    metadata = root / "metadata.csv"
    if metadata.is_file():
        with open(metadata, encoding="utf-8-sig", newline="") as f:
            first = f.readline().strip().lower()
        if first.startswith("audio_file|text"):
            return (*_read_coqui_csv(root, metadata), "coqui")
        return (*_read_ljspeech(root, metadata), "ljspeech")
    pairs = _recordings_with_subtitles(root)
    if pairs:
        items, rejections = [], []
        for audio, subtitles in pairs:
            got, bad = items_from_subtitles(audio, subtitles, text_check)
            items += got
            rejections += bad
        return items, rejections, "subtitles"
    raise DataError(
        f"{root}: no metadata.csv and no recording with a .srt/.vtt/.json subtitle file of the same name; "
        "see README 'Training on your own corpora'"
    )


def _lines(metadata: Path):
    """(line number, fields) of every non-blank physical line. Both formats are plain `|`-separated
    lines: a quote is text, never a field delimiter that could swallow the next line."""
    with open(metadata, encoding="utf-8-sig", newline="") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line.split("|")


def _malformed(metadata: Path, number: int, fields: list[str], expected: str, item_id: str) -> Rejection:
    return Rejection(
        str(metadata), number, "malformed_line", f"expected {expected}, got {len(fields)} field(s)", item_id
    )


def _read_coqui_csv(root: Path, metadata: Path):
    items, rejections = [], []
    for number, fields in _lines(metadata):
        if number == 1:
            continue  # header
        audio_file = fields[0].strip().replace("\\", "/")  # wavs\kviz_031.wav, as Windows writes it
        item_id = Path(audio_file).stem
        if len(fields) not in (2, 3):
            rejections.append(_malformed(metadata, number, fields, "audio_file|text|speaker_name", item_id))
            continue
        items.append(
            Item(
                id=item_id,
                text=fields[1].strip(),
                audio=root / audio_file,
                source=str(metadata),
                line=number,
                speaker=fields[2].strip() if len(fields) > 2 else "",
            )
        )
    return items, rejections


def _read_ljspeech(root: Path, metadata: Path):
    items, rejections = [], []
    for number, fields in _lines(metadata):
        item_id = fields[0].strip()
        if len(fields) not in (2, 3):
            rejections.append(_malformed(metadata, number, fields, "id|text|normalized_text", item_id))
            continue
        text = fields[2].strip() if len(fields) > 2 and fields[2].strip() else fields[1].strip()
        items.append(
            Item(
                id=item_id,
                text=text,
                audio=root / "wavs" / f"{item_id}.wav",
                source=str(metadata),
                line=number,
            )
        )
    return items, rejections


def _recordings_with_subtitles(root: Path) -> list[tuple[Path, Path]]:
    pairs = []
    for audio in sorted(p for p in root.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES):
        for suffix in SUBTITLE_SUFFIXES:
            if audio.with_suffix(suffix).is_file():
                pairs.append((audio, audio.with_suffix(suffix)))
                break
    return pairs


# ---------------------------------------------------------------------------------------------
# Subtitles


@dataclass
class Segment:
    start: float
    end: float
    text: str
    number: int  # 1-based segment number in the subtitle file
    line: int | None = None  # 1-based line of its timing line in the file (None for JSON)


_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")


def _seconds(stamp: str) -> float:
    m = _TIME.fullmatch(stamp.strip())
    if not m:
        raise ValueError(f"bad timestamp {stamp!r}")
    hours, minutes, seconds, fraction = m.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(fraction.ljust(3, "0")) / 1000


def parse_subtitles(path: Path) -> list[Segment]:
    """Segments of an .srt or .vtt file, or of a JSON list of {start, end, text} (seconds)."""
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data = data.get("segments", [])
        return [
            Segment(float(s["start"]), float(s["end"]), str(s["text"]).strip(), i) for i, s in enumerate(data, start=1)
        ]
    segments = []
    block: list[tuple[int, str]] = []
    lines = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n").split("\n")
    for number, line in enumerate([*lines, ""], start=1):
        if line.strip():
            block.append((number, line))
            continue
        arrow = next((i for i, (_, text) in enumerate(block) if "-->" in text), None)
        if arrow is not None:  # else a WEBVTT header, NOTE block or style
            start, end = (part.strip().split(" ")[0] for part in block[arrow][1].split("-->"))
            text = " ".join(re.sub(r"<[^>]+>", "", t).strip() for _, t in block[arrow + 1 :])
            segments.append(Segment(_seconds(start), _seconds(end), text, len(segments) + 1, block[arrow][0]))
        block = []
    return segments


def _sentences(segment: Segment) -> list[Segment]:
    """Split a segment at sentence ends, with times interpolated by character count."""
    parts = [p for p in SENTENCE_END.split(segment.text.strip()) if p]
    if len(parts) <= 1:
        return [segment]
    total = sum(len(p) for p in parts)
    out, t = [], segment.start
    for part in parts:
        span = (segment.end - segment.start) * len(part) / total
        out.append(Segment(t, t + span, part, segment.number, segment.line))
        t += span
    return out


def plan_cuts(
    segments: list[Segment],
    min_seconds: float = 2.0,
    max_seconds: float = 10.0,
    max_gap: float = 1.5,
    pad: float = 0.15,
    skip: frozenset[int] = frozenset(),
) -> list[tuple[float, float, str, list[Segment]]]:
    """Cut points for clips of 2-10 s: sentences are merged with their neighbours while the clip is
    short, a clip closes at a sentence end once it is long enough, never across a long pause nor
    across a segment in `skip` (rejected: its speech is in no clip), and each side gets up to `pad`
    seconds of padding (at most half the gap to the neighbour, skipped segments included)."""
    ordered = sorted(segments, key=lambda s: s.start)
    blockers = [(s.start, s.end) for s in ordered if s.number in skip]
    pieces = [p for seg in ordered if seg.number not in skip for p in _sentences(seg) if p.text.strip()]
    groups: list[list[Segment]] = []
    for piece in pieces:
        if groups:
            current = groups[-1]
            duration = piece.end - current[0].start
            gap = piece.start - current[-1].end
            long_enough = current[-1].end - current[0].start >= min_seconds
            ends_sentence = current[-1].text.rstrip().endswith((".", "!", "?", "…"))
            blocked = any(current[-1].start < b_start < piece.start + 1e-9 for b_start, _ in blockers)
            if duration <= max_seconds and gap <= max_gap and not blocked and not (long_enough and ends_sentence):
                current.append(piece)
                continue
        groups.append([piece])
    cuts = []
    for i, group in enumerate(groups):
        start, end = group[0].start, group[-1].end
        before = max([groups[i - 1][-1].end if i > 0 else 0.0] + [b for a, b in blockers if a < start])
        after = min(
            [groups[i + 1][0].start if i + 1 < len(groups) else end + 2 * pad] + [a for a, b in blockers if b > end]
        )
        start = max(0.0, start - max(0.0, min(pad, (start - before) / 2)))
        end = end + max(0.0, min(pad, (after - end) / 2))
        used = sorted({s.number: s for s in group}.values(), key=lambda s: s.number)
        cuts.append((start, end, " ".join(s.text.strip() for s in group), used))
    return cuts


def items_from_subtitles(
    audio: Path, subtitles: Path, text_check: TextCheck | None = None
) -> tuple[list[Item], list[Rejection]]:
    try:
        segments = parse_subtitles(subtitles)
    except (ValueError, KeyError, json.JSONDecodeError) as err:
        return [], [Rejection(str(subtitles), None, "malformed_subtitles", str(err))]
    rejected = []
    length = _audio_seconds(audio)
    for seg in segments:
        text = " ".join(seg.text.split())
        problem = _timing_problem(seg, length)
        if problem is None:
            problem = text_check(text) if text_check else (None if text else ("empty_text", "no text"))
        if problem:
            reason, detail = problem
            rejected.append(
                Rejection(
                    str(subtitles),
                    seg.line,
                    reason,
                    f"segment {seg.number}: {detail}",
                    f"{audio.stem}_segment{seg.number:04d}",
                    seg.number,
                )
            )
    skip = frozenset(r.segment for r in rejected)
    items = []
    for index, (start, end, text, used) in enumerate(plan_cuts(segments, skip=skip)):
        items.append(
            Item(
                id=f"{audio.stem}_{index:04d}",
                text=text,
                audio=audio,
                source=str(subtitles),
                line=used[0].line,
                start=start,
                end=end if length is None else min(end, length),  # padding stops at the end of the audio
                segments=[(s.number, s.line) for s in used],
            )
        )
    return items, rejected


TIMING_TOLERANCE = 0.05  # seconds a subtitle may run past the end of its audio (rounded timestamps)


def _audio_seconds(audio: Path) -> float | None:
    """The recording's length from its header, or None when it cannot be read (its clips are then
    rejected when decoded, with the reason)."""
    import soundfile as sf

    try:
        return float(sf.info(str(audio)).duration)
    except Exception:  # noqa: BLE001 - any unreadable file: the decoder says why later
        return None


def _timing_problem(seg: Segment, length: float | None) -> tuple[str, str] | None:
    """("bad_timing", detail) for a segment whose times cannot be cut from its recording."""
    span = f"{seg.start:.2f} --> {seg.end:.2f} s"
    if seg.end <= seg.start:
        return "bad_timing", f"ends before it starts ({span}): fix its timing line"
    if length is not None and seg.end > length + TIMING_TOLERANCE:
        return (
            "bad_timing",
            f"runs past the end of the audio ({span}, the recording is {length:.2f} s long): its text would "
            "not match a shortened clip; fix its timing line or the recording",
        )
    return None
