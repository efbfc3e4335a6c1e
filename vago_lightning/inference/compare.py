"""`compare`: the same sentences from several exported models, side by side on one HTML page.

Every sample is judged by models that are not being judged (`vago_lightning/metrics.py`): speaker
similarity to the references (resemblyzer), speech ratio and silences (silero-vad), speaking rate
against the references', and flags (no_speech, runaway, too_fast, too_slow). Figures are summed up
per model and per register (quiz-show lines, conversation lines). A sample without speech says so
instead of showing a similarity as if it meant something. The similarity by the first model's own
HiFiGAN speaker encoder stays as a second column, labelled as what it is. The page embeds its audio,
so it is one self-contained file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import statistics
from pathlib import Path

import soundfile as sf
import torch

from .export import read_origin
from .synthesis import (
    Sentence,
    Settings,
    generate,
    load_xtts,
    reference_profile,
    speaker_embedding_of,
    voice_from_references,
)

# The seed's "What to listen for".
CHECKLIST = [
    "Voice consistency: does it sound like the same person in every line?",
    "Smoothness: less choppy than before?",
    "Emotional accuracy: does the tone match the text?",
    "Natural pauses: is the pacing right?",
    "Quiz-show energy in the quiz lines, a conversational tone in the interview lines.",
]


def compare(
    models: dict[str, Path],
    references: list[Path],
    texts: list[Sentence],
    temperatures: list[float],
    out: str | Path,
    settings: Settings | None = None,
) -> dict:
    settings = settings or Settings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = {name: load_xtts(path) for name, path in models.items()}
    reference = reference_profile(references)
    first = next(iter(loaded.values()))  # its HiFiGAN speaker encoder: the second, labelled column
    xtts_reference = voice_from_references(first, references)[1].flatten()
    report = {
        "texts": [{"text": s.text, "register": s.register} for s in texts],
        "temperatures": temperatures,
        "references": [str(r) for r in references],
        "reference_speaking_rate": None if reference.rate != reference.rate else round(reference.rate, 3),
        "models": {},
    }
    for name, path in models.items():
        index = generate(path, references, texts, temperatures, out / name, settings, loaded[name], reference)
        for sample in index["samples"]:
            wav, rate = sf.read(out / name / sample["file"], dtype="float32")
            own = speaker_embedding_of(first, wav, rate)
            sample["xtts_encoder_similarity"] = round(float(torch.cosine_similarity(own, xtts_reference, dim=0)), 4)
        report["models"][name] = {
            "path": str(path),
            "origin": read_origin(path),
            "samples": index["samples"],
            **summarize(index["samples"]),
        }
    report["conclusion"] = conclusion(report["models"])
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    (out / "index.html").write_text(render_html(report, out, references), encoding="utf-8")
    return report


def describe_model(name: str, m: dict) -> str:
    """`combined: exported/demo-combined, run demo-combined at step 216`."""
    origin = m.get("origin")
    if not origin:
        return f"{name}: {m['path']} (no origin.json: not an export of a run, e.g. a base model)"
    run = f"run {origin['run']}" if origin.get("run") else origin["checkpoint"]
    return f"{name}: {m['path']}, {run} at step {origin['step']}"


def conclusion(models: dict[str, dict]) -> str:
    """The figures in one plain sentence or two; the ear still decides."""
    spoken = {n: m for n, m in models.items() if m["speaker_similarity"] is not None}
    silent = [f"{n} ({m['no_speech']} of {m['count']})" for n, m in models.items() if m["no_speech"]]
    if not spoken:
        text = (
            "No model produced speech in any sample: there is no voice to compare yet; train longer or check the run."
        )
    else:
        ranked = sorted(spoken.items(), key=lambda nm: -nm[1]["speaker_similarity"])
        best, rest = ranked[0], ranked[1:]
        text = f"{best[0]} sounds most like the reference speaker (similarity {best[1]['speaker_similarity']:.3f}"
        text += "".join(f", {n} {m['speaker_similarity']:.3f}" for n, m in rest) + ")."
        if len(spoken) < len(models):
            text += " " + ", ".join(sorted(set(models) - set(spoken))) + " produced no speech at all."
    if silent:
        text += f" Samples without speech: {', '.join(silent)}."
    runaway = [f"{n} ({m['runaway']})" for n, m in models.items() if m["runaway"]]
    if runaway:
        text += f" Samples that did not stop: {', '.join(runaway)}."
    return text + " Listen before choosing: the figures do not hear tone, energy or pacing."


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.mean(values), 4) if values else None


def summarize(samples: list[dict]) -> dict:
    """A model's figures over its samples, and per register. Similarity and speaking rate are
    averaged over the samples that hold speech only; how many did not is counted."""

    def figures(group: list[dict]) -> dict:
        spoken = [s for s in group if "no_speech" not in s["flags"]]
        return {
            "count": len(group),
            "no_speech": len(group) - len(spoken),
            "runaway": sum("runaway" in s["flags"] for s in group),
            "speaker_similarity": _mean(s["speaker_similarity"] for s in spoken),
            "speech_ratio": _mean(s["speech_ratio"] for s in group),
            "relative_rate": _mean(s["relative_rate"] for s in spoken),
            "duration": _mean(s["duration"] for s in group),
            "real_time_factor": _mean(s["real_time_factor"] for s in group),
        }

    registers = sorted({s["register"] for s in samples})
    return {
        **figures(samples),
        "registers": {r: figures([s for s in samples if s["register"] == r]) for r in registers},
    }


def _audio_tag(data: bytes) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<audio controls preload="none" src="data:audio/wav;base64,{encoded}"></audio>'


def _reference_audio(path: Path) -> bytes:
    wav, rate = sf.read(path, dtype="float32")
    buffer = io.BytesIO()
    sf.write(buffer, wav, rate, format="WAV")
    return buffer.getvalue()


def _figure(value, fmt: str = "{:.3f}") -> str:
    return "–" if value is None else fmt.format(value)


def _judgement(s: dict) -> str:
    if "no_speech" in s["flags"]:
        similarity = "no speech: similarity means nothing"
    else:
        similarity = f"similarity {_figure(s['speaker_similarity'])}"
    flags = "".join(f' <span class="flag">{html.escape(f)}</span>' for f in s["flags"] if f != "no_speech")
    return (
        f"{similarity} · speech {_figure(s['speech_ratio'], '{:.0%}')} · rate {_figure(s['relative_rate'], '{:.2f}x')}"
        f" · {s['duration']:.2f} s{flags}"
    )


def render_html(report: dict, out: Path, references: list[Path]) -> str:
    names = list(report["models"])
    e = html.escape
    summary = []
    for n, m in report["models"].items():
        for register, f in [("all", m), *m["registers"].items()]:
            summary.append(
                f"<tr><th>{e(n)}</th><td>{e(register)}</td><td>{_figure(f['speaker_similarity'])}</td>"
                f"<td>{f['no_speech']} of {f['count']}</td><td>{_figure(f['speech_ratio'], '{:.0%}')}</td>"
                f"<td>{_figure(f['relative_rate'], '{:.2f}x')}</td><td>{f['runaway']}</td>"
                f"<td>{_figure(f['duration'], '{:.2f} s')}</td><td>{_figure(f['real_time_factor'], '{:.2f}')}</td></tr>"
            )
    rows = []
    by_model = {n: {(s["text"], s["temperature"]): s for s in m["samples"]} for n, m in report["models"].items()}
    for sentence in report["texts"]:
        for temperature in report["temperatures"]:
            cells = []
            for n in names:
                s = by_model[n][(sentence["text"], temperature)]
                cells.append(
                    f"<td>{_audio_tag((out / n / s['file']).read_bytes())}<div class=fig>{_judgement(s)}"
                    f"<br>XTTS speaker encoder: {_figure(s['xtts_encoder_similarity'])}</div></td>"
                )
            rows.append(
                f"<tr><td class=text>{e(sentence['text'])}<div class=fig>{e(sentence['register'])}</div></td>"
                f"<td>{temperature:.2f}</td>{''.join(cells)}</tr>"
            )
    players = "".join(f"<div>{e(str(r))}<br>{_audio_tag(_reference_audio(Path(r)))}</div>" for r in references)
    checklist = "".join(f"<li>{e(item)}</li>" for item in CHECKLIST)
    heads = "".join(f"<th>{e(n)}</th>" for n in names)
    rate = report["reference_speaking_rate"]
    return f"""<!doctype html>
