"""The 8 GB levers as settings: LoRA (`model.finetune lora`) and an 8-bit AdamW (`model.optimizer
adamw8bit`), with their checkpoints, resume, `init_from`, DDP and export."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from vago_lightning.errors import BaseModelError, UsageError
from vago_lightning.inference.export import export_checkpoint
from vago_lightning.inference.synthesis import load_xtts
from vago_lightning.model.base import gpt_state_from_checkpoint
from vago_lightning.model.batching import Collate
from vago_lightning.model.lora import is_adapter_key, merged_state
from vago_lightning.model.module import XttsGPTModule
from vago_lightning.training.cli import cli_main

from helpers import corpus_samples, quiz_fit_args

LORA = ["--model.finetune=lora", "--model.lora.r=4", "--trainer.val_check_interval=3"]


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["train.py"])


def _gpt_of(path) -> dict:
    return {k[4:]: v for k, v in torch.load(path, weights_only=True)["model"].items() if k.startswith("gpt.")}


def test_a_lora_run_keeps_adapters_only_resumes_and_exports_a_model_coqui_loads(
    tiny_base, demo_shards, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    cli = cli_main(["fit", *quiz_fit_args(tiny_base, demo_shards, *LORA, "--trainer.max_steps=6")])
    module = cli.model
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all(is_adapter_key(n) for n in trainable)
    run = tmp_path / "checkpoints" / "demo-quiz"
    last = torch.load(run / "last.ckpt", weights_only=False)
    best = torch.load(run / "best.ckpt", weights_only=False)
    for ckpt in (last, best):  # the adapters, not a copy of the GPT
        assert set(ckpt["state_dict"]) == {k for k in module.state_dict() if is_adapter_key(k)}
        assert ckpt["lora"]["settings"]["r"] == 4
    moments = last["optimizer_states"][0]["state"]
    assert len(moments) == len(trainable)  # AdamW's state of the adapters alone

    # The same command resumes the LoRA run: weights, optimizer and step.
    cli = cli_main(["fit", *quiz_fit_args(tiny_base, demo_shards, *LORA, "--trainer.max_steps=9")])
    assert cli.trainer.global_step == 9
    # Resuming it as a full fine-tune is one line naming the setting.
    with pytest.raises(SystemExit, match=r"error: .*finetune lora run; resume .* with --model.finetune lora"):
        cli_main(["fit", *quiz_fit_args(tiny_base, demo_shards, "--trainer.max_steps=12")])

    # export merges the adapters into the GPT; coqui-tts loads it strictly, and it is not the base.
    out = export_checkpoint(run / "best.ckpt", tmp_path / "exported")
    load_xtts(out)  # Xtts.load_checkpoint(strict=True)
    exported, base = _gpt_of(out / "model.pth"), _gpt_of(tiny_base / "model.pth")
    assert exported.keys() == base.keys()
    changed = [k for k in base if not torch.equal(exported[k], base[k])]
    assert changed and all(k.endswith("weight") and k.startswith("gpt.h.") for k in changed)
    trained = XttsGPTModule(base_model=str(tiny_base), finetune="lora", lora={"r": 4})
    trained.load_state_dict(torch.load(run / "best.ckpt", weights_only=False)["state_dict"])
    merged = merged_state(trained.gpt)
    assert all(torch.allclose(exported[k], merged[k], atol=1e-6) for k in changed)

    # Stage two can start from a LoRA run's weights, fully or with new adapters.
    for finetune in ("full", "lora"):
        stage_two = XttsGPTModule(base_model=str(tiny_base), init_from=str(run / "best.ckpt"), finetune=finetune)
        assert stage_two.init_kind == "lightning-lora"
        assert torch.allclose(merged_state(stage_two.gpt)[changed[0]], merged[changed[0]], atol=1e-6)


def test_adapters_are_not_applied_to_other_starting_weights(tiny_base, tmp_path):
    """A LoRA checkpoint needs the weights it was trained on top of: a changed init_from is one line."""
    start = tmp_path / "start.pth"
    torch.save(torch.load(tiny_base / "model.pth", weights_only=True), start)
    module = XttsGPTModule(base_model=str(tiny_base), init_from=str(start), finetune="lora", lora={"r": 2})
    with torch.no_grad():
        next(p for n, p in module.named_parameters() if "lora_B" in n).fill_(0.5)
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "run.ckpt")
    gpt_state_from_checkpoint(tmp_path / "run.ckpt")  # as it was: fine

    state = torch.load(start, weights_only=True)
    state["model"]["gpt.mel_head.weight"] += 0.01
    torch.save(state, start)
    with pytest.raises(BaseModelError, match=r"run.ckpt: its LoRA adapters were trained on top of the weights of"):
        gpt_state_from_checkpoint(tmp_path / "run.ckpt")
    again = XttsGPTModule(base_model=str(tiny_base), init_from=str(start), finetune="lora", lora={"r": 2})
    with pytest.raises(BaseModelError, match=r"LoRA adapters were trained on top of"):
        again.on_load_checkpoint(checkpoint)  # a resume or validate of that run


def _trainer(tmp_path, precision: str, steps: int = 2) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        precision=precision,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )


def test_a_bf16_frozen_base_trains_under_bf16_mixed_and_is_refused_without_it(tiny_base, demo_corpora, tmp_path):
    root, _ = demo_corpora
    settings = {"r": 4, "base_dtype": "bfloat16"}
    module = XttsGPTModule(base_model=str(tiny_base), finetune="lora", lora=settings, lr=1e-3)
    frozen = [p for n, p in module.gpt.named_parameters() if ".base_layer." in n]
    assert frozen and all(p.dtype == torch.bfloat16 and not p.requires_grad for p in frozen)
    samples = corpus_samples(root / "quiz", module.tokenizer, 6)
    loader = DataLoader(samples, batch_size=3, collate_fn=Collate(train=True))
    before = merged_state(module.gpt)
    _trainer(tmp_path, "bf16-mixed").fit(module, loader)
    after = merged_state(module.gpt)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(UsageError, match=r"model.lora.base_dtype bfloat16 needs trainer.precision bf16-mixed"):
        fp32 = XttsGPTModule(base_model=str(tiny_base), finetune="lora", lora=settings)
        _trainer(tmp_path, "32-true").fit(fp32, loader)


def test_the_8bit_adamw_trains_keeps_8bit_moments_and_resumes(tiny_base, demo_shards, tmp_path, monkeypatch):
    """bitsandbytes' AdamW8bit, here on its CPU kernels; its moments are uint8 in last.ckpt."""
    monkeypatch.chdir(tmp_path)
    args = ["--model.optimizer=adamw8bit", "--trainer.val_check_interval=2"]
    cli = cli_main(["fit", *quiz_fit_args(tiny_base, demo_shards, *args, "--trainer.max_steps=4")])
    assert type(cli.trainer.optimizers[0]).__name__ == "AdamW8bit"
    last = torch.load(tmp_path / "checkpoints" / "demo-quiz" / "last.ckpt", weights_only=False)
    states = last["optimizer_states"][0]["state"].values()
    quantized = [s["__bnb_optimizer_quant_state__"] for s in states]  # how bitsandbytes saves its state
    moments = [v for s in quantized for k, v in s.items() if k in ("state1", "state2")]
    assert any(m.dtype == torch.uint8 for m in moments)  # 8-bit moments (of the tensors of >= 4,096 values)
    cli = cli_main(["fit", *quiz_fit_args(tiny_base, demo_shards, *args, "--trainer.max_steps=6")])
    assert cli.trainer.global_step == 6


