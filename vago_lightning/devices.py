"""What the hardware can do, asked in one place: where a tool computes (`--device` of `prepare` and
`serve`), whether a device computes bf16 natively (a CPU's AVX512-BF16 or AMX, a CUDA card's compute
capability), how many GPUs there are and how much memory one has free.

Training's `precision: auto` and its pre-flight, inference's `--precision auto` and the server ask
here; this module knows nothing of them (it imports only torch, and torch only when asked)."""

from __future__ import annotations

from .errors import UsageError

# bf16 matrix units arrived with compute capability 8.0 (Ampere: RTX 30xx, A100; an RTX 4070 is 8.9).
# Older cards (a T4 or an RTX 2080 is 7.5) only emulate bf16, slower than fp16 with a grad scaler.
NATIVE_BF16_CAPABILITY = (8, 0)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def gpu_count() -> int:
    """CUDA GPUs this process sees (0 without any)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def pick_device(device: str) -> str:
    """`--device`: auto (a GPU when there is one), cpu, cuda or cuda:N; one line when a GPU is asked
    for and none is visible, or for anything else."""
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device.startswith("cuda") and not cuda_available():
        raise UsageError(f"--device {device}: no CUDA GPU is visible here; use --device cpu (or auto)")
    if device != "cpu" and not device.startswith("cuda"):
        raise UsageError(f"--device {device}: use cpu, cuda, cuda:N or auto")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products in hardware (AVX512-BF16 or AMX), where bf16
    autocast pays (measured: a full-size training step 10.0 s in fp32, 5.8 s in bf16); elsewhere torch
    emulates bf16, 33x slower than fp32 on the serving path (benchmarks/README.md)."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def cuda_capability(device: str = "cuda") -> tuple[int, int] | None:
    """The compute capability of a CUDA device (`cuda`, `cuda:N`), or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return tuple(torch.cuda.get_device_capability(torch.device(device)))


def bf16_from_capability(capability: tuple[int, int] | None, rocm: bool = False) -> bool:
    """Whether a card of this compute capability computes bf16 natively. torch's own
    `is_bf16_supported()` also says yes where bf16 is only emulated (it tries a bf16 tensor), and asks
    the current device rather than the one meant."""
    if rocm:  # every ROCm architecture torch supports has bf16
        return True
    return capability is not None and tuple(capability) >= NATIVE_BF16_CAPABILITY


def native_bf16(device: str) -> bool:
    """Whether `device` (cpu, cuda, cuda:N) computes bf16 in hardware."""
    if not device.startswith("cuda"):
        return cpu_has_native_bf16()
    import torch

    return bf16_from_capability(cuda_capability(device), rocm=bool(torch.version.hip))


def gpu_memory(device="cuda") -> tuple[int, int]:
    """(free, total) bytes of a CUDA device's memory (`device`: a name or a torch.device)."""
    import torch

    free, total = torch.cuda.mem_get_info(torch.device(device))
    return int(free), int(total)
