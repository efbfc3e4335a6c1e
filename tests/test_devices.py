"""What the hardware can do, asked in one place (`devices.py`): device choice, native bf16 on the CPU
and on CUDA cards by their compute capability; training's and inference's `precision: auto` follow it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vago_lightning import devices
from vago_lightning.errors import UsageError
from vago_lightning.inference.precision import resolve_precision as serving_precision
from vago_lightning.training.preflight import resolve_precision as training_precision


def test_bf16_is_native_from_compute_capability_8_on():
    assert not devices.bf16_from_capability((6, 1))  # GTX 1080
    assert not devices.bf16_from_capability((7, 5))  # T4, RTX 2080: bf16 emulated, torch's own check says yes
    assert devices.bf16_from_capability((8, 0))  # A100
    assert devices.bf16_from_capability((8, 9))  # RTX 4070, RTX 4060
    assert devices.bf16_from_capability((9, 0))  # H100, H200
    assert not devices.bf16_from_capability(None)  # no CUDA
    assert devices.bf16_from_capability((9, 0), rocm=True) and devices.bf16_from_capability(None, rocm=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/cpuinfo")
def test_native_bf16_on_the_cpu_is_what_its_flags_say():
    flags = set(Path("/proc/cpuinfo").read_text().split())
    assert devices.cpu_has_native_bf16() == bool({"avx512_bf16", "amx_tile"} & flags)
    assert devices.native_bf16("cpu") == devices.cpu_has_native_bf16()


def test_device_choice():
    assert devices.pick_device("auto") == ("cuda" if devices.cuda_available() else "cpu")
    assert devices.pick_device("cpu") == "cpu"
    with pytest.raises(UsageError, match="--device tpu: use cpu, cuda, cuda:N or auto"):
        devices.pick_device("tpu")
    if not devices.cuda_available():
        with pytest.raises(UsageError, match="--device cuda:1: no CUDA GPU is visible here"):
            devices.pick_device("cuda:1")
        assert devices.gpu_count() == 0 and devices.cuda_capability() is None


@pytest.mark.parametrize("native", [True, False])
def test_training_and_serving_ask_devices_about_the_cpu(monkeypatch, native):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    assert training_precision("auto", cuda=False) == ("bf16-mixed" if native else "32-true")
    assert serving_precision("auto", "cpu") == ("bf16" if native else "int8")


@pytest.mark.parametrize(
    ("capability", "trained", "served"), [((7, 5), "16-mixed", "fp32"), ((8, 9), "bf16-mixed", "bf16")]
)
def test_training_and_serving_ask_devices_about_the_card(monkeypatch, capability, trained, served):
    # A T4 (7.5) only emulates bf16: training takes 16-mixed with its grad scaler, serving fp32.
    monkeypatch.setattr(devices, "cuda_capability", lambda device="cuda": capability)
    assert training_precision("auto", cuda=True) == trained
    assert serving_precision("auto", "cuda:0") == served
