"""Peak memory of a short real `fit` per GPU profile, at full size, and the export of the 8 GB one.

    python benchmarks/bench_profile_fit.py --base DIR [--steps 3] [--profiles rtx4070-12gb rtx4060-8gb]

DIR is a release-shaped base (`tiny-base --like_release true`). A corpus of 9 espeak clips of exactly
11.0 s (Hungarian sentences spoken until 11 s, cut there) is prepared with DIR's DVAE; then, per
profile, `fit --config finetune.yaml --config configs/<profile>.yaml` runs `--steps` steps at batch 3
on the CPU (whatever the profile's accelerator says), with its validation and checkpoints, each in its
own process, whose peak RSS (the kernel's, from wait4) is the figure. The last profile's best.ckpt is
exported and loaded by coqui-tts strictly (`Xtts.load_checkpoint(strict=True)`), in another process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GB = 1024**3
SECONDS = 11.0


def long_corpus(out: Path, clips: int = 9) -> Path:
    """`clips` wavs of exactly SECONDS, in coqui's fine-tuning format."""
    import soundfile as sf

    from vago_lightning.demo.corpora import INTERVIEW_VOICE, SPEAKER
    from vago_lightning.demo.espeak import synthesize
    from vago_lightning.demo.text import interview_sentences

    sentences = iter(interview_sentences(0))
    (out / "wavs").mkdir(parents=True)
    rows = ["audio_file|text|speaker_name"]
    for i in range(clips):
        text, samples, rate = "", [], 22050
        while sum(len(s) for s in samples) < SECONDS * rate:
            sentence = next(sentences)
            wav, rate = synthesize(sentence, INTERVIEW_VOICE.name, INTERVIEW_VOICE.speed, INTERVIEW_VOICE.pitch)
            text, samples = f"{text} {sentence}".strip(), samples + [wav]
        import numpy as np

        sf.write(out / "wavs" / f"long_{i}.wav", np.concatenate(samples)[: int(SECONDS * rate)], rate)
        rows.append(f"wavs/long_{i}.wav|{text}|{SPEAKER}")
    (out / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out


def run_peak(cmd: list[str], cwd: Path, log: Path) -> tuple[int, float]:
    """Run `cmd`; its exit status and its peak RSS in GB (the child's own, from wait4)."""
    with open(log, "w") as f:
        child = subprocess.Popen(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024 / GB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--profiles", nargs="+", default=["rtx4070-12gb", "rtx4060-8gb"])
    parser.add_argument("--work", type=Path, help="keep the corpus, shards, runs and logs here")
    parser.add_argument(
        "--fp32",
        action="store_true",
        help="every profile at 32-true with an fp32 frozen base: for a CPU without native bf16, where bf16 "
        "products are emulated (a full-size forward would take hours); fp32 activations are the larger",
    )
    args = parser.parse_args()
    base = args.base.resolve()
    work = args.work or Path(tempfile.mkdtemp(prefix="profile-fit-"))
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    if not (work / "shards" / "manifest.json").is_file():
        long_corpus(work / "corpus")
        subprocess.run(
            [py, "-m", "vago_lightning", "prepare", "--corpus", f"long={work / 'corpus'}", "--base_model", str(base),
             "--out", str(work / "shards"), "--speaker_check", "false", "--quiet", "true", "--val_fraction", "0.1"],
            check=True,
        )  # fmt: skip
    results = {}
    for profile in args.profiles:
        cmd = [
            py, "-m", "vago_lightning", "fit", "--config", str(REPO / "finetune.yaml"),
            "--config", str(REPO / "configs" / f"{profile}.yaml"), "--run", profile,
            "--model.base_model", str(base), "--model.init_from", "null", "--model.validate_at_start", "false",
            "--data.shards_dir", str(work / "shards"), "--data.corpora", "[long]", "--data.num_workers", "0",
            "--trainer.accelerator", "cpu", "--trainer.max_steps", str(args.steps),
            "--trainer.val_check_interval", str(args.steps), "--trainer.limit_val_batches", "1",
        ]  # fmt: skip
        if args.fp32:
            cmd += ["--trainer.precision", "32-true", "--model.lora.base_dtype", "float32"]
        code, peak = run_peak(cmd, work, work / f"{profile}.log")
        results[profile] = {"exit": code, "peak_rss_gb": round(peak, 2)}
        print(f"{profile:14s} {args.steps}-step fit at batch 3 x {SECONDS} s: exit {code}, peak RSS {peak:.2f} GB")
    if len(results) == 2:
        a, b = (results[p]["peak_rss_gb"] for p in args.profiles)
        print(f"{args.profiles[1]} / {args.profiles[0]}: {b / a:.2f}x")
    last = args.profiles[-1]
    exported = work / "exported" / last
    check = (
        "import sys; from vago_lightning.inference.export import export_checkpoint; "
        "from vago_lightning.inference.synthesis import load_xtts; "
        f"load_xtts(export_checkpoint({str(work / 'checkpoints' / last / 'best.ckpt')!r}, {str(exported)!r}, "
        "overwrite=True)); print('coqui-tts loaded the export strictly')"
    )
    code, peak = run_peak([py, "-c", check], work, work / "export.log")
    results["export"] = {"exit": code, "peak_rss_gb": round(peak, 2), "of": last}
    said = (work / "export.log").read_text().strip()[-120:]
    print(f"export of {last} + Xtts.load_checkpoint(strict=True): exit {code} ({said})")
    (work / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
