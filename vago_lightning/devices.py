"""Where a tool computes: `--device` of `prepare` and `serve`."""

from __future__ import annotations

from .errors import UsageError


def pick_device(device: str) -> str:
    """`--device`: auto (a GPU when there is one), cpu, cuda or cuda:N; one line when a GPU is asked
    for and none is visible, or for anything else."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA GPU is visible here; use --device cpu (or auto)")
    if device != "cpu" and not device.startswith("cuda"):
        raise UsageError(f"--device {device}: use cpu, cuda, cuda:N or auto")
    return device
