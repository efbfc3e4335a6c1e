"""Validation loss of the demo's two stages per fine-tuning mode: LoRA and 8-bit AdamW against full AdamW.

    python benchmarks/bench_finetune_modes.py [--work DIR] [--modes full adamw8bit lora lora+adamw8bit]
        [--accelerator cpu|gpu] [--precision 32-true|bf16-mixed] [--stage2_steps N] [--keep_finished]

The demo's data are made once in DIR by the demo's own first stages (the tiny random base, the two
espeak corpora, prepare). Then, per mode, both stages run as `python -m vago_lightning demo` runs
them, each a real `fit` in its own process with the same seed, batch, steps and data: stage one
(configs/demo-quiz.yaml) on the quiz corpus from the base, stage two (configs/demo.yaml) on both
corpora from stage one's best.ckpt. Only the mode differs:

- full: the whole GPT, torch AdamW (the demo as it is);
- adamw8bit: the whole GPT, `model.optimizer adamw8bit` (bitsandbytes' AdamW8bit);
- lora: `model.finetune lora` with configs/rtx4060-8gb.yaml's adapters and LR (its frozen base in fp32
  unless --precision is bf16-mixed: bf16 frozen weights need bf16-mixed);
- lora+adamw8bit: both.

The figures are read from each run's TensorBoard events with the report's reader: per corpus, the
validation loss at the start (step 0) and at the stage's end, the best val/loss and its step, the
trained parameters (what best.ckpt holds) and the checkpoint sizes. A markdown table is printed and
written to DIR/results.md (DIR/results.json beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a clone without installing: this copy of the package

PROFILE = REPO / "configs" / "rtx4060-8gb.yaml"  # where LoRA's settings and LR come from
MODES = ["full", "adamw8bit", "lora", "lora+adamw8bit"]
STAGES = [("quiz", ["configs/demo-quiz.yaml"]), ("combined", [])]  # stage one, stage two (as the demo)
MEASURES = ["loss_mel_ce", "loss"]  # per corpus: the audio codes' cross-entropy, and the weighted total
MB = 1024**2


class BenchError(Exception):
    """Bad input or a failed run: one line, no traceback."""


def lora_args(precision: str) -> list[str]:
    """configs/rtx4060-8gb.yaml's LoRA settings and LR as fit arguments."""
    model = yaml.safe_load(PROFILE.read_text())["model"]
    lora = dict(model["lora"])
    if precision != "bf16-mixed":
        lora["base_dtype"] = "float32"  # the module refuses bf16 frozen weights outside bf16-mixed
    args = ["--model.finetune", model["finetune"], "--model.lr", str(model["lr"])]
    for key, value in lora.items():
        args += [f"--model.lora.{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    return args


def mode_args(mode: str, precision: str) -> list[str]:
    args = lora_args(precision) if mode.startswith("lora") else []
    if mode.endswith("adamw8bit"):
        args += ["--model.optimizer", "adamw8bit"]
    return args


def prepare_demo_data(work: Path) -> None:
    """The demo's first stages (tiny base, corpora, prepare) in `work`, each skipped when done."""
    from vago_lightning.commands import VERBS
    from vago_lightning.demo.pipeline import SHARDS, stages

    here = Path.cwd()
    os.chdir(work)  # the demo's paths are relative to where it runs
    try:
        plan = stages(VERBS)
        last = next(i for i, stage in enumerate(plan) if stage.output == SHARDS / "manifest.json")
        for stage in plan[: last + 1]:  # up to prepare; the demo's own training stages are not run
            if not stage.done():
                print(f"demo data: {stage.name} ...", flush=True)
                stage.run()
    finally:
        os.chdir(here)


def fit(work: Path, mode: str, stage: str, configs: list[str], args: argparse.Namespace) -> str:
    """One stage of one mode, a real `fit` in its own process; returns the run name."""
    run = f"{mode}-{stage}"
    if args.keep_finished and finished(work / "checkpoints" / run):
        print(f"{run}: finished already, kept", flush=True)
        return run
    names = ["finetune.yaml", "configs/demo.yaml", *configs]
    cmd = [sys.executable, "-m", "vago_lightning", "fit"]
    cmd += [arg for name in names for arg in ("--config", str(REPO / name))]
    cmd += ["--run", run, "--fresh", "true", "--trainer.accelerator", args.accelerator]
    cmd += ["--trainer.precision", args.precision, "--seed_everything", str(args.seed)]
    if stage == "combined":
        cmd += ["--model.init_from", f"checkpoints/{mode}-quiz/best.ckpt"]
        if args.stage2_steps:
            cmd += ["--trainer.max_steps", str(args.stage2_steps)]
    cmd += mode_args(mode, args.precision)
    # the demo's LRs per stage stay for full and adamw8bit; LoRA's comes from its profile (mode_args, last)
    log = work / f"{run}.log"
    print(f"{run}: fit ... (log: {log})", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with open(log, "w") as f:
        code = subprocess.run(cmd, cwd=work, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        raise BenchError(f"{run}: fit failed (exit {code}): {lines[-1] if lines else 'no output'} (see {log})")
    return run


def finished(folder: Path) -> bool:
    """A run whose newest checkpoint is the final state of a finished fit (as the demo tests it)."""
    from vago_lightning.training.checkpoints import newest_good_checkpoint

    return (folder / "best.ckpt").is_file() and newest_good_checkpoint(folder).finished is not None


def trained_parameters(ckpt: Path) -> int:
    """Values a checkpoint's weights hold: the trained ones only (LoRA: the adapters)."""
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    return sum(v.numel() for v in state.values())


def figures(work: Path, run: str) -> dict:
    from vago_lightning.inference.report import read_run

    logs = read_run(run, work / "lightning_logs")
    folder = work / "checkpoints" / run
    out = {
        "run": run,
        "best_step": logs.best_step,
        "best_val_loss": logs.at("val/loss", logs.best_step),
        "trained_parameters": trained_parameters(folder / "best.ckpt"),
        "best_ckpt_mb": (folder / "best.ckpt").stat().st_size / MB,
        "last_ckpt_mb": (folder / "last.ckpt").stat().st_size / MB,
        "corpora": {},
    }
    for corpus in logs.corpora():
        for measure in MEASURES:
            points = logs.scalars.get(f"val/{corpus}/{measure}", [])
            if points:
                out["corpora"].setdefault(corpus, {})[measure] = {
                    "start": logs.at(f"val/{corpus}/{measure}", 0) if logs.starting_point() else None,
                    "end": max(points)[1],
                    "end_step": max(points)[0],
                }
    return out


def table(results: dict[str, dict[str, dict]]) -> str:
    def f(v):
        return "–" if v is None else f"{v:.3f}"

    rows = [
        "| mode | stage | trained params | quiz mel CE: start → end | interview mel CE: start → end "
        "| best val/loss (step) | best.ckpt | last.ckpt |",
        "|---|---|---:|---|---|---|---:|---:|",
    ]
    for mode, stages in results.items():
        for stage, r in stages.items():
            cells = []
            for corpus in ("quiz", "interview"):
                m = r["corpora"].get(corpus, {}).get("loss_mel_ce")
                cells.append("–" if m is None else f"{f(m['start'])} → {f(m['end'])} (step {m['end_step']})")
            rows.append(
                f"| {mode} | {stage} | {r['trained_parameters']:,} | {cells[0]} | {cells[1]} "
                f"| {f(r['best_val_loss'])} ({r['best_step']}) "
                f"| {r['best_ckpt_mb']:.2f} MB | {r['last_ckpt_mb']:.2f} MB |"
            )
    return "\n".join(rows)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="keep the demo data, runs and logs here (default: a new temp dir)")
    parser.add_argument("--modes", nargs="+", default=MODES, choices=MODES, help="modes to run, in this order")
    parser.add_argument(
        "--accelerator", default="cpu", choices=["cpu", "gpu"], help="trainer.accelerator of every fit (gpu: CUDA)"
    )
    parser.add_argument(
        "--precision",
        default="32-true",
        choices=["32-true", "bf16-mixed"],
        help="trainer.precision of every fit (32-true: for a CPU without native bf16)",
    )
    parser.add_argument(
        "--stage2_steps",
        type=int,
        help="end stage two after this many steps (default: the demo's 2 epochs, 204 steps); it validates every 51",
    )
    parser.add_argument(
        "--keep_finished",
        action="store_true",
        help="keep runs that finished in --work before (same settings assumed) instead of training them again",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed_everything of every fit (finetune.yaml's: 1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.stage2_steps is not None and args.stage2_steps < 1:
        raise BenchError(f"--stage2_steps {args.stage2_steps}: must be 1 or more (or left out for the demo's 204)")
    work = (args.work or Path(tempfile.mkdtemp(prefix="finetune-modes-"))).resolve()
    if work.exists() and not work.is_dir():
        raise BenchError(f"--work {work}: is a file, not a folder; name a folder")
    work.mkdir(parents=True, exist_ok=True)
    prepare_demo_data(work)
    results: dict[str, dict[str, dict]] = {}
    for mode in args.modes:
        for stage, configs in STAGES:
            run = fit(work, mode, stage, configs, args)
            results.setdefault(mode, {})[stage] = figures(work, run)
            (work / "results.json").write_text(json.dumps(results, indent=2))
    text = table(results)
    (work / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    try:
        main()
    except BenchError as err:
        sys.exit(f"bench_finetune_modes: {err}")
