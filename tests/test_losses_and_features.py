"""The pure torch parts, each against coqui-tts's own code where it has one."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from vago_lightning.constants import MAX_COND_SAMPLES, MIN_COND_SAMPLES
from vago_lightning.model.base import build_gpt, load_dvae, load_tokenizer, load_xtts_config
from vago_lightning.model.batching import Collate, prompt_slice
from vago_lightning.model.features import code_count, conditioning_mel, dvae_codes, dvae_mel
from vago_lightning.model.losses import LossWeights, gpt_losses, mask_prompt_per_item, mel_targets, weighted
from vago_lightning.model.optim import lr_factor, weight_decay_groups


@pytest.fixture(scope="module")
def gpt(tiny_base):
    torch.manual_seed(0)
    return build_gpt(load_xtts_config(tiny_base), load_tokenizer(tiny_base)).train(False)


def _batch(gpt, lengths=(30_000, 60_000, 45_000), seed=0):
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    wav_lengths = torch.tensor(lengths)
    codes = torch.randint(0, 1024, (b, max(code_count(n) for n in lengths)), generator=g)
    text = torch.randint(3, 50, (b, 12), generator=g)
    return dict(
        text=text,
        text_lengths=torch.tensor([12, 7, 10]),
        codes=codes,
        wav_lengths=wav_lengths,
        cond_mels=torch.randn(b, 1, 80, 200, generator=g),
    )


@pytest.mark.parametrize("make,n_fft", [(dvae_mel, 1024), (conditioning_mel, 2048)])
def test_mel_features_equal_coquis(tiny_base, make, n_fft):
    from TTS.tts.layers.tortoise.arch_utils import TorchMelSpectrogram

    ref = TorchMelSpectrogram(
        filter_length=n_fft,
        hop_length=256,
        win_length=1024,
        normalize=False,
        sampling_rate=22050,
        mel_fmin=0,
        mel_fmax=8000,
        n_mel_channels=80,
        mel_norm_file=str(tiny_base / "mel_stats.pth"),
    )
    stats = torch.load(tiny_base / "mel_stats.pth", weights_only=True)
    wav = torch.randn(2, 40_000) * 0.1
    assert torch.allclose(make(stats)(wav), ref(wav), atol=1e-6)
    assert torch.allclose(make(stats)(wav[:, None]), ref(wav), atol=1e-6)  # [B,1,T] too


def test_dvae_codes_count_and_range(tiny_base):
    stats = torch.load(tiny_base / "mel_stats.pth", weights_only=True)
    dvae = load_dvae(tiny_base / "dvae.pth")
    for n in (22050, 66150, 102400, 102656, 255995):
        codes = dvae_codes(dvae, dvae_mel(stats), torch.randn(1, n) * 0.1)
        assert codes.shape == (1, code_count(n)) and codes.dtype == torch.long
        assert int(codes.min()) >= 0 and int(codes.max()) < 1024


def test_prompt_slice_follows_coqui():
    rng = random.Random(0)
    wav = torch.arange(200_000, dtype=torch.float32)
    for _ in range(50):
        piece, (start, end) = prompt_slice(wav, train=True, rng=rng)
        assert MIN_COND_SAMPLES <= end - start <= MAX_COND_SAMPLES and start >= 0 and end <= 200_000
        assert piece.shape == (MAX_COND_SAMPLES,) and torch.equal(piece[: end - start], wav[start:end])
        assert not piece[end - start :].any()
    piece, idx = prompt_slice(wav, train=False, rng=rng)
    assert idx == [0, (MIN_COND_SAMPLES + MAX_COND_SAMPLES) // 2]  # fixed in validation
    _, idx = prompt_slice(torch.ones(50_000), train=True, rng=rng)
    assert idx[1] - idx[0] == 25_000  # a clip shorter than the slice gives half of itself


def test_collate_pads_and_keeps_precomputed_codes():
    samples = [
        dict(text=torch.tensor([5, 6, 7]), wav=torch.ones(70_000), codes=torch.tensor([1, 2]), corpus="quiz"),
        dict(text=torch.tensor([5]), wav=torch.ones(90_000), codes=torch.tensor([3, 4, 5]), corpus="interview"),
    ]
    batch = Collate(train=True, seed=1)(samples)
    assert batch.text.tolist() == [[5, 6, 7], [5, 0, 0]] and batch.text_lengths.tolist() == [3, 1]
    assert batch.wav.shape == (2, 90_000) and batch.wav_lengths.tolist() == [70_000, 90_000]
    assert batch.codes.tolist() == [[1, 2, 0], [3, 4, 5]]
    assert batch.cond_wav.shape == (2, MAX_COND_SAMPLES) and batch.cond_idxs.shape == (2, 2)
    assert Collate(train=False)(samples).cond_idxs is None
    del samples[0]["codes"]
    assert Collate(train=False)(samples).codes is None  # computed on the fly then
    sub = batch.select([1])
    assert sub.corpus == ["interview"] and sub.wav.shape == (1, 90_000)


def test_our_mel_targets_give_coquis_unmasked_mel_loss(gpt):
    b = _batch(gpt)
    with torch.no_grad():
        loss_text, loss_mel, logits = gpt(
            b["text"],
            b["text_lengths"],
            b["codes"],
            b["wav_lengths"],
            cond_mels=b["cond_mels"],
            cond_idxs=None,
        )
    targets = mel_targets(b["codes"], b["wav_lengths"], 1024, gpt.stop_audio_token)
    assert targets.shape == logits.shape[::2]
    ours = nn.functional.cross_entropy(logits, targets, ignore_index=-1)
    assert torch.allclose(ours, loss_mel, atol=1e-6)
    with torch.no_grad():
        again = gpt_losses(
            gpt, b["text"], b["text_lengths"], b["codes"], b["wav_lengths"], b["cond_mels"], None, "per_item"
        )
    assert torch.allclose(again[1], loss_mel, atol=1e-6) and torch.allclose(again[0], loss_text)


def test_prompt_masking_coqui_quirk_and_per_item_fix(gpt):
    b = _batch(gpt)
    cond_idxs = torch.tensor([[0, 8192], [10_240, 30_720], [1024, 5000]])
    targets = mel_targets(b["codes"], b["wav_lengths"], 1024, gpt.stop_audio_token)
    fixed = mask_prompt_per_item(targets, cond_idxs, 1024)
    assert (fixed[0, 0:8] == -1).all() and fixed[0, 8] != -1
    assert (fixed[1, 10:30] == -1).all() and fixed[1, 9] != -1 and fixed[1, 30] != -1
    assert (fixed[2, 1:5] == -1).all() and fixed[2, 0] != -1  # 5000 samples end inside code 4
    before = cond_idxs.clone()
    args = (gpt, b["text"], b["text_lengths"], b["codes"], b["wav_lengths"], b["cond_mels"], cond_idxs)
    with torch.no_grad():
        _, coqui_mel = gpt_losses(*args, "coqui")
        _, fixed_mel = gpt_losses(*args, "per_item")
        _, none_mel = gpt_losses(*args[:-1], None, "coqui")
    assert torch.equal(cond_idxs, before)  # never modified in place
    # coqui masks only the last item, (1024 // 256)=4 .. (5000 // 256)=19 in code units: other numbers
    assert not torch.isclose(coqui_mel, fixed_mel) and not torch.isclose(coqui_mel, none_mel)


def test_weighted_losses():
    out = weighted(torch.tensor(2.0), torch.tensor(3.0), LossWeights())
    assert out["loss_text_ce"] == pytest.approx(0.02) and out["loss_mel_ce"] == pytest.approx(3.0)
    assert out["loss"] == pytest.approx(3.02)
    out = weighted(torch.tensor(2.0), torch.tensor(3.0), LossWeights(text_ce=0.5, mel_ce=2.0))
    assert out["loss"] == pytest.approx(7.0)


def test_weight_decay_groups(gpt):
    decay, no_decay = weight_decay_groups(gpt, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    ids = lambda group: {id(p) for p in group["params"]}  # noqa: E731
    assert ids(decay).isdisjoint(ids(no_decay))
    assert ids(decay) | ids(no_decay) == {id(p) for p in gpt.parameters()}
    no = ids(no_decay)
    assert id(gpt.text_embedding.weight) in no and id(gpt.mel_pos_embedding.emb.weight) in no
    assert id(gpt.final_norm.weight) in no and id(gpt.mel_head.bias) in no
    assert id(gpt.mel_head.weight) not in no and id(gpt.gpt.h[0].attn.c_attn.weight) not in no


def test_lr_schedule():
    assert [lr_factor(s, 4, "constant", 100, 0.1) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor(0, 0, "cosine", 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(50, 0, "cosine", 100, 0.1) == pytest.approx(0.55)
    assert lr_factor(100, 0, "cosine", 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(500, 0, "cosine", 100, 0.1) == pytest.approx(0.1)


def test_dvae_codes_are_fp32_under_mixed_precision(tiny_base):
    stats = torch.load(tiny_base / "mel_stats.pth", weights_only=True)
    dvae, mel = load_dvae(tiny_base / "dvae.pth"), dvae_mel(stats)
    wav = torch.randn(2, 50_000) * 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = dvae_codes(dvae, mel, wav)
    assert torch.equal(mixed, dvae_codes(dvae, mel, wav))
