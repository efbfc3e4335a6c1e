"""Pure torch optimizer pieces: the optimizer, coqui's weight-decay grouping and a per-step LR schedule."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from ..errors import UsageError

OptimizerName = Literal["adamw", "adamw8bit"]

NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
)
EMBEDDING_TYPES = (nn.Embedding, nn.EmbeddingBag)


def weight_decay_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups as coqui's `optimizer_wd_only_on_weights=True` builds them: decay on weights;
    none on biases, on norm layers' parameters and on every embedding (token and positional)."""
    no_decay, decay = [], []
    for owner_name, owner in module.named_modules():
        for name, param in owner.named_parameters(recurse=False):
            if not param.requires_grad:
                continue  # frozen (LoRA's base): no moments to keep
            full = f"{owner_name}.{name}" if owner_name else name
            skip = (name == "bias" and owner_name) or isinstance(owner, NORM_TYPES + EMBEDDING_TYPES)
            (no_decay if skip else decay).append((full, param))
    return [
        {"params": [p for _, p in sorted(decay, key=lambda x: x[0])], "weight_decay": weight_decay},
        {"params": [p for _, p in sorted(no_decay, key=lambda x: x[0])], "weight_decay": 0.0},
    ]


def make_optimizer(
    name: OptimizerName, groups: list[dict], lr: float, betas: tuple[float, float], eps: float, fused: bool
) -> torch.optim.Optimizer:
    """AdamW (torch's fused kernel when `fused`), or bitsandbytes' AdamW8bit: both moments in 8 bits
    with block-wise scales (tensors under 4,096 values keep 32-bit moments), CUDA and CPU kernels."""
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)
    try:
        import bitsandbytes as bnb
    except ImportError as err:  # not installed on this platform (setup.cfg installs it on Linux and Windows)
        raise UsageError(
            f"model.optimizer adamw8bit needs bitsandbytes, which does not import here ({err}); "
            f"pip install bitsandbytes, or use --model.optimizer adamw"
        ) from None
    return bnb.optim.AdamW8bit(groups, lr=lr, betas=betas, eps=eps)


def lr_factor(
    step: int, warmup_steps: int, schedule: Literal["constant", "cosine"], total_steps: int, min_ratio: float
) -> float:
    """Multiplier of the base LR after `step` optimizer steps: linear warm-up, then constant or cosine."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant" or total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
