"""`report`: did stage two keep the quiz voice and learn the interview? One self-contained page.

It reads what the runs already wrote and re-runs nothing: the TensorBoard event files of the run and
of its baseline (`lightning_logs/<run>/`, read with tensorboard's own reader) and their best.ckpt.

- Curves (matplotlib, inline PNG): text and mel cross-entropies, train and validation, the baseline
  then the run on one continued step axis; validation loss per corpus with the best checkpoint
  marked; LR and gradient norm with the guard's skipped steps, rollbacks and stops and the warning
  signs as marks; the sample judge's figures per register when the run logged them.
- A table per corpus: validation losses before (the run's starting point: the baseline's best
  weights validated on every corpus at step 0) and at the run's best, and the change in %; the
  verdict the seed asks for: the baseline's corpora no worse than 5% while the new ones improve.
- The seed's expected figures, labelled as expected for the real XTTS-v2 weights.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import UsageError

KEEP_TOLERANCE = 5.0  # % a corpus the baseline learned may get worse before the verdict says "forgotten"
# The seed's expectations, for the real XTTS-v2 weights (a tiny random model is not graded by them).
SEED_EXPECTED = [
    ("train/loss_text_ce", "text CE (train)", 0.0267, "~0.020"),
    ("train/loss_mel_ce", "mel CE (train)", 2.13, "1.5-1.8"),
    ("val/loss", "eval loss", 5.07, "3.0-4.0"),
]
MEASURES = ("loss", "loss_text_ce", "loss_mel_ce")


@dataclass
class RunLogs:
    name: str
    scalars: dict[str, list[tuple[int, float]]]
    best_step: int | None  # the step of the lowest val/loss point (the one best.ckpt holds)
    config: dict = field(default_factory=dict)

    def at(self, tag: str, step: int | None) -> float | None:
        return next((v for s, v in self.scalars.get(tag, []) if s == step), None) if step is not None else None

    def last_step(self) -> int:
        return max((s for points in self.scalars.values() for s, _ in points), default=0)

    def corpora(self) -> list[str]:
        return sorted({t.split("/")[1] for t in self.scalars if t.startswith("val/") and t.count("/") == 2})

    def starting_point(self) -> bool:
        return bool(self.scalars.get("val/starting_point"))


def read_run(name: str, logs: Path = Path("lightning_logs")) -> RunLogs:
    """A run's scalars from its own event files (not those of `validate-*` beside them)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = logs / name
    if not folder.is_dir() or not list(folder.glob("events.out.tfevents.*")):
        raise UsageError(f"{folder}: no TensorBoard event files; is --run {name} the name of a run that trained?")
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    config = yaml.safe_load((folder / "config.yaml").read_text()) if (folder / "config.yaml").is_file() else {}
    start = 0 if scalars.get("val/starting_point") else None
    trained = [(s, v) for s, v in scalars.get("val/loss", []) if s != start]
    best = min(trained, key=lambda sv: sv[1])[0] if trained else None
    return RunLogs(name, scalars, best, config or {})


def baseline_of(run: RunLogs) -> str | None:
    """The run a run started from: the folder of its model.init_from checkpoint, when it has logs."""
    init_from = ((run.config.get("model") or {}).get("init_from")) or ""
    parent = Path(init_from).parent
    return parent.name if init_from and parent.parent.name == "checkpoints" else None


def corpus_table(run: RunLogs, baseline: RunLogs | None) -> list[dict]:
    """Per corpus and measure: before (the run's starting point, else the baseline at its best),
    after (the run at its best) and the change in %."""
    rows = []
    for corpus in run.corpora():
        for measure in MEASURES:
            tag = f"val/{corpus}/{measure}"
            before, source = run.at(tag, 0) if run.starting_point() else None, "the run's starting point (step 0)"
            if before is None and baseline is not None:
                before, source = baseline.at(tag, baseline.best_step), f"{baseline.name} at its best step"
            after = run.at(tag, run.best_step)
            change = None if before in (None, 0) or after is None else round(100.0 * (after - before) / before, 2)
            rows.append(
                {
                    "corpus": corpus,
                    "measure": measure,
                    "before": before,
                    "before_from": source,
                    "after": after,
                    "change_percent": change,
                }
            )
    return rows


