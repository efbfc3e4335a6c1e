"""The divergence guard's cost per step: how often it reads a value from the device (on a GPU each
read waits for all queued work) and how long its hooks take, over a short real fit.

    python benchmarks/bench_guard.py [--base DIR] [--corpus DIR] [--steps 20] [--accelerator auto|cpu|gpu]

Reads are counted by wrapping the tensor methods that read a value (item, tolist, bool, float, int)
while the guard's hooks run; on a GPU, torch's sync debug mode counts the synchronizations too.
Without --base a tiny base and demo speech are generated (as the tests do).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> None:
    import lightning as L
    from torch.utils.data import DataLoader

    from vago_lightning.demo.corpora import write_demo_corpora
    from vago_lightning.demo.tiny_base import TinyBaseSpec, write_tiny_base
    from vago_lightning.model.batching import Collate
    from vago_lightning.model.module import XttsGPTModule

    from helpers import corpus_samples, counted_guard, counting_reads

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, help="a base model folder (default: a generated tiny one)")
    parser.add_argument("--corpus", type=Path, help="a coqui-format corpus (default: the demo's quiz, generated)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--accelerator", default="auto")
    args = parser.parse_args()
    cuda = args.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    guard = counted_guard(cuda)
    with tempfile.TemporaryDirectory() as tmp, counting_reads(guard):
        base = args.base or write_tiny_base(Path(tmp) / "base", TinyBaseSpec())
        quiz = args.corpus
        if quiz is None:
            write_demo_corpora(Path(tmp) / "corpora")
            quiz = Path(tmp) / "corpora" / "quiz"
        module = XttsGPTModule(base_model=str(base))
        samples = corpus_samples(quiz, module.tokenizer, 12)
        loader = DataLoader(samples, batch_size=3, shuffle=True, collate_fn=Collate(train=True, seed=0))
        trainer = L.Trainer(
            max_steps=args.steps,
            accelerator="gpu" if cuda else "cpu",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            callbacks=[guard],
            default_root_dir=tmp,
        )
        trainer.fit(module, loader)
    steps = trainer.global_step
    device = torch.cuda.get_device_name() if cuda else "CPU"
    print(f"device: {device}; {steps} steps")
    print(f"guard: {len(guard.reads) / steps:.2f} value reads per step ({', '.join(sorted(set(guard.reads)))})")
    if cuda:
        print(f"guard: {guard.syncs / steps:.2f} CUDA synchronizations per step (sync debug mode)")
    print(f"guard: {1000 * guard.seconds / steps:.2f} ms per step in its hooks")


if __name__ == "__main__":
    main()