<html lang="hu"><head><meta charset="utf-8"><title>Compare: {e(" vs ".join(names))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: .4em .6em; vertical-align: top; text-align: left; }}
td.text {{ max-width: 28em; }} .fig {{ font-size: .8em; color: #555; }}
.flag {{ background: #fde2e1; color: #8a1c14; border-radius: 3px; padding: 0 .3em; }}
</style></head><body>
<h1>{e(" vs ".join(names))}</h1>
<ul id="models">{"".join(f"<li>{e(describe_model(n, m))}</li>" for n, m in report["models"].items())}</ul>
<h2>Reference</h2><div id="reference">{players}</div>
<p>Speaking rate of the references: {_figure(rate, "{:.1f} letters per second of speech")}{
        "" if rate is not None else " (unknown: no transcript found beside them)"
    }.</p>
<h2>Objective figures</h2>
<table id="figures"><tr><th>model</th><th>register</th><th>speaker similarity</th><th>no speech</th>
<th>speech ratio</th><th>speaking rate vs references</th><th>runaway</th><th>mean duration</th>
<th>real-time factor</th></tr>{"".join(summary)}</table>
<p>Measured by models that are not being judged. Speaker similarity: cosine of GE2E speaker
embeddings (resemblyzer) to the references' mean, over the samples that hold speech; the same voice
scores about 0.9, another voice under 0.75, noise about 0.5. No speech: silero-vad found less than
0.3 s of speech or under 10% of the sample. Speaking rate: letters per second of speech over the
references'; under 0.75x or over 1.25x is flagged. Runaway: generation ran to its token cap (the
model did not stop). The last line under each sample is the similarity by the first model's own
HiFiGAN speaker encoder, which scores even noise highly.</p>
<h2>What to listen for</h2><ol id="checklist">{checklist}</ol>
<h2>Samples</h2>
<table id="samples"><tr><th>text</th><th>temperature</th>{heads}</tr>{"".join(rows)}</table>
<h2>In short</h2><p id="conclusion">{e(report["conclusion"])}</p>
</body></html>
"""
