"""Training-step benchmark: coqui-tts's own GPTTrainer against ours, same base, same batches.

    python benchmarks/bench_train_step.py [--layers 6 --dim 512 --heads 8 --steps 8 --batch 3]

The base is a random model in the XTTS-v2 layout with a mid-size GPT and the release's DVAE
architecture (51.5 M params), so coqui's trainer loads it unchanged. Each contender runs in its own
process (so peak memory is its own) on the same batches of demo speech:

- coqui: `format_batch_on_device` + `train_step` + backward + AdamW, fp32 as upstream;
- ours: `XttsGPTModule.losses` (mel and DVAE codes on the fly) + backward + AdamW, fp32;
- ours, codes: the same with DVAE codes precomputed, as `prepare --base-model` stores them;
- on a GPU also ours in bf16-mixed autocast.

Prints steps per second and peak memory of each, and each one's speed-up over coqui.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _batches(base: Path, corpus: Path, n_batches: int, batch: int, with_codes: bool):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from vago_lightning.model.base import load_dvae, load_tokenizer
    from vago_lightning.model.batching import Collate
    from vago_lightning.model.features import dvae_codes, dvae_mel

    from helpers import corpus_samples

    samples = corpus_samples(corpus, load_tokenizer(base), n_batches * batch * 3)
    samples = [s for s in samples if 3.5 <= s["wav"].shape[-1] / 22050 <= 6.5][: n_batches * batch]
    if with_codes:
        dvae = load_dvae(base / "dvae.pth")
        mel = dvae_mel(torch.load(base / "mel_stats.pth", weights_only=True))
        for s in samples:
            s["codes"] = dvae_codes(dvae, mel, s["wav"][None])[0]
    collate = Collate(train=True, seed=0)
    return [collate(samples[i : i + batch]) for i in range(0, len(samples), batch)]


def _to(batch, device: str):
    from lightning.fabric.utilities import move_data_to_device

    return move_data_to_device(batch, device)


def worker(kind: str, base: Path, corpus: Path, steps: int, batch: int) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batches = _batches(base, corpus, steps + 2, batch, with_codes=kind == "ours-codes")
    if kind == "coqui":
        from coqui_reference import coqui_batch, coqui_gpt_trainer

        model = coqui_gpt_trainer(base).to(device)
        model.train(False)
        model.xtts.gpt.train()
        optimizer = model.get_optimizer()

        def step(b):
            cb = model.format_batch_on_device(coqui_batch(_to(b, device)))
            return model.train_step(cb, None)[1]["loss"]
    else:
        from vago_lightning.model.module import XttsGPTModule

        model = XttsGPTModule(base_model=str(base)).to(device)
        model.train()
        optimizer = model.configure_optimizers()["optimizer"]
        bf16 = kind == "ours-bf16"

        def step(b):
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                return model.losses(_to(b, device))["loss"]

    def one(b):
        loss = step(b)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    for b in batches[:2]:  # warm-up
        one(b)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for b in batches[2 : 2 + steps]:
        one(b)
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    result = {
        "kind": kind,
        "device": device,
        "steps": steps,
        "sec_per_step": wall / steps,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }
    if device == "cuda":
        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1e9
        result["gpu"] = torch.cuda.get_device_name()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, Path(args.base), Path(args.corpus), args.steps, args.batch)))
        return

    from vago_lightning.demo.corpora import write_demo_corpora
    from vago_lightning.demo.tiny_base import TinyBaseSpec, write_tiny_base

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = write_tiny_base(
            tmp / "base",
            TinyBaseSpec(gpt_layers=args.layers, gpt_dim=args.dim, gpt_heads=args.heads, dvae="xtts"),
        )
        write_demo_corpora(tmp / "corpora")
        kinds = ["coqui", "ours", "ours-codes"] + (["ours-bf16"] if torch.cuda.is_available() else [])
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; GPT "
            f"{args.layers} layers x {args.dim}, release-size DVAE, batch {args.batch} of 3.5-6.5 s clips, "
            f"{args.steps} timed steps after 2 warm-up"
        )
        results = {}
        for kind in kinds:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    kind,
                    "--base",
                    str(base),
                    "--corpus",
                    str(tmp / "corpora" / "interview"),
                    "--steps",
                    str(args.steps),
                    "--batch",
                    str(args.batch),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results[kind] = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
        ref = results["coqui"]["sec_per_step"]
        for kind, r in results.items():
            extra = f", peak GPU {r['peak_gpu_gb']:.2f} GB on {r['gpu']}" if "peak_gpu_gb" in r else ""
            print(
                f"{kind:11s} {r['sec_per_step']:.3f} s/step ({1 / r['sec_per_step']:.2f} steps/s), "
                f"peak RSS {r['peak_rss_gb']:.2f} GB{extra}; speed vs coqui x{ref / r['sec_per_step']:.2f}"
            )


if __name__ == "__main__":
    main()
