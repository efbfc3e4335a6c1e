"""The LightningModule: equal to coqui's GPTTrainer, starts from three kinds of checkpoint, learns."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from vago_lightning.demo.tiny_base import TinyBaseSpec, write_tiny_base
from vago_lightning.errors import BaseModelError
from vago_lightning.model.batching import Collate
from vago_lightning.model.module import XttsGPTModule

from coqui_reference import coqui_batch
from helpers import corpus_samples


@pytest.fixture(scope="module")
def parity_pair(xtts_dvae_base):
    from coqui_reference import coqui_gpt_trainer

    coqui = coqui_gpt_trainer(xtts_dvae_base, lr=1e-3)
    ours = XttsGPTModule(base_model=str(xtts_dvae_base), lr=1e-3)
    return coqui, ours


@pytest.mark.parametrize("train", [True, False], ids=["train-with-prompt-masking", "eval"])
def test_losses_equal_coqui_gpt_trainer(parity_pair, demo_corpora, train):
    coqui, ours = parity_pair
    root, _ = demo_corpora
    batch = Collate(train=train, seed=3)(corpus_samples(root / "interview", ours.tokenizer, 3))
    # coqui's on_train_epoch_start: everything in eval, then the GPT in train mode (dropout on).
    coqui.train(False)
    coqui.xtts.gpt.train(train)
    ours.train(train)
    torch.manual_seed(7)  # the same dropout masks in both forwards
    cb = coqui.format_batch_on_device(coqui_batch(batch))
    if not train:
        cb["cond_idxs"] = None  # what coqui's eval_step does
    _, expected = coqui.train_step(cb, None)
    torch.manual_seed(7)
    got = ours.losses(batch)
    for name in ("loss_text_ce", "loss_mel_ce", "loss"):
        assert abs(got[name].item() - expected[name].item()) < 1e-5, name
    assert torch.equal(cb["audio_codes"], ours.batch_features(batch)[0])


def test_one_optimizer_step_equals_coqui(parity_pair, demo_corpora):
    coqui, ours = parity_pair
    ours.gpt.load_state_dict(coqui.xtts.gpt.state_dict())
    root, _ = demo_corpora
    batch = Collate(train=False)(corpus_samples(root / "quiz", ours.tokenizer, 3))
    coqui.train(False)
    ours.train(False)
    coqui_opt = coqui.get_optimizer()
    ours_opt = ours.configure_optimizers()["optimizer"]
    # Same grouping: the same parameter names with and without weight decay.
    names = {id(p): n for n, p in coqui.xtts.gpt.named_parameters()}
    our_names = {id(p): n for n, p in ours.gpt.named_parameters()}
    for theirs, mine in zip(coqui_opt.param_groups, ours_opt.param_groups):
        assert sorted(names[id(p)] for p in theirs["params"]) == sorted(our_names[id(p)] for p in mine["params"])
        assert (theirs["weight_decay"], theirs["betas"], theirs["eps"], theirs["lr"]) == (
            mine["weight_decay"],
            tuple(mine["betas"]),
            mine["eps"],
            mine["lr"],
        )
    cb = coqui.format_batch_on_device(coqui_batch(batch))
    cb["cond_idxs"] = None
    coqui.train_step(cb, None)[1]["loss"].backward()
    ours.losses(batch)["loss"].backward()
    coqui_opt.step()
    ours_opt.step()
    theirs = coqui.xtts.gpt.state_dict()
    moved = 0
    for name, value in ours.gpt.state_dict().items():
        assert torch.allclose(value, theirs[name], atol=1e-6), name
    for _, value in ours.gpt.named_parameters():
        moved += int(value.grad is not None)
    assert moved > 0


def test_frozen_parts_stay_frozen_and_out_of_checkpoints(tiny_base):
    module = XttsGPTModule(base_model=str(tiny_base))
    module.train()
    assert module.gpt.training and not module.dvae.training and not module.cond_mel.training
    trainable = {n.split(".")[0] for n, p in module.named_parameters() if p.requires_grad}
    assert trainable == {"gpt"}
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert {k.split(".")[0] for k in checkpoint["state_dict"]} == {"gpt"}


def _fit(module, samples, steps, tmp_path, **trainer_kwargs):
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    loader = DataLoader(
        samples,
        batch_size=3,
        shuffle=True,
        collate_fn=Collate(train=True, seed=0),
        generator=torch.Generator().manual_seed(0),
    )
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record()],
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        **trainer_kwargs,
    )
    trainer.fit(module, loader)
    return trainer, losses


def test_tiny_training_run_losses_fall(tiny_base, demo_corpora, tmp_path):
    root, _ = demo_corpora
    L.seed_everything(0)
    module = XttsGPTModule(base_model=str(tiny_base), lr=3e-4)
    samples = corpus_samples(root / "quiz", module.tokenizer, 12)
    trainer, losses = _fit(module, samples, 40, tmp_path)
    assert len(losses) == 40 and all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < first - 0.5, (first, last)
    assert trainer.global_step == 40


def test_init_from_release_lightning_and_coqui_checkpoints(tiny_base, xtts_dvae_base, tmp_path):
    # (a) an XTTS release model.pth: another tiny base of the same sizes, other weights
    other = write_tiny_base(tmp_path / "other", TinyBaseSpec(seed=5))
    module = XttsGPTModule(base_model=str(tiny_base), init_from=str(other / "model.pth"))
    release = torch.load(other / "model.pth", weights_only=True)["model"]
    assert module.init_kind == "xtts-release"
    assert torch.equal(module.gpt.mel_head.weight, release["gpt.mel_head.weight"])
    base_state = torch.load(tiny_base / "model.pth", weights_only=True)["model"]
    assert not torch.equal(module.gpt.mel_head.weight, base_state["gpt.mel_head.weight"])

    # (b) one of our Lightning checkpoints, written by a real Trainer
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "stage1.ckpt")
    with torch.no_grad():
        module.gpt.mel_head.weight.add_(1.0)  # the file must hold what was saved, not this
    resumed = XttsGPTModule(base_model=str(tiny_base), init_from=str(tmp_path / "stage1.ckpt"), lr=1e-6)
    assert resumed.init_kind == "lightning" and resumed.hparams.lr == 1e-6
    assert torch.equal(resumed.gpt.mel_head.weight, release["gpt.mel_head.weight"])

    # (c) a coqui trainer best_model.pth: GPTTrainer.state_dict() with optimizer, as coqui saves it
    from coqui_reference import coqui_gpt_trainer

    coqui = coqui_gpt_trainer(xtts_dvae_base)
    with torch.no_grad():
        coqui.xtts.gpt.text_head.bias.fill_(0.25)
    opt = coqui.get_optimizer()
    torch.save(
        {
            "config": coqui.config.to_dict(),
            "model": coqui.state_dict(),
            "optimizer": opt.state_dict(),
            "step": 10,
            "epoch": 1,
        },
        tmp_path / "best_model.pth",
    )
    from_coqui = XttsGPTModule(base_model=str(xtts_dvae_base), init_from=str(tmp_path / "best_model.pth"))
    assert from_coqui.init_kind == "coqui-trainer"
    assert torch.all(from_coqui.gpt.text_head.bias == 0.25)


def test_init_from_mismatched_shapes_names_key_and_shapes(tiny_base, tmp_path):
    wider = write_tiny_base(tmp_path / "wider", TinyBaseSpec(gpt_dim=96, gpt_heads=4))
    with pytest.raises(BaseModelError) as err:
        XttsGPTModule(base_model=str(tiny_base), init_from=str(wider / "model.pth"))
    message = str(err.value)
    assert "model.pth" in message and "(96, 80, 1)" in message and "(64, 80, 1)" in message
    with pytest.raises(BaseModelError, match="checkpoint not found"):
        XttsGPTModule(base_model=str(tiny_base), init_from=str(tmp_path / "nope.ckpt"))


def test_gradient_checkpointing_gives_the_same_gradients(tiny_base, demo_corpora):
    root, _ = demo_corpora
    plain = XttsGPTModule(base_model=str(tiny_base))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checkpointed = XttsGPTModule(base_model=str(tiny_base), gradient_checkpointing=True)
    assert not [w for w in caught if "checkpointing_enable" in str(w.message)]  # no deprecation on every run
    batch = Collate(train=False)(corpus_samples(root / "quiz", plain.tokenizer, 2))
    for module in (plain, checkpointed):
        module.train(False)
        module.gpt.gpt.train(True)  # HF checkpointing only acts in training mode
        module.gpt.gpt.config.resid_pdrop = module.gpt.gpt.config.attn_pdrop = 0.0
        for m in module.gpt.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        module.losses(batch)["loss"].backward()
    assert checkpointed.gpt.gpt.gradient_checkpointing
    g1, g2 = plain.gpt.mel_head.weight.grad, checkpointed.gpt.mel_head.weight.grad
    assert torch.allclose(g1, g2, atol=1e-6)
    h1 = plain.gpt.gpt.h[0].mlp.c_fc.weight.grad
    assert torch.allclose(h1, checkpointed.gpt.gpt.h[0].mlp.c_fc.weight.grad, atol=1e-5)


def test_precomputed_codes_are_used_instead_of_the_dvae(tiny_base, demo_corpora):
    root, _ = demo_corpora
    module = XttsGPTModule(base_model=str(tiny_base)).train(False)
    samples = corpus_samples(root / "quiz", module.tokenizer, 2)
    on_the_fly = Collate(train=False)(samples)
    codes, _ = module.batch_features(on_the_fly)
    for sample, row, n in zip(samples, codes, on_the_fly.wav_lengths):
        sample["codes"] = row[: -(-int(n) // 1024)]
    given = Collate(train=False)(samples)
    assert given.codes is not None and torch.equal(module.batch_features(given)[0][:, :5], codes[:, :5])
    for sample in samples:
        sample["codes"] = torch.zeros_like(sample["codes"])  # other codes give another loss
    zeros = Collate(train=False)(samples)
    assert not torch.isclose(module.losses(zeros)["loss_mel_ce"], module.losses(on_the_fly)["loss_mel_ce"])


@pytest.mark.slow  # ~53 s where the CPU emulates bf16 (no AVX512-BF16)
def test_bf16_mixed_converges_like_fp32(tiny_base, demo_corpora, tmp_path):
    """The same 24 steps in fp32 and in bf16-mixed (what precision auto picks on a CPU with native
    bf16, and on an RTX 4070): the validation loss ends within a few % of fp32's."""
    root, _ = demo_corpora
    losses = {}
    for precision in ("32-true", "bf16-mixed"):
        torch.manual_seed(0)
        module = XttsGPTModule(base_model=str(tiny_base), lr=3e-4, validate_at_start=False)
        samples = corpus_samples(root / "quiz", module.tokenizer, 24)
        train = DataLoader(samples[:18], batch_size=3, collate_fn=Collate(train=True, seed=0))
        val = DataLoader(samples[18:], batch_size=3, collate_fn=Collate(train=False))
        trainer = L.Trainer(
            max_steps=24,
            accelerator="cpu",
            precision=precision,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            gradient_clip_val=1.0,
            default_root_dir=tmp_path,
        )
        trainer.fit(module, train)
        losses[precision] = float(trainer.validate(module, val, verbose=False)[0]["val/loss"])
    assert losses["bf16-mixed"] == pytest.approx(losses["32-true"], rel=0.05), losses
    assert losses["32-true"] < 6.0  # it learned (the random start is about 7)
