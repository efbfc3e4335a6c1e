"""The tiny base model is a real XTTS-v2 release layout: coqui-tts loads it unchanged and speaks."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch

from vago_lightning.__main__ import main
from vago_lightning.demo.text import interview_sentences, quiz_sentences
from vago_lightning.demo.tiny_base import TINY_DVAE_KWARGS, TinyBaseSpec, write_tiny_base
from vago_lightning.errors import BaseModelError
from vago_lightning.model.base import (
    RELEASE_FILES,
    XTTS_DVAE_KWARGS,
    check_base_dir,
    dvae_kwargs_from_state_dict,
    load_dvae,
    load_xtts_config,
)
from vago_lightning.training.cli import cli_main

from helpers import quiz_fit_args


def _coqui_model(base):
    from TTS.tts.models.xtts import Xtts

    config = load_xtts_config(base)
    model = Xtts(config)
    # strict=True: every key of model.pth must match coqui's module exactly.
    model.load_checkpoint(config, checkpoint_dir=str(base), eval=True, strict=True)
    return model


def test_writes_exactly_the_release_files(tiny_base):
    assert sorted(p.name for p in tiny_base.iterdir()) == sorted(RELEASE_FILES)
    config = json.loads((tiny_base / "config.json").read_text())
    assert config["model"] == "xtts"
    args = config["model_args"]
    assert (args["gpt_layers"], args["gpt_n_model_channels"], args["gpt_n_heads"]) == (2, 64, 4)
    assert (args["gpt_num_audio_tokens"], args["gpt_start_audio_token"], args["gpt_stop_audio_token"]) == (
        1026,
        1024,
        1025,
    )
    assert args["gpt_use_perceiver_resampler"] is True
    state = torch.load(tiny_base / "model.pth", map_location="cpu", weights_only=True)["model"]
    prefixes = {k.split(".")[0] for k in state}
    assert prefixes == {"gpt", "hifigan_decoder", "mel_stats"}  # as in the release: no DVAE, no optimizer
    assert torch.equal(state["mel_stats"], torch.load(tiny_base / "mel_stats.pth", weights_only=True))


def test_vocab_has_coqui_special_tokens_and_encodes_hungarian_without_unk(tiny_base):
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer

    tok = VoiceBpeTokenizer(vocab_file=str(tiny_base / "vocab.json"))
    vocab = tok.tokenizer.get_vocab()
    assert (vocab["[STOP]"], vocab["[UNK]"], vocab["[SPACE]"]) == (0, 1, 2)
    assert "[hu]" in vocab and "[START]" in vocab and "[en]" in vocab
    for text in quiz_sentences() + interview_sentences(0)[:50] + ["Hány éves volt 1956-ban? Ötvenhat."]:
        ids = tok.encode(text, "hu")
        assert ids[0] == vocab["[hu]"]
        assert vocab["[UNK]"] not in ids and vocab["[STOP]"] not in ids, text
    # BPE really merged: far fewer tokens than characters.
    ids = tok.encode("Melyik folyó szeli ketté Budapestet?", "hu")
    assert len(ids) < len("Melyik folyó szeli ketté Budapestet?") // 2


def test_coqui_loads_it_strictly_and_synthesizes_hungarian(tiny_base, demo_corpora):
    root, _ = demo_corpora
    model = _coqui_model(tiny_base)
    wav, sr = sf.read(root / "quiz" / "wavs" / "quiz_0001.wav", dtype="float32")
    audio = torch.from_numpy(wav)[None]
    latents = model.get_gpt_cond_latents(audio, sr, length=30, chunk_length=4)
    speaker = model.get_speaker_embedding(audio, sr)
    assert latents.shape == (1, 32, 64) and speaker.shape == (1, 512, 1)
    out = model.inference(
        "Melyik folyó szeli ketté Budapestet?", "hu", latents, speaker, temperature=0.75, max_new_tokens=40
    )
    wav_out = torch.as_tensor(out["wav"])
    assert wav_out.ndim == 1 and wav_out.numel() > 24000 * 0.1  # at least 0.1 s at 24 kHz
    assert torch.isfinite(wav_out).all()


@pytest.mark.parametrize("kwargs", [TINY_DVAE_KWARGS, XTTS_DVAE_KWARGS], ids=["tiny", "xtts"])
def test_dvae_architecture_is_read_back_from_its_weights(kwargs):
    from TTS.tts.layers.xtts.dvae import DiscreteVAE

    assert dvae_kwargs_from_state_dict(DiscreteVAE(**kwargs).state_dict()) == kwargs


def test_tiny_dvae_loads_and_codes_one_per_1024_samples(tiny_base):
    dvae = load_dvae(tiny_base / "dvae.pth")
    assert not dvae.training and not any(p.requires_grad for p in dvae.parameters())
    mel = torch.randn(1, 80, 344)  # 344 hop-256 mel frames: two stride-2 layers give 86 codes
    codes = dvae.get_codebook_indices(mel)
    assert codes.shape == (1, mel.shape[-1] // 4) and codes.max() < 1024


def test_coqui_gpt_trainer_loads_a_base_written_with_the_release_dvae(xtts_dvae_base):
    from coqui_reference import coqui_gpt_trainer

    trainer = coqui_gpt_trainer(xtts_dvae_base)
    ours = torch.load(xtts_dvae_base / "dvae.pth", weights_only=True)
    for key, value in trainer.dvae.state_dict().items():
        if not key.startswith("discrete_loss."):
            assert torch.equal(value, ours[key]), key
    released = torch.load(xtts_dvae_base / "model.pth", weights_only=True)["model"]
    assert torch.equal(trainer.xtts.gpt.mel_head.weight, released["gpt.mel_head.weight"])


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a = write_tiny_base(tmp_path / "a", TinyBaseSpec(seed=1))
    b = write_tiny_base(tmp_path / "b", TinyBaseSpec(seed=1))
    c = write_tiny_base(tmp_path / "c", TinyBaseSpec(seed=2))
    key = "gpt.mel_head.weight"
    load = lambda d: torch.load(d / "model.pth", weights_only=True)["model"][key]  # noqa: E731
    assert torch.equal(load(a), load(b)) and not torch.equal(load(a), load(c))


def test_refuses_to_overwrite_and_bad_sizes_with_one_line_errors(tiny_base, tmp_path, capsys):
    assert main(["tiny-base", "--out", str(tiny_base)]) == 2
    err = capsys.readouterr().err
    assert str(tiny_base) in err and "--overwrite" in err and err.count("\n") == 1
    assert main(["tiny-base", "--out", str(tmp_path / "x"), "--gpt-dim", "48"]) == 2
    assert "--gpt_dim 48" in capsys.readouterr().err


def test_check_base_dir_names_the_missing_file(tiny_base, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in RELEASE_FILES[:3]:
        (partial / name).write_bytes((tiny_base / name).read_bytes())
    with pytest.raises(BaseModelError, match="mel_stats.pth: missing"):
        check_base_dir(partial)
    with pytest.raises(BaseModelError, match="tiny-base"):
        check_base_dir(tmp_path / "nowhere")


def test_no_base_model_says_where_the_release_comes_from(demo_shards, run_dir):
    with pytest.raises(SystemExit) as err:
        cli_main(["fit", *quiz_fit_args(run_dir / "models" / "xtts-v2", demo_shards)])
    message = str(err.value)
    assert "coqui/XTTS-v2" in message and "config.json model.pth dvae.pth" in message
    assert "tiny-base" in message and "to try the pipeline" in message
