"""Memory of one full training step of the release's 441 M GPT, per configuration.

    python benchmarks/bench_memory.py [--base DIR] [--rows fp32 bf16 ...] [--batch 3]

The batch is the longest the data allows: 3 clips of 255,995 samples (11.6 s) with 200 text tokens
each (precomputed DVAE codes, as prepare stores them). One full step: forward, backward, optimizer, taken
as a run's second and later steps are (the optimizer's state already there). Each row runs in a fresh
process, so its peak is its own; each is XttsGPTModule with these arguments and its own optimizer:

- fp32: fp32 weights and activations, as coqui-tts trains (fused AdamW, as our training steps it);
- bf16: bf16-mixed autocast (what `precision: auto` picks on a bf16 GPU such as an RTX 4070);
- bf16+ckpt: the same with gradient checkpointing of the GPT-2 stack;
- bf16+ckpt+adamw8bit: the same with `model.optimizer adamw8bit` (bitsandbytes: moments in 8 bits);
- lora, lora+ckpt: bf16-mixed, `model.finetune lora` (rank 16 on the GPT-2 stack's attention and MLP,
  the rest frozen), without and with gradient checkpointing; the row checks that the GPT with the
  adapters merged in loads strictly into coqui's GPT;
- rtx4070-12gb, rtx4060-8gb: the model settings and precision of configs/<row>.yaml.

On CPU it records peak RSS (weights, grads, optimizer state and activations, no CUDA context): of the
whole process, and what the step added over the process with the model loaded. On a GPU,
torch.cuda.max_memory_allocated and max_memory_reserved.
The base is a release-shaped one (`tiny-base --like_release`), written to a temporary folder unless
--base names one.
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
import yaml

REPO = Path(__file__).resolve().parent.parent
RELEASE = REPO.parent / "shared" / "xtts-release"
PROFILES = ["rtx4070-12gb", "rtx4060-8gb"]  # configs/<name>.yaml
ROWS = ["fp32", "bf16", "bf16+ckpt", "bf16+ckpt+adamw8bit", "lora", "lora+ckpt", *PROFILES]
GB = 1024**3


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def longest_batch(module, batch_size: int, device: str):
    from vago_lightning.constants import MAX_COND_SAMPLES, MAX_TEXT_TOKENS, MAX_WAV_SAMPLES
    from vago_lightning.model.batching import Batch
    from vago_lightning.model.features import code_count

    g = torch.Generator().manual_seed(0)
    n_text = module.gpt.text_embedding.num_embeddings - 2
    fields = dict(
        text=torch.randint(2, n_text, (batch_size, MAX_TEXT_TOKENS), generator=g),
        text_lengths=torch.full((batch_size,), MAX_TEXT_TOKENS),
        wav=torch.randn(batch_size, MAX_WAV_SAMPLES, generator=g) * 0.1,
        wav_lengths=torch.full((batch_size,), MAX_WAV_SAMPLES),
        cond_wav=torch.randn(batch_size, MAX_COND_SAMPLES, generator=g) * 0.1,
        cond_idxs=torch.tensor([[0, MAX_COND_SAMPLES]] * batch_size),
        codes=torch.randint(0, 1024, (batch_size, code_count(MAX_WAV_SAMPLES)), generator=g),
    )
    return Batch(
        **{k: v.to(device) for k, v in fields.items()},
        corpus=["bench"] * batch_size,
        key=[str(i) for i in range(batch_size)],
    )


def row_settings(row: str) -> tuple[dict, bool]:
    """The XttsGPTModule arguments of a row, and whether it runs under bf16-mixed autocast. A profile
    row takes its model settings from its YAML file, so the row measures what the profile trains."""
    if row in PROFILES:
        config = yaml.safe_load((REPO / "configs" / f"{row}.yaml").read_text())
        return dict(config.get("model", {})), config["trainer"]["precision"] == "bf16-mixed"
    kwargs = dict(gradient_checkpointing="ckpt" in row)
    if "lora" in row:
        kwargs["finetune"] = "lora"
    if "adamw8bit" in row:
        kwargs["optimizer"] = "adamw8bit"
    return kwargs, row != "fp32"


def merged_state_loads_strictly(module, base: Path) -> bool:
    """The GPT's weights with the adapters merged in load strictly into a plain coqui GPT (what
    export writes)."""
    from vago_lightning.model.base import build_gpt, load_tokenizer, load_xtts_config
    from vago_lightning.model.lora import merged_state

    plain = build_gpt(load_xtts_config(base), load_tokenizer(base))
    plain.load_state_dict(merged_state(module.gpt), strict=True)
    return True


def worker(row: str, base: Path, batch_size: int) -> dict:
    from vago_lightning.model.module import XttsGPTModule

    device = "cuda" if torch.cuda.is_available() else "cpu"
    kwargs, bf16 = row_settings(row)
    before_model = current_rss()
    module = XttsGPTModule(base_model=str(base), **kwargs).to(device)
    module.train()
    # The optimizer as training builds it (fused AdamW, or bitsandbytes' AdamW8bit).
    optimizer = module.configure_optimizers()["optimizer"]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    # Its state exists from the second step of a run on, while the next forward builds its activations:
    # create it first (a step on zero gradients), so that the measured step is such a step. Measuring the
    # very first step instead (as the rows before issue 25 did) misses the moments where activations peak.
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    batch = longest_batch(module, batch_size, device)
    loaded = current_rss()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        loaded_gpu = torch.cuda.memory_allocated()
    start = time.perf_counter()
    # as Lightning's bf16-mixed enters it: no cache of bf16 weight copies
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
        loss = module.losses(batch)["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    result = {
        "row": row,
        "device": device,
        "seconds": round(time.perf_counter() - start, 2),
        "loss": round(float(loss), 3),
        "trainable_m": round(sum(p.numel() for p in params) / 1e6, 2),
        "rss_model_gb": round((loaded - before_model) / GB, 2),
        "peak_rss_gb": round(peak_rss() / GB, 2),
        "step_adds_gb": round((peak_rss() - loaded) / GB, 2),
        "optimizer_state_before_step": True,
    }
    if device == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
        result["max_allocated_gb"] = round(torch.cuda.max_memory_allocated() / GB, 2)
        result["max_reserved_gb"] = round(torch.cuda.max_memory_reserved() / GB, 2)
        result["model_allocated_gb"] = round(loaded_gpu / GB, 2)
    if module.lora_record:
        result["merged_loads_strictly"] = merged_state_loads_strictly(module, base)
    return result


def write_base(folder: Path) -> Path:
    from vago_lightning.demo.tiny_base import TinyBaseSpec, write_tiny_base

    given = (RELEASE / "config.json").is_file()
    spec = TinyBaseSpec(
        like_release=True,
        config=RELEASE / "config.json" if given else None,
        vocab=RELEASE / "vocab.json" if given else None,
    )
    return write_tiny_base(folder / "xtts-v2-shaped", spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, help="a release-shaped base (default: write one to a temporary folder)")
    parser.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS)
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.base, args.batch)), flush=True)
        return
    with tempfile.TemporaryDirectory(dir=REPO) as tmp:
        base = args.base or write_base(Path(tmp))
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
            f"{', GPU ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ', no GPU'}; base {base}; "
            f"batch {args.batch} x 11.6 s, 200 text tokens"
        )
        rows = []
        for row in args.rows:
            run = subprocess.run(
                [sys.executable, __file__, "--worker", row, "--base", str(base), "--batch", str(args.batch)],
                capture_output=True,
                text=True,
            )
            line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                reason = (run.stderr.strip().splitlines() or ["no output"])[-1]
                print(f"{row:20s} did not run: {reason}")
                continue
            rows.append(json.loads(line[7:]))
            r = rows[-1]
            gpu = (
                f", GPU max allocated {r['max_allocated_gb']} GB (reserved {r['max_reserved_gb']} GB)"
                if "max_allocated_gb" in r
                else ""
            )
            print(
                f"{row:20s} trainable {r['trainable_m']:7.2f} M; model {r['rss_model_gb']:5.2f} GB RSS; step adds "
                f"{r['step_adds_gb']:5.2f} GB; process peak {r['peak_rss_gb']:5.2f} GB RSS{gpu}; {r['seconds']} s"
            )
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
