"""Before the first step: the precision to use, and whether the disk and the GPU can hold the run."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..devices import cuda_available, gpu_memory, native_bf16
from ..errors import PreflightError
from ..log import say
from ..model.lora import is_adapter_key

GB = 1024**3


def resolve_precision(
    requested: str | None, cuda: bool | None = None, bf16: bool | None = None, cpu_bf16: bool | None = None
) -> str:
    """`auto`: bf16-mixed on GPUs that compute it natively (compute capability 8.0 on: an RTX 4070
    does), 16-mixed with a grad scaler on older CUDA cards; on a CPU bf16-mixed where it has native
    bf16, else 32-true. Anything else is passed through. The hardware facts come from `devices`."""
    if requested not in (None, "auto"):
        return str(requested)
    cuda = cuda_available() if cuda is None else cuda
    if not cuda:
        return "bf16-mixed" if (native_bf16("cpu") if cpu_bf16 is None else cpu_bf16) else "32-true"
    bf16 = native_bf16("cuda") if bf16 is None else bf16
    return "bf16-mixed" if bf16 else "16-mixed"


@dataclass
class MemoryEstimate:
    weights: float
    grads: float
    optimizer: float
    activations: float  # the GPT-2 stack's
    other: float  # the rest of the step: conditioning encoder, perceiver, heads and logits, allocator slack
    frozen: float
    overhead: float = 0.6 * GB  # CUDA context

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations + self.other + self.frozen + self.overhead


# Calibrated on the full-size rows of benchmarks/bench_memory.py (peak RSS on a CPU, no GPU was lent):
# what a step took beyond the fp32 weights, gradients, AdamW moments and the GPT-2 stack's activations.
OTHER_STEP_MEMORY_PER_CLIP = 0.46 * GB


OPTIMIZER_BYTES = {"adamw": 8, "adamw8bit": 2}  # per trainable parameter: two fp32 moments, or two 8-bit ones


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
    optimizer: str = "adamw",
    frozen_bytes: int | None = None,
) -> MemoryEstimate:
    """Bytes the GPU needs for one training step of the XTTS GPT (fp32 weights and grads, AdamW
    moments; transformer activations after Korthikanti et al. at the longest sequence: 32 prompt
    latents, 200 text tokens, 11.6 s of codes; the rest of the step as measured). Within 1% of the
    measured full-size rows (benchmarks/README.md), against CPU peak RSS. `frozen_bytes`: what the
    frozen parameters take when not all fp32 (a LoRA run's bf16 base); the activations are the same
    with LoRA (the gradient still flows through every layer)."""
    # Bytes per activation value: 2 under mixed precision; fp32 measured only 1.25x that, not 2x (autocast
    # keeps layer norms, softmax and the residual stream in fp32 anyway).
    act_bytes = 2 if "16" in precision else 2.5
    per_layer = seq_len * batch_size * dim * (34 + 5 * heads * seq_len / dim) * act_bytes / 2
    activations = (
        (layers * seq_len * batch_size * dim * act_bytes + per_layer) if gradient_checkpointing else layers * per_layer
    )
    return MemoryEstimate(
        weights=4 * trainable,
        grads=4 * trainable,
        optimizer=OPTIMIZER_BYTES[optimizer] * trainable,
        activations=activations,
        other=OTHER_STEP_MEMORY_PER_CLIP * batch_size,
        frozen=4 * frozen if frozen_bytes is None else frozen_bytes,
    )


def lora_split(gpt_params: int, layers: int, dim: int, r: int, base_dtype: str) -> tuple[int, int]:
    """(trainable parameters, frozen bytes of the GPT) of LoRA rank `r` on every projection of the
    GPT-2 stack (c_attn, attention c_proj, c_fc, MLP c_proj: 16 * r * dim per layer)."""
    adapters = 16 * r * dim * layers
    projections = 12 * dim * dim * layers  # their weights, held in base_dtype
    size = 2 if base_dtype == "bfloat16" else 4
    return adapters, projections * size + (gpt_params - projections) * 4


@dataclass
class CheckpointSizes:
    """Bytes of the two kinds of checkpoint a run writes, from the real tensors."""

    weights: int  # best.ckpt: the trained GPT's weights (and hyperparameters)
    full: int  # last.ckpt and step snapshots: the weights, AdamW's two moments, the loops

    @classmethod
    def of(cls, module) -> CheckpointSizes:
        saved = [t for k, t in module.state_dict().items() if module.is_saved(k)]
        trainable = [p for p in module.parameters() if p.requires_grad]
        weights = sum(t.numel() * t.element_size() for t in saved) + TENSOR_OVERHEAD * len(saved)
        # AdamW keeps exp_avg and exp_avg_sq in the parameter's dtype, and a step count, per parameter.
        moments = sum(2 * p.numel() * p.element_size() + 3 * TENSOR_OVERHEAD for p in trainable)
        return cls(weights=weights + FILE_OVERHEAD, full=weights + moments + FILE_OVERHEAD)


TENSOR_OVERHEAD = 320  # bytes a tensor adds to a torch.save zip beyond its data (header, pickle, padding)
FILE_OVERHEAD = 64 * 1024  # hyperparameters, loop and callback states


def kept_checkpoints(callbacks, sizes: CheckpointSizes) -> tuple[int, list[str]]:
    """Bytes the run keeps on disk at most, plus one full state being written (saves are atomic:
    written aside, then renamed), and what they are."""
    need, what = sizes.full, []
    for cb in callbacks:
        if cb.save_weights_only and cb.save_top_k:
            n = max(cb.save_top_k, 1)
            need += n * sizes.weights
            what.append(f"{n} x best ({sizes.weights / GB:.2f} GB)")
        elif not cb.save_weights_only:
            if cb.save_last:
                need += sizes.full
                what.append(f"last ({sizes.full / GB:.2f} GB)")
            if cb.save_top_k > 0:
                need += cb.save_top_k * sizes.full
                what.append(f"{cb.save_top_k} x step snapshot ({sizes.full / GB:.2f} GB)")
            elif cb.save_top_k < 0:
                what.append("every step snapshot (save_top_k -1: unbounded)")
    what.append(f"one being written ({sizes.full / GB:.2f} GB)")
    return need, what


def check_disk(dirpath: Path, need: int, what: list[str]) -> str:
    """Fail unless the checkpoint folder can hold what the run keeps."""
    probe = dirpath
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        raise PreflightError(
            f"{dirpath}: {free / GB:.1f} GB free, but the checkpoints this run keeps need about "
            f"{need / GB:.1f} GB ({', '.join(what)}); free some space, lower periodic_checkpoint.save_top_k, "
            f"or point best_checkpoint.dirpath and periodic_checkpoint.dirpath to a larger disk"
        )
    return f"disk: {free / GB:.1f} GB free in {probe}, ~{need / GB:.2f} GB needed: {', '.join(what)}"


def check_gpu(
    estimate: MemoryEstimate,
    free: float,
    total: float,
    precision: str,
    batch_size: int,
    gradient_checkpointing: bool,
    lora: bool = False,
) -> str:
    """Fail with what to change when the estimate does not fit the GPU's free memory."""
    line = (
        f"GPU memory: ~{estimate.total / GB:.1f} GB needed (weights+grads+AdamW "
        f"{(estimate.weights + estimate.grads + estimate.optimizer) / GB:.1f}, activations "
        f"{(estimate.activations + estimate.other) / GB:.1f}), {free / GB:.1f} of {total / GB:.1f} GB free"
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
    if not lora:
        advice.append(f"LoRA: --config {EIGHT_GB_PROFILE} (the profile for 8 GB cards)")
    raise PreflightError(f"{line}: it will not fit; try " + ", ".join(advice or ["a larger GPU"]))


EIGHT_GB_PROFILE = "configs/rtx4060-8gb.yaml"
SMALL_CARD = 8.5 * GB  # an "8 GB" card reports 7.6-8.0 GiB in total
# The settings to choose from, cheapest first: (name, precision, gradient checkpointing, LoRA base dtype
# or None for a full fine-tune). configs/rtx4070-12gb.yaml is the third, configs/rtx4060-8gb.yaml the last.
PROFILES = [
    ("fp32", "32-true", False, None),
    ("bf16-mixed", "bf16-mixed", False, None),
    ("bf16-mixed + gradient checkpointing (configs/rtx4070-12gb.yaml)", "bf16-mixed", True, None),
    (f"LoRA r=16, bf16 base, bf16-mixed + gradient checkpointing ({EIGHT_GB_PROFILE})", "bf16-mixed", True, "bfloat16"),
]


def profiles_that_fit(trainable: int, frozen: int, layers: int, dim: int, heads: int, batch: int, free: float) -> str:
    """Which profile fits the card's free memory at the longest batch, with what margin. `trainable`:
    the GPT's parameters (all trained in a full fine-tune); `frozen`: the rest (the DVAE)."""
    found = []
    for name, precision, checkpointing, lora_base in PROFILES:
        train, frozen_bytes = trainable, 4 * frozen
        if lora_base:
            train, gpt_bytes = lora_split(trainable, layers, dim, 16, lora_base)
            frozen_bytes += gpt_bytes
        estimate = estimate_gpu_memory(
            train, frozen, layers, dim, heads, batch, precision, checkpointing, frozen_bytes=frozen_bytes
        )
        verdict = "fits" if estimate.total <= free else "does not fit"
        found.append(f"{name} ~{estimate.total / GB:.1f} GB {verdict}")
    return f"profiles on this card ({free / GB:.1f} GB free, batch {batch} of the longest clips): " + "; ".join(found)


def preflight(trainer, module, datamodule) -> list[str]:
    """The checks made before anything is written: the disk for the checkpoints the run keeps, and on
    a GPU the memory a step needs. Raises PreflightError with what to change; returns what it found."""
    lines = [f"precision: {trainer.precision}"]
    callbacks = [cb for cb in trainer.checkpoint_callbacks if cb.dirpath]
    if callbacks:
        need, what = kept_checkpoints(callbacks, CheckpointSizes.of(module))
        lines.append(check_disk(Path(callbacks[0].dirpath), need, what))
    device = trainer.strategy.root_device
    if device.type == "cuda":
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        frozen = [p for p in module.parameters() if not p.requires_grad]
        gpt, hp = module.gpt, module.hparams
        lora = hp.get("finetune") == "lora"
        batch = datamodule.hparams.batch_size if datamodule is not None else 3
        estimate = estimate_gpu_memory(
            trainable,
            sum(p.numel() for p in frozen),
            len(gpt.gpt.h),
            gpt.model_dim,
            gpt.heads,
            batch,
            str(trainer.precision),
            hp.gradient_checkpointing,
            optimizer=hp.get("optimizer", "adamw"),
            frozen_bytes=sum(p.numel() * p.element_size() for p in frozen),
        )
        free, total = gpu_memory(device)
        gpt_params = sum(p.numel() for n, p in gpt.named_parameters() if not is_adapter_key(n))
        others = sum(p.numel() for p in module.parameters()) - sum(p.numel() for p in gpt.parameters())
        lines.append(profiles_that_fit(gpt_params, others, len(gpt.gpt.h), gpt.model_dim, gpt.heads, batch, free))
        if total <= SMALL_CARD and not lora:
            lines.append(f"a card of {total / GB:.1f} GB: {EIGHT_GB_PROFILE} is the profile made for it (LoRA)")
        lines.append(check_gpu(estimate, free, total, str(trainer.precision), batch, hp.gradient_checkpointing, lora))
    for line in lines:
        say(f"preflight: {line}", warning=False)
    return lines
