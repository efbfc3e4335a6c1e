"""Pure torch (and peft) LoRA pieces for coqui's GPT: adapters on its GPT-2 stack, and the plain GPT
weights with the adapters merged in (what export, SampleAudio and `init_from` need).

coqui's GPT-2 stack is transformers' `GPT2Model`, whose projections are `Conv1D` (weights stored
[in, out]), hence `fan_in_fan_out`. The adapters are injected into the stack in place
(`inject_adapter_in_model`), not through `get_peft_model`: its CAUSAL_LM wrapper passes `labels`,
which `GPT2Model` rejects, and a wrapper would rename every key of the GPT.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch

ADAPTER = "default"  # peft's adapter name; one adapter per run
ADAPTER_MARK = ".lora_"  # every adapter weight's key holds it (lora_A, lora_B)
BASE_LAYER = ".base_layer."  # peft's wrapped layer keeps the original weights under this name


@dataclass
class LoraSettings:
    """LoRA adapters on the GPT-2 stack's projections; everything else of the GPT is frozen."""

    r: int = 16  # rank of each adapter
    alpha: float = 32.0  # the update is scaled by alpha / r
    dropout: float = 0.0  # dropout on the adapters' input
    targets: list[str] = field(default_factory=lambda: ["c_attn", "c_proj", "c_fc"])  # GPT-2 layer names
    # The frozen projections' dtype. bfloat16 halves the frozen stack's memory; only under bf16-mixed
    # (autocast computes those products in bf16 anyway); export merges into the base's fp32 weights.
    base_dtype: Literal["float32", "bfloat16"] = "float32"

    @classmethod
    def of(cls, value: LoraSettings | dict | None) -> LoraSettings:
        if value is None:
            return cls()
        if isinstance(value, dict):
            return cls(**value)
        return value

    def as_dict(self) -> dict:
        return asdict(self)


def add_lora(gpt, settings: LoraSettings) -> int:
    """Freeze the whole GPT and inject trainable adapters into its GPT-2 stack; returns how many
    projections got one."""
    from peft import LoraConfig, inject_adapter_in_model

    gpt.requires_grad_(False)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.targets),
        fan_in_fan_out=True,
        bias="none",
    )
    inject_adapter_in_model(config, gpt.gpt, adapter_name=ADAPTER)
    wrapped = [m for m in gpt.gpt.modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A")]
    for module in wrapped:
        module.base_layer.to(getattr(torch, settings.base_dtype))
        for name, param in module.named_parameters():
            param.requires_grad_(ADAPTER_MARK[1:] in name)
    return len(wrapped)


def is_adapter_key(key: str) -> bool:
    return ADAPTER_MARK in key


@torch.no_grad()
def merged_state(gpt) -> dict[str, torch.Tensor]:
    """The GPT's weights under the plain GPT's keys, each adapter's update added to its layer's weight,
    in fp32 (a frozen bf16 base is widened first). `gpt` itself is left as it is."""
    deltas = {}
    for name, module in gpt.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
            deltas[f"{name}{BASE_LAYER}weight"] = module.get_delta_weight(ADAPTER).float()
    state = {}
    for key, value in gpt.state_dict().items():
        if is_adapter_key(key):
            continue
        value = value.detach()
        if key in deltas:
            value = value.float() + deltas[key]
        elif value.is_floating_point():
            value = value.float()
        state[key.replace(BASE_LAYER, ".")] = value
    return state


@torch.no_grad()
def weights_checksum(state: dict[str, torch.Tensor]) -> float:
    """A cheap fingerprint of the weights an adapter was trained on top of (a sum of every value, in
    float64): a changed `init_from` file is caught before its adapter is applied to other weights."""
    return float(sum(v.double().abs().sum() for k, v in sorted(state.items()) if v.is_floating_point()))
