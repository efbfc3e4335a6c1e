"""Reading corpora: coqui's fine-tuning CSV, LJSpeech, and long recordings with subtitles.

Every input line or subtitle segment becomes an `Item` (or a rejection that names its source and
line), so that what `prepare` writes can be accounted for input by input.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..constants import SENTENCE_END
from ..errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
SUBTITLE_SUFFIXES = (".srt", ".vtt", ".json")


@dataclass
class Item:
    """One clip to prepare: an input line, or a cut of a long recording."""

    id: str
    text: str
    audio: Path
    source: str  # the file the item came from (metadata.csv or the subtitle file)
    line: int | None  # 1-based line in `source`, or the segment number for subtitles
    speaker: str = ""
    start: float | None = None  # seconds into `audio`, for cuts of long recordings
    end: float | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Rejection:
    source: str
    line: int | None
    reason: str
    detail: str
    id: str = ""


def shard_key(item_id: str) -> str:
    """A WebDataset key: WebDataset cuts keys at the first dot, so anything but [A-Za-z0-9_-] becomes _."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", item_id)


def read_corpus(root: Path) -> tuple[list[Item], list[Rejection], str]:
    """Items of the corpus at `root`, lines that could not be read, and the format found."""
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
            got, bad = items_from_subtitles(audio, subtitles)
            items += got
            rejections += bad
        return items, rejections, "subtitles"
    raise DataError(
        f"{root}: no metadata.csv and no recording with a .srt/.vtt/.json subtitle file of the same name; "
        "see README 'Training on your own corpora'"
    )


def _rows(metadata: Path):
    with open(metadata, encoding="utf-8-sig", newline="") as f:
        for number, row in enumerate(csv.reader(f, delimiter="|", quoting=csv.QUOTE_MINIMAL), start=1):
            if row and any(cell.strip() for cell in row):
                yield number, row


def _read_coqui_csv(root: Path, metadata: Path):
    items, rejections = [], []
    for number, row in _rows(metadata):
        if number == 1:
            continue  # header
        if len(row) < 2:
            rejections.append(
                Rejection(
                    str(metadata),
                    number,
                    "malformed_line",
                    f"expected audio_file|text|speaker_name, got {len(row)} field(s)",
                )
            )
            continue
        audio = root / row[0].strip()
        items.append(
            Item(
                id=Path(row[0].strip()).stem,
                text=row[1].strip(),
                audio=audio,
                source=str(metadata),
                line=number,
                speaker=row[2].strip() if len(row) > 2 else "",
            )
        )
    return items, rejections


def _read_ljspeech(root: Path, metadata: Path):
    items, rejections = [], []
    for number, row in _rows(metadata):
        if len(row) < 2:
            rejections.append(
                Rejection(
                    str(metadata),
                    number,
                    "malformed_line",
                    f"expected id|text|normalized_text, got {len(row)} field(s)",
                )
            )
            continue
        text = row[2].strip() if len(row) > 2 and row[2].strip() else row[1].strip()
        items.append(
            Item(
                id=row[0].strip(),
                text=text,
                audio=root / "wavs" / f"{row[0].strip()}.wav",
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
            Segment(float(s["start"]), float(s["end"]), str(s["text"]).strip(), i)
            for i, s in enumerate(data, start=1)
        ]
    segments = []
    blocks = re.split(r"\n\s*\n", path.read_text(encoding="utf-8-sig").replace("\r\n", "\n"))
    for block in blocks:
        lines = [line for line in block.strip().split("\n") if line.strip()]
        arrow = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if arrow is None:
            continue  # WEBVTT header, NOTE blocks, styles
        start, end = (part.strip().split(" ")[0] for part in lines[arrow].split("-->"))
        text = " ".join(re.sub(r"<[^>]+>", "", line).strip() for line in lines[arrow + 1 :])
        segments.append(Segment(_seconds(start), _seconds(end), text, len(segments) + 1))
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
        out.append(Segment(t, t + span, part, segment.number))
        t += span
    return out


def plan_cuts(
    segments: list[Segment],
    min_seconds: float = 2.0,
    max_seconds: float = 10.0,
    max_gap: float = 1.5,
    pad: float = 0.15,
) -> list[tuple[float, float, str, list[int]]]:
    """Cut points for clips of 2-10 s: sentences are merged with their neighbours while the clip is
    short, a clip closes at a sentence end once it is long enough, never across a long pause, and
    each side gets up to `pad` seconds of padding (at most half the gap to the neighbour)."""
    pieces = [s for seg in sorted(segments, key=lambda s: s.start) for s in _sentences(seg) if s.text.strip()]
    groups: list[list[Segment]] = []
    for piece in pieces:
        if groups:
            current = groups[-1]
            duration = piece.end - current[0].start
            gap = piece.start - current[-1].end
            long_enough = current[-1].end - current[0].start >= min_seconds
            ends_sentence = current[-1].text.rstrip().endswith((".", "!", "?", "…"))
            if duration <= max_seconds and gap <= max_gap and not (long_enough and ends_sentence):
                current.append(piece)
                continue
        groups.append([piece])
    cuts = []
    for i, group in enumerate(groups):
        start, end = group[0].start, group[-1].end
        before = groups[i - 1][-1].end if i > 0 else 0.0
        after = groups[i + 1][0].start if i + 1 < len(groups) else end + pad
        start = max(0.0, start - min(pad, (start - before) / 2))
        end = end + min(pad, max(0.0, (after - end) / 2))
        numbers = sorted({s.number for s in group})
        cuts.append((start, end, " ".join(s.text.strip() for s in group), numbers))
    return cuts


def items_from_subtitles(audio: Path, subtitles: Path) -> tuple[list[Item], list[Rejection]]:
    try:
        segments = parse_subtitles(subtitles)
    except (ValueError, KeyError, json.JSONDecodeError) as err:
        return [], [Rejection(str(subtitles), None, "malformed_subtitles", str(err))]
    items = []
    for index, (start, end, text, numbers) in enumerate(plan_cuts(segments)):
        items.append(
            Item(
                id=f"{audio.stem}_{index:04d}",
                text=text,
                audio=audio,
                source=str(subtitles),
                line=numbers[0],
                start=start,
                end=end,
                extra={"segments": numbers},
            )
        )
    return items, []
