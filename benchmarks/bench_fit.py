"""End to end against coqui-tts's own trainer: clips trained per wall-second, same base, data and schedule.

    python benchmarks/bench_fit.py [--clips 90 --epochs 2 --layers 6 --dim 512 --precision auto]

Both sides start from the same generated base (a GPT of --layers x --dim with the release's DVAE, so
coqui's GPTTrainer loads it unchanged) and train the same clips (the first --clips of the demo's
interview corpus, espeak-ng Hungarian) for --epochs epochs at batch 3, validating on the same held-out
clips after every epoch, each in its own process with both CPU cores:

- coqui: `trainer.Trainer` + `GPTTrainer`, as its recipe runs them (fp32, mel and DVAE codes
  computed on the fly in each step); its dataset module sets torch to one thread at import, which is
  put back, so it gets every core too;
- ours: `prepare` (decode, check, DVAE codes, speaker check, shards) and then `fit`
  (`python -m vago_lightning fit --config finetune.yaml ...` with --precision).

Prints the wall time of each and clips per wall-second (epochs x train clips / wall), ours with and
without prepare, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def make_corpus(root: Path, clips: int) -> Path:
    """The first `clips` clips of the demo interview corpus, in coqui's format."""
    from vago_lightning.demo.corpora import write_demo_corpora

    write_demo_corpora(root / "demo")
    source = root / "demo" / "interview"
    corpus = root / "bench"
    (corpus / "wavs").mkdir(parents=True)
    lines = (source / "metadata.csv").read_text(encoding="utf-8").splitlines()
    for line in lines[1 : clips + 1]:
        shutil.copy(source / line.split("|")[0], corpus / line.split("|")[0])
    (corpus / "metadata.csv").write_text("\n".join(lines[: clips + 1]) + "\n", encoding="utf-8")
    return corpus


def run_ours(tmp: Path, base: Path, corpus: Path, epochs: int, precision: str) -> dict:
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "vago_lightning",
            "prepare",
            "--corpus",
            f"bench={corpus}",
            "--base_model",
            str(base),
            "--out",
            str(tmp / "shards"),
            "--quiet",
            "true",
        ],
        check=True,
        cwd=tmp,
        capture_output=True,
    )
    prepared = time.perf_counter()
    manifest = json.loads((tmp / "shards" / "manifest.json").read_text())
    train = manifest["totals"]["train"]
    steps = -(-train // 3)
    configs = [a for n in ("finetune.yaml", "configs/demo.yaml") for a in ("--config", str(REPO / n))]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "vago_lightning",
            "fit",
            *configs,
            "--run",
            "bench",
            f"--model.base_model={base}",
            "--model.init_from=null",
            "--model.lr=1e-4",
            f"--data.shards_dir={tmp / 'shards'}",
            "--data.corpora=[bench]",
            "--data.num_workers=1",
            f"--trainer.max_epochs={epochs}",
            f"--trainer.val_check_interval={steps}",
            f"--trainer.precision={precision}",
            "--trainer.log_every_n_steps=10",
        ],
        check=True,
        cwd=tmp,
        capture_output=True,
    )
    done = time.perf_counter()
    return {
        "prepare_s": prepared - start,
        "fit_s": done - prepared,
        "wall_s": done - start,
        "train_clips": train,
        "val_keys": [e["key"] for e in manifest["corpora"]["bench"]["splits"]["val"]["index"]],
    }


def coqui_worker(base: Path, corpus: Path, val_keys: list[str], epochs: int, out: Path) -> None:
    threads = torch.get_num_threads()
    sys.path.insert(0, str(REPO / "tests"))
    from trainer import Trainer, TrainerArgs

    from coqui_reference import coqui_gpt_trainer  # imports coqui's trainer package (one thread)

    torch.set_num_threads(threads)
    samples = []
    for line in (corpus / "metadata.csv").read_text(encoding="utf-8").splitlines()[1:]:
        audio, text, speaker = line.split("|")
        samples.append(
            {
                "text": text,
                "audio_file": str(corpus / audio),
                "speaker_name": speaker,
                "language": "hu",
                "audio_unique_name": Path(audio).stem,
                "root_path": str(corpus),
            }
        )
    held = {k.removeprefix("bench_") for k in val_keys}
    train = [s for s in samples if s["audio_unique_name"] not in held]
    val = [s for s in samples if s["audio_unique_name"] in held]
    model = coqui_gpt_trainer(base, lr=1e-4)
    config = model.config
    config.epochs, config.batch_size, config.eval_batch_size = epochs, 3, 3
    config.num_loader_workers, config.num_eval_loader_workers = 1, 1
    config.print_step, config.save_step, config.run_eval, config.test_delay_epochs = 50, 100000, True, 100
    config.output_path = str(out)
    trainer = Trainer(
        TrainerArgs(),
        config,
        str(out),
        model=model,
        train_samples=train,
        eval_samples=val,
        parse_command_line_args=False,
    )
    start = time.perf_counter()
    trainer.fit()
    print("RESULT " + json.dumps({"fit_s": time.perf_counter() - start, "train_clips": len(train)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=90)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--precision", default="auto", help="ours: auto, 32-true, bf16-mixed")
    parser.add_argument("--coqui", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.coqui:
        base, corpus, keys, out = args.coqui
        return coqui_worker(Path(base), Path(corpus), json.loads(keys), args.epochs, Path(out))

    from vago_lightning.demo.tiny_base import TinyBaseSpec, write_tiny_base

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = write_tiny_base(
            tmp / "base", TinyBaseSpec(gpt_layers=args.layers, gpt_dim=args.dim, gpt_heads=args.dim // 64, dvae="xtts")
        )
        corpus = make_corpus(tmp, args.clips)
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__};"
            f" GPT {args.layers} x {args.dim} + release DVAE; {args.clips} clips, {args.epochs} epochs, batch 3"
        )
        ours = run_ours(tmp, base, corpus, args.epochs, args.precision)
        start = time.perf_counter()
        run = subprocess.run(
            [
                sys.executable,
                __file__,
                "--epochs",
                str(args.epochs),
                "--coqui",
                str(base),
                str(corpus),
                json.dumps(ours["val_keys"]),
                str(tmp / "coqui"),
            ],
            capture_output=True,
            text=True,
        )
        coqui_wall = time.perf_counter() - start
        line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit("coqui's trainer failed: " + (run.stderr.strip().splitlines() or ["no output"])[-1])
        coqui = json.loads(line[7:])
        seen = args.epochs * ours["train_clips"]
        assert coqui["train_clips"] == ours["train_clips"], (coqui, ours)
        rate = {
            "coqui": seen / coqui_wall,
            "ours": seen / ours["wall_s"],
            "ours_fit": seen / (ours["wall_s"] - ours["prepare_s"]),
        }
        print(f"coqui Trainer + GPTTrainer: {coqui_wall:6.1f} s wall -> {rate['coqui']:.2f} clips/s")
        print(
            f"ours, prepare + fit ({args.precision}): {ours['wall_s']:6.1f} s wall (prepare {ours['prepare_s']:.1f} s) "
            f"-> {rate['ours']:.2f} clips/s; ratio {rate['ours'] / rate['coqui']:.2f}x"
        )
        print(
            f"ours, fit alone: {ours['fit_s']:6.1f} s -> {rate['ours_fit']:.2f} clips/s; "
            f"ratio {rate['ours_fit'] / rate['coqui']:.2f}x"
        )


if __name__ == "__main__":
    main()
