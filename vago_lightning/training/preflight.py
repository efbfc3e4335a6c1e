"""Before the first step: the precision to use, and whether the disk and the GPU can hold the run."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch

from ..errors import PreflightError
from ..log import say

GB = 1024**3


def resolve_precision(requested: str | None, cuda: bool | None = None, bf16: bool | None = None) -> str:
    """`auto`: bf16-mixed on GPUs that support it (an RTX 4070 does), 16-mixed with a grad scaler on
    older CUDA cards, 32-true on CPU. Anything else is passed through."""
    if requested not in (None, "auto"):
        return str(requested)
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        return "32-true"
    bf16 = torch.cuda.is_bf16_supported() if bf16 is None else bf16
    return "bf16-mixed" if bf16 else "16-mixed"


@dataclass
class MemoryEstimate:
    weights: float
    grads: float
    optimizer: float
    activations: float
    frozen: float
    overhead: float = 0.6 * GB  # CUDA context and allocator slack

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations + self.frozen + self.overhead


def estimate_gpu_memory(
    trainable: int,
    frozen: int,
    layers: int,
    dim: int,
    heads: int,
    batch_size: int,
    precision: str,
    gradient_checkpointing: bool,
    seq_len: int = 32 + 202 + 253,
) -> MemoryEstimate:
    """Bytes the GPU needs for one training step of the XTTS GPT (fp32 weights, grads and AdamW
    moments; transformer activations after Korthikanti et al. at the longest sequence: 32 prompt
    latents, 200 text tokens, 11.6 s of codes)."""
    act_bytes = 2 if "16" in precision else 4
    per_layer = seq_len * batch_size * dim * (34 + 5 * heads * seq_len / dim) * act_bytes / 2
    activations = (
        (layers * seq_len * batch_size * dim * act_bytes + per_layer)
        if gradient_checkpointing
        else layers * per_layer
    )
    return MemoryEstimate(
        weights=4 * trainable,
        grads=4 * trainable,
        optimizer=8 * trainable,
        activations=activations,
        frozen=4 * frozen,
    )


def checkpoint_bytes(trainable: int) -> int:
    """A checkpoint: fp32 GPT weights and two AdamW moments (the frozen DVAE is not saved)."""
    return 12 * trainable + 16 * 1024**2


def check_disk(dirpath: Path, trainable: int, kept: int) -> str:
    """Fail unless the checkpoint folder can hold `kept` checkpoints plus one being written."""
    need = (kept + 1) * checkpoint_bytes(trainable)
    probe = dirpath
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        raise PreflightError(
            f"{dirpath}: {free / GB:.1f} GB free, but the {kept} checkpoints this run keeps (plus one being "
            f"written) need about {need / GB:.1f} GB; free some space, lower periodic_checkpoint.save_top_k, "
            f"or point best_checkpoint.dirpath and periodic_checkpoint.dirpath to a larger disk"
        )
    return f"disk: {free / GB:.1f} GB free in {probe}, ~{need / GB:.2f} GB needed for {kept} kept checkpoints"


def check_gpu(
    estimate: MemoryEstimate,
    free: float,
    total: float,
    precision: str,
    batch_size: int,
    gradient_checkpointing: bool,
) -> str:
    """Fail with what to change when the estimate does not fit the GPU's free memory."""
    line = (
        f"GPU memory: ~{estimate.total / GB:.1f} GB needed (weights+grads+AdamW "
        f"{(estimate.weights + estimate.grads + estimate.optimizer) / GB:.1f}, activations "
        f"{estimate.activations / GB:.1f}), {free / GB:.1f} of {total / GB:.1f} GB free"
    )
    if estimate.total <= free:
        return line
    advice = []
    if batch_size > 1:
        smaller = max(1, batch_size // 2)
        advice.append(
            f"--data.batch_size {smaller} with --trainer.accumulate_grad_batches "
            f"{-(-batch_size // smaller)} (the same effective batch)"
        )
    if not gradient_checkpointing:
        advice.append("--model.gradient_checkpointing true")
    if "16" not in precision:
        advice.append("--trainer.precision bf16-mixed (or 16-mixed on cards without bf16)")
    raise PreflightError(f"{line}: it will not fit; try " + ", ".join(advice or ["a larger GPU"]))


class Preflight(L.Callback):
    """Runs the checks once, before the first step, and prints what it found."""

    def __init__(self, check_gpu_memory: bool = True):
        self.check_gpu_memory = check_gpu_memory
        self.lines: list[str] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in pl_module.parameters() if not p.requires_grad)
        precision = str(trainer.precision)
        self.lines.append(f"precision: {precision}")
        callbacks = [cb for cb in trainer.checkpoint_callbacks if cb.dirpath]
        if callbacks:
            kept = sum(max(cb.save_top_k, 0) + (1 if cb.save_last else 0) for cb in callbacks)
            self.lines.append(check_disk(Path(callbacks[0].dirpath), trainable, kept))
        root = pl_module.device
        if self.check_gpu_memory and root.type == "cuda":
            gpt = pl_module.gpt
            hp = pl_module.hparams
            batch = (
                getattr(trainer.datamodule, "hparams", {}).get("batch_size", 3) if trainer.datamodule else 3
            )
            estimate = estimate_gpu_memory(
                trainable,
                frozen,
                len(gpt.gpt.h),
                gpt.model_dim,
                gpt.heads,
                batch,
                precision,
                hp.gradient_checkpointing,
            )
            free, total = torch.cuda.mem_get_info(root)
            # The model is already on the card: count its weights as available to the estimate.
            free += torch.cuda.memory_allocated(root)
            self.lines.append(check_gpu(estimate, free, total, precision, batch, hp.gradient_checkpointing))
        for line in self.lines:
            say(f"preflight: {line}", warning=False)
