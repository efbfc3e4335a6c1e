"""How an inference model computes: fp32, bf16 autocast, or the GPT's blocks in int8. Pure torch.

Measured on the serving path (benchmarks/README.md, bench_speech_levers.py): at batch 1 the GPT reads
every weight once per audio token, so a CPU without native bf16 is bound by the fp32 weights' bytes;
int8 weights (fbgemm's dynamic quantization: int8 weights, activations quantized per call) read a
quarter of them. bf16 autocast halves them where the hardware computes bf16 (GPUs, AVX512-BF16/AMX).
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch.nn.utils import parametrize

from ..devices import native_bf16
from ..errors import UsageError

PRECISIONS = ("auto", "fp32", "bf16", "int8")


def resolve_precision(requested: str, device: str) -> str:
    """`auto`: bf16 on a GPU that computes it natively (else fp32), int8 GPT blocks on a CPU without
    native bf16, bf16 on one with it (`devices` says which); otherwise what was asked, where it can run."""
    if requested not in PRECISIONS:
        raise UsageError(f"--precision {requested}: choose one of {', '.join(PRECISIONS)}")
    cuda = device.startswith("cuda")
    if requested == "int8" and cuda:
        raise UsageError("--precision int8: the int8 kernels are for CPUs; on a GPU use bf16 (or auto)")
    if requested != "auto":
        return requested
    if cuda:
        return "bf16" if native_bf16(device) else "fp32"
    return "bf16" if native_bf16(device) else "int8"


def autocast(precision: str, device: str):
    """The context the model runs in: bf16 autocast, or nothing."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


def remove_weight_norm(module: torch.nn.Module) -> int:
    """Fold weight normalization into plain weights (the same values), so inference stops recomputing
    every convolution's weight in every forward (HiFi-GAN: 76 per call). Returns how many it folded."""
    folded = 0
    for sub in module.modules():
        if parametrize.is_parametrized(sub, "weight"):
            parametrize.remove_parametrizations(sub, "weight", leave_parametrized=True)
            folded += 1
    return folded


def quantize_gpt_int8(gpt2: torch.nn.Module) -> int:
    """The GPT-2 blocks' projections (transformers' `Conv1D`: attention in and out, MLP in and out) as
    int8 dynamically quantized linears, in place. The embeddings, norms and heads stay fp32. Returns
    how many projections it converted."""
    from transformers.pytorch_utils import Conv1D

    converted = 0
    for module in list(gpt2.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Conv1D):  # y = x @ W + b, W [in, out]: a Linear with W transposed
                linear = torch.nn.Linear(child.weight.shape[0], child.weight.shape[1])
                with torch.no_grad():
                    linear.weight.copy_(child.weight.t())
                    linear.bias.copy_(child.bias)
                setattr(module, name, linear)
                converted += 1
    with warnings.catch_warnings():
        # torch.ao's eager quantization is deprecated in favour of torchao, but it is in torch 2.11
        # (pinned) and its fbgemm kernel is the fast one at batch 1 on AVX2 CPUs; the int8 weight-only
        # kernel that torchao uses on CPUs (_weight_int8pack_mm) measured slower than fp32 there.
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(gpt2, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return converted