def verdict(rows: list[dict], kept: list[str]) -> dict:
    """The seed's question: the corpora the baseline trained on (`kept`) no worse than KEEP_TOLERANCE %,
    while every other corpus (the new ones) improves."""
    loss = {r["corpus"]: r["change_percent"] for r in rows if r["measure"] == "loss"}
    lines, ok = [], True
    for corpus, change in sorted(loss.items()):
        if change is None:
            ok = False
            lines.append(f"{corpus}: no before/after figure")
        elif corpus in kept:
            good = change <= KEEP_TOLERANCE
            ok &= good
            lines.append(
                f"{corpus} (kept from the baseline): {change:+.1f}% "
                f"{'within' if good else 'beyond'} the {KEEP_TOLERANCE:.0f}% allowed"
            )
        else:
            good = change < 0
            ok &= good
            lines.append(f"{corpus} (new): {change:+.1f}% {'improved' if good else 'did not improve'}")
    return {
        "ok": ok,
        "kept_corpora": kept,
        "lines": lines,
        "summary": "kept the baseline's voice and learned the new corpora"
        if ok
        else "did not both keep the baseline's corpora and learn the new ones",
    }


# ---------------------------------------------------------------------------------------------
# Curves


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _series(run: RunLogs, tag: str, offset: int, skip_start: bool = False):
    points = [(s + offset, v) for s, v in run.scalars.get(tag, []) if not (skip_start and s == 0)]
    return [s for s, _ in points], [v for _, v in points]


def plot_losses(runs: list[tuple[RunLogs, int]]) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, measure, title in zip(axes, ("loss_text_ce", "loss_mel_ce"), ("text cross-entropy", "mel cross-entropy")):
        for run, offset in runs:
            ax.plot(*_series(run, f"train/{measure}", offset), lw=1, alpha=0.7, label=f"{run.name} train")
            ax.plot(*_series(run, f"val/{measure}", offset), "o-", ms=3, label=f"{run.name} validation")
            if offset:
                ax.axvline(offset, color="grey", ls=":", lw=1)
        ax.set(title=title, xlabel="step (stages continued)")
        ax.legend(fontsize=7)
    return _png(fig)


def plot_corpora(runs: list[tuple[RunLogs, int]]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 3.6))
    for run, offset in runs:
        for corpus in run.corpora():
            xs, ys = _series(run, f"val/{corpus}/loss", offset)
            ax.plot(xs, ys, "o-", ms=3, label=f"{run.name}: {corpus}")
        if run.best_step is not None:
            best = run.at("val/loss", run.best_step)
            ax.plot(
                [run.best_step + offset],
                [best],
                "*",
                ms=14,
                color="gold",
                mec="black",
                label=f"{run.name}: best.ckpt (step {run.best_step})",
            )
        if offset:
            ax.axvline(offset, color="grey", ls=":", lw=1)
    ax.set(title="validation loss per corpus", xlabel="step (stages continued)")
    ax.legend(fontsize=7)
    return _png(fig)


EVENT_TAGS = (
    "guard/skipped_steps",
    "guard/rollback",
    "guard/stop",
    "warning_signs/plateau",
    "warning_signs/overfit",
    "warning_signs/non_finite",
)


def events(run: RunLogs) -> list[dict]:
    out = []
    for tag in EVENT_TAGS:
        for step, value in run.scalars.get(tag, []):
            out.append({"run": run.name, "event": tag, "step": step, "value": value})
    return sorted(out, key=lambda e: e["step"])


def plot_training(runs: list[tuple[RunLogs, int]]) -> str:
    plt = _plt()
    fig, (lr, grad) = plt.subplots(1, 2, figsize=(11, 3.6))
    for run, offset in runs:
        lr.plot(*_series(run, "lr-AdamW/pg1", offset), label=run.name)
        grad.plot(*_series(run, "train/grad_norm", offset), lw=1, label=run.name)
        for event in events(run):
            for ax in (lr, grad):
                ax.axvline(
                    event["step"] + offset,
                    color="red" if event["event"].startswith("guard") else "orange",
                    lw=1,
                    alpha=0.8,
                )
    lr.set(title="learning rate", xlabel="step")
    grad.set(title="gradient norm (red: guard, orange: warning signs)", xlabel="step", yscale="log")
    for ax in (lr, grad):
        ax.legend(fontsize=7)
    return _png(fig)


def plot_samples(runs: list[tuple[RunLogs, int]]) -> str | None:
    tags = sorted({t for run, _ in runs for t in run.scalars if t.startswith("samples/")})
    if not tags:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, name in zip(axes, ("speaker_similarity", "speech_ratio")):
        for run, offset in runs:
            for tag in (t for t in tags if t.startswith(f"samples/{name}/")):
                ax.plot(*_series(run, tag, offset), "o-", ms=3, label=f"{run.name}: {tag.split('/')[-1]}")
        ax.set(title=f"samples: {name.replace('_', ' ')}", xlabel="step", ylim=(0, 1))
        ax.legend(fontsize=7)
    return _png(fig)


# ---------------------------------------------------------------------------------------------
# The page


