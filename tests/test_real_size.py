"""The real size: the release's architecture and file forms, and checkpoints whose size is predicted."""

from __future__ import annotations

import pickle
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from vago_lightning.demo.tiny_base import TinyBaseSpec, write_tiny_base
from vago_lightning.model.base import load_model_pth
from vago_lightning.model.batching import Collate
from vago_lightning.model.module import XttsGPTModule

from helpers import corpus_samples, quiz_fit_args

RELEASE = Path(__file__).resolve().parent.parent.parent / "shared" / "xtts-release"
needs_release_files = pytest.mark.skipif(
    not (RELEASE / "config.json").is_file(), reason="the release's config.json and vocab.json are not beside this clone"
)


HAVE_RELEASE_FILES = (RELEASE / "config.json").is_file()


@pytest.fixture(scope="module")
def release_base(tmp_path_factory):
    # The release's own config.json and vocab.json where they are beside the clone; else the release's
    # architecture as tiny-base knows it, with the demo's vocabulary (a smaller text embedding).
    files = dict(config=RELEASE / "config.json", vocab=RELEASE / "vocab.json") if HAVE_RELEASE_FILES else {}
    return write_tiny_base(tmp_path_factory.mktemp("release") / "xtts-v2", TinyBaseSpec(like_release=True, **files))


@needs_release_files
def test_the_real_vocab_encodes_the_demo_hungarian_without_unk():
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer

    from vago_lightning.demo.text import all_demo_sentences

    tokenizer = VoiceBpeTokenizer(vocab_file=str(RELEASE / "vocab.json"))
    ids = [tokenizer.encode(sentence, "hu") for sentence in all_demo_sentences()]
    assert all(1 not in sentence for sentence in ids) and max(map(len, ids)) < 200


@pytest.mark.slow
def test_a_release_shaped_base_loads_trains_a_step_and_exports_for_coqui(release_base, demo_corpora, tmp_path):
    # model.pth in the release's form: the pickled config refuses a plain weights_only load, as the real
    # file does, and our loader reads it with exactly the config classes allowed.
    with pytest.raises(pickle.UnpicklingError, match="XttsConfig"):
        torch.load(release_base / "model.pth", weights_only=True)
    state, config = load_model_pth(release_base / "model.pth", mmap=True)
    assert type(config).__name__ == "XttsConfig" and config.model_args.gpt_layers == 30
    gpt_params = sum(v.numel() for k, v in state.items() if k.startswith("gpt."))
    if HAVE_RELEASE_FILES:
        assert gpt_params == pytest.approx(441.0e6, rel=1e-3)
    else:
        assert 420e6 < gpt_params < 441.0e6  # the release's 30 x 1024 stack, a smaller vocabulary
    del state

    module = XttsGPTModule(base_model=str(release_base), lr=1e-5)  # GPT weights loaded strictly
    samples = corpus_samples(demo_corpora[0] / "quiz", module.tokenizer, 1)
    loader = DataLoader(samples, batch_size=1, collate_fn=Collate(train=True, seed=0))
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    before = module.gpt.mel_head.weight.detach().clone()
    trainer.fit(module, loader)
    assert trainer.global_step == 1 and not torch.equal(before, module.gpt.mel_head.weight)
    trainer.save_checkpoint(tmp_path / "best.ckpt", weights_only=True)
    size = (tmp_path / "best.ckpt").stat().st_size
    assert 1.7e9 < size < 1.85e9  # the GPT's fp32 weights, no optimizer, no DVAE
    trained = module.gpt.mel_head.weight.detach().clone()
    del module, trainer

    from vago_lightning.__main__ import main
    from vago_lightning.inference.synthesis import load_xtts

    assert main(["export", "--ckpt", str(tmp_path / "best.ckpt"), "--out", str(tmp_path / "exported")]) == 0
    model = load_xtts(tmp_path / "exported")  # coqui-tts's own Xtts.load_checkpoint, strict=True
    assert torch.equal(model.gpt.mel_head.weight, trained)
    assert "demo_host" in model.speaker_manager.speakers  # the base's speakers_xtts.pth came along


def test_the_predicted_checkpoint_sizes_match_the_files(tiny_base, demo_shards, tmp_path, monkeypatch):
    from vago_lightning.training.cli import cli_main
    from vago_lightning.training.preflight import CheckpointSizes, kept_checkpoints

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["train.py"])
    cli = cli_main(
        ["fit", *quiz_fit_args(tiny_base, demo_shards, "--trainer.max_steps=4", "--trainer.val_check_interval=4")]
    )
    sizes = CheckpointSizes.of(cli.model)
    folder = tmp_path / "checkpoints" / "demo-quiz"
    assert (folder / "best.ckpt").stat().st_size == pytest.approx(sizes.weights, rel=0.10)
    assert (folder / "last.ckpt").stat().st_size == pytest.approx(sizes.full, rel=0.10)
    need, what = kept_checkpoints(cli.trainer.checkpoint_callbacks, sizes)
    kept = sum(p.stat().st_size for p in folder.iterdir())
    assert need == pytest.approx(kept + sizes.full, rel=0.10)  # what is kept, plus one being written
    assert "best" in what[0] and "last" in what[1]


def test_a_base_model_pth_that_pickles_anything_else_is_refused(tmp_path):
    from vago_lightning.errors import BaseModelError

    write_tiny_base(tmp_path / "base", TinyBaseSpec())
    torch.save({"model": {}, "config": Path("x")}, tmp_path / "evil.pth")  # a class outside the allow-list
    with pytest.raises(BaseModelError, match="evil.pth: holds objects an XTTS model.pth does not"):
        load_model_pth(tmp_path / "evil.pth")
