"""`compare`: the same sentences from several exported models, side by side on one HTML page.

Objective figures per model: speaker similarity to the reference (cosine of speaker embeddings from
the first model's HiFiGAN speaker encoder, which `export` copies from the base, so every model is
measured with the same encoder), duration and real-time factor. The page embeds its audio, so it
is one self-contained file.
"""

from __future__ import annotations

import base64
import html
import json
import statistics
from pathlib import Path

import soundfile as sf
import torch

from .synthesis import Settings, generate, load_xtts, speaker_embedding_of, voice_from_references

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
    texts: list[str],
    temperatures: list[float],
    out: str | Path,
    settings: Settings | None = None,
) -> dict:
    settings = settings or Settings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = {name: load_xtts(path) for name, path in models.items()}
    judge = next(iter(loaded.values()))
    reference = voice_from_references(judge, references)[1].flatten()
    report = {
        "models": {},
        "texts": texts,
        "temperatures": temperatures,
        "references": [str(r) for r in references],
    }
    for name, path in models.items():
        index = generate(path, references, texts, temperatures, out / name, settings, model=loaded[name])
        for sample in index["samples"]:
            wav, rate = sf.read(out / name / sample["file"], dtype="float32")
            embedding = speaker_embedding_of(judge, wav, rate)
            sample["speaker_similarity"] = round(
                float(torch.nn.functional.cosine_similarity(embedding, reference, dim=0)), 4
            )
        samples = index["samples"]
        report["models"][name] = {
            "path": str(path),
            "samples": samples,
            "speaker_similarity": round(statistics.mean(s["speaker_similarity"] for s in samples), 4),
            "duration": round(statistics.mean(s["duration"] for s in samples), 3),
            "real_time_factor": round(statistics.mean(s["real_time_factor"] or 0 for s in samples), 3),
        }
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    (out / "index.html").write_text(render_html(report, out), encoding="utf-8")
    return report


def _audio_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<audio controls preload="none" src="data:audio/wav;base64,{data}"></audio>'


def render_html(report: dict, out: Path) -> str:
    names = list(report["models"])
    e = html.escape
    figures = "".join(
        f"<tr><th>{e(n)}</th><td>{m['speaker_similarity']:.3f}</td><td>{m['duration']:.2f} s</td>"
        f"<td>{m['real_time_factor']:.2f}</td><td><code>{e(m['path'])}</code></td></tr>"
        for n, m in report["models"].items()
    )
    rows = []
    by_model = {
        n: {(s["text"], s["temperature"]): s for s in m["samples"]} for n, m in report["models"].items()
    }
    for text in report["texts"]:
        for temperature in report["temperatures"]:
            cells = []
            for n in names:
                s = by_model[n][(text, temperature)]
                cells.append(
                    f"<td>{_audio_tag(out / n / s['file'])}<div class=fig>similarity "
                    f"{s['speaker_similarity']:.3f} · {s['duration']:.2f} s · RTF "
                    f"{s['real_time_factor'] or 0:.2f}</div></td>"
                )
            rows.append(f"<tr><td class=text>{e(text)}</td><td>{temperature:.2f}</td>{''.join(cells)}</tr>")
    checklist = "".join(f"<li>{e(item)}</li>" for item in CHECKLIST)
    heads = "".join(f"<th>{e(n)}</th>" for n in names)
    return f"""<!doctype html>
<html lang="hu"><head><meta charset="utf-8"><title>Compare: {e(" vs ".join(names))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: .4em .6em; vertical-align: top; text-align: left; }}
td.text {{ max-width: 28em; }} .fig {{ font-size: .8em; color: #555; }}
</style></head><body>
<h1>{e(" vs ".join(names))}</h1>
<p>Reference: {e(", ".join(report["references"]))}</p>
<h2>Objective figures</h2>
<table id="figures"><tr><th>model</th><th>speaker similarity to the reference</th><th>mean duration</th>
<th>real-time factor</th><th>model directory</th></tr>{figures}</table>
<p>Speaker similarity: cosine of speaker embeddings (the first model's HiFiGAN speaker encoder),
1.0 = the same voice. Real-time factor: synthesis time over audio time on the machine that made this page.</p>
<h2>What to listen for</h2><ol id="checklist">{checklist}</ol>
<h2>Samples</h2>
<table id="samples"><tr><th>text</th><th>temperature</th>{heads}</tr>{"".join(rows)}</table>
</body></html>
"""