def build_report(run_name: str, baseline_name: str | None, out: Path, logs: Path = Path("lightning_logs")) -> dict:
    run = read_run(run_name, logs)
    baseline_name = baseline_name or baseline_of(run)
    baseline = read_run(baseline_name, logs) if baseline_name else None
    kept = baseline.corpora() if baseline is not None else []
    rows = corpus_table(run, baseline)
    stages = ([(baseline, 0)] if baseline else []) + [(run, baseline.last_step() if baseline else 0)]
    measured = {
        tag: (run.at(tag, run.best_step) if tag.startswith("val/") else _last(run, tag)) for tag, *_ in SEED_EXPECTED
    }
    report = {
        "run": run.name,
        "baseline": baseline.name if baseline else None,
        "best_step": run.best_step,
        "baseline_best_step": baseline.best_step if baseline else None,
        "corpora": rows,
        "verdict": verdict(rows, kept) if baseline else None,
        "events": [e for b, _ in stages for e in events(b)],
        "seed_expected": [
            {"tag": t, "what": w, "seed_before": b, "seed_expected": x, "measured": measured[t]}
            for t, w, b, x in SEED_EXPECTED
        ],
    }
    images = {
        "losses": plot_losses(stages),
        "corpora": plot_corpora(stages),
        "training": plot_training(stages),
        "samples": plot_samples(stages),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    (out / "index.html").write_text(render(report, images), encoding="utf-8")
    return report


def _last(run: RunLogs, tag: str) -> float | None:
    points = run.scalars.get(tag)
    return points[-1][1] if points else None


def _fmt(value, spec: str = "{:.4f}") -> str:
    return "–" if value is None else spec.format(value)


def render(report: dict, images: dict) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(r['corpus'])}</td><td>{e(r['measure'])}</td><td>{_fmt(r['before'])}</td>"
        f"<td>{_fmt(r['after'])}</td><td>{_fmt(r['change_percent'], '{:+.1f}%')}</td>"
        f"<td class=fig>{e(r['before_from'])}</td></tr>"
        for r in report["corpora"]
    )
    v = report["verdict"]
    verdict_html = (
        f'<p id="verdict" class="{"ok" if v["ok"] else "bad"}"><b>{e(report["run"])} {e(v["summary"])}</b></p>'
        f"<ul>{''.join(f'<li>{e(line)}</li>' for line in v['lines'])}</ul>"
        if v
        else "<p id=verdict>No baseline: nothing to compare with.</p>"
    )
    seed = "".join(
        f"<tr><td>{e(s['what'])}</td><td>{s['seed_before']}</td><td>{e(s['seed_expected'])}</td>"
        f"<td>{_fmt(s['measured'])}</td></tr>"
        for s in report["seed_expected"]
    )
    event_rows = (
        "".join(
            f"<tr><td>{e(x['run'])}</td><td>{x['step']}</td><td>{e(x['event'])}</td><td>{x['value']:g}</td></tr>"
            for x in report["events"]
        )
        or "<tr><td colspan=4>none: no skipped step, rollback or warning sign</td></tr>"
    )
    imgs = {k: f'<img alt="{k}" src="data:image/png;base64,{v}">' for k, v in images.items() if v}
    samples = imgs.get("samples", "<p>The run logged no sample metrics (SampleAudio).</p>")
    title = f"{report['run']}" + (f" after {report['baseline']}" if report["baseline"] else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Report: {e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 70em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: .3em .6em; text-align: left; }}
.fig {{ font-size: .8em; color: #555; }} .ok {{ color: #1b5e20; }} .bad {{ color: #8a1c14; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{e(title)}</h1>
<h2>Verdict</h2>{verdict_html}
<h2>Validation per corpus: before and at the best checkpoint (step {report["best_step"]})</h2>
<table id="corpora"><tr><th>corpus</th><th>measure</th><th>before</th><th>at best</th><th>change</th>
<th>before is</th></tr>{rows}</table>
<h2>The seed's expectations</h2>
<p>The "seed" is the write-up of the original fine-tuning this tool reimplements (coqui's trainer on
the quiz-show corpus, then both corpora: 311 clips, 39.7 min, lr 2e-6, 30 epochs). It reports the losses
its run started from and the range they reached when the voice came out well:
what is expected for the real XTTS-v2 weights on a similar corpus, a yardstick rather than a pass mark.
They mean nothing for the demo's tiny random model, whose losses have other scales.</p>
<table id="seed"><tr><th>figure</th><th>seed: before</th><th>seed: expected after</th><th>measured</th></tr>
{seed}</table>
<h2>Cross-entropies, stages continued</h2>{imgs["losses"]}
<h2>Validation loss per corpus</h2>{imgs["corpora"]}
<h2>Learning rate, gradient norm, guard and warning signs</h2>{imgs["training"]}
<table id="events"><tr><th>run</th><th>step</th><th>event</th><th>value</th></tr>{event_rows}</table>
<h2>Samples</h2>{samples}
</body></html>
"""
