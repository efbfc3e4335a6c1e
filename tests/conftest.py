"""Shared fixtures: real files written once per test session (a tiny base model, the demo corpora)."""

from __future__ import annotations

import pytest

from vago_lightning.demo.corpora import write_demo_corpora
from vago_lightning.demo.tiny_base import TinyBaseSpec, write_tiny_base


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
