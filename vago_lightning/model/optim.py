"""Pure torch optimizer pieces: coqui's weight-decay grouping and a per-step learning-rate schedule."""

from __future__ import annotations

import math
from typing import Literal

from torch import nn

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
            full = f"{owner_name}.{name}" if owner_name else name
            skip = (name == "bias" and owner_name) or isinstance(owner, NORM_TYPES + EMBEDDING_TYPES)
            (no_decay if skip else decay).append((full, param))
    return [
        {"params": [p for _, p in sorted(decay, key=lambda x: x[0])], "weight_decay": weight_decay},
        {"params": [p for _, p in sorted(no_decay, key=lambda x: x[0])], "weight_decay": 0.0},
    ]


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