def test_the_preflight_offers_the_8gb_profile_where_nothing_else_fits():
    """An 8 GB card (7.6 GB free) at full size: only the LoRA profile fits, and the advice names it."""
    from vago_lightning.training.preflight import GB, check_gpu, estimate_gpu_memory, profiles_that_fit

    full = dict(trainable=441_000_000, frozen=51_500_000, layers=30, dim=1024, heads=16)
    advice = profiles_that_fit(**full, batch=3, free=7.6 * GB)
    assert "(configs/rtx4070-12gb.yaml) ~8.9 GB does not fit" in advice
    assert "(configs/rtx4060-8gb.yaml) ~3.4 GB fits" in advice
    twelve = estimate_gpu_memory(**full, batch_size=3, precision="bf16-mixed", gradient_checkpointing=True)
    with pytest.raises(Exception, match=r"will not fit; .*--config configs/rtx4060-8gb.yaml"):
        check_gpu(twelve, 7.6 * GB, 8 * GB, "bf16-mixed", 3, gradient_checkpointing=True)
    # 8-bit moments: 2 bytes a parameter instead of 8
    eight_bit = estimate_gpu_memory(
        **full, batch_size=3, precision="bf16-mixed", gradient_checkpointing=True, optimizer="adamw8bit"
    )
    assert (twelve.optimizer - eight_bit.optimizer) / GB == pytest.approx(441_000_000 * 6 / GB)


class ReportAdapters(L.Callback):
    """Each rank writes the sum of its adapters' weights (spawned ranks return nothing)."""

    def __init__(self, out: str):
        self.out = out

    def on_train_end(self, trainer, pl_module):
        total = sum(float(p.double().sum()) for n, p in pl_module.named_parameters() if is_adapter_key(n))
        (Path(self.out) / f"rank{trainer.global_rank}.json").write_text(json.dumps(total))


@pytest.mark.slow
def test_lora_under_two_process_ddp_keeps_the_ranks_equal(tiny_base, demo_shards, tmp_path):
    from vago_lightning.data.datamodule import ShardDataModule

    model = XttsGPTModule(base_model=str(tiny_base), finetune="lora", lora={"r": 4}, lr=1e-3, validate_at_start=False)
    data = ShardDataModule(shards_dir=str(demo_shards), base_model=str(tiny_base), corpora=["quiz"], num_workers=0)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[ReportAdapters(str(tmp_path))],
        default_root_dir=tmp_path,
    )
    start = sum(float(p.double().sum()) for n, p in model.named_parameters() if is_adapter_key(n))
    trainer.fit(model, data)
    sums = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sums[0] == sums[1] != start  # trained, and the same on both ranks
