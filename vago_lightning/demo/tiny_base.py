"""`tiny-base`: a random base model in the public XTTS-v2 release layout, at any size.

The real release is 1.8 GB and cannot be downloaded on every machine, so this writes one with the
same files and keys and random weights; every loading path then runs for real on it. `vocab.json` is
a real BPE trained on the demo text with coqui's special tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import BaseModelError, OutputExistsError
from ..files import publish_dir
from ..model.base import XTTS_DVAE_KWARGS, quiet_transformers

# Same structure as the release's DVAE, a thousand times fewer weights: for fast tests. num_layers
# stays 2 so that one code still covers 1024 samples, and 1024 codes keep the release's token ids.
TINY_DVAE_KWARGS = dict(XTTS_DVAE_KWARGS, codebook_dim=32, hidden_dim=32, num_resnet_blocks=1)

SPECIAL_TOKENS = ["[STOP]", "[UNK]", "[SPACE]"]


def train_vocab(texts: list[str], path: Path, languages: list[str], vocab_size: int = 1024) -> int:
    """Train a real BPE vocab.json in the layout coqui's VoiceBpeTokenizer reads; returns its size.

    The texts go through the same cleaner coqui applies before encoding (lowercase, numbers
    spelled out), so every cleaned Hungarian sentence encodes without [UNK].
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from TTS.tts.layers.xtts.tokenizer import multilingual_cleaners

    cleaned = [multilingual_cleaners(t, "hu") for t in texts]
    alphabet = sorted(set("".join(cleaned)) | set("abcdefghijklmnopqrstuvwxyzáéíóöőúüű0123456789.,!?;:'\"-()"))
    specials = SPECIAL_TOKENS + [f"[{lang}]" for lang in languages] + ["[START]"]
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tokenizer.train_from_iterator(cleaned, trainer=trainer)
    tokenizer.save(str(path))
    return tokenizer.get_vocab_size()


@dataclass
class TinyBaseSpec:
    gpt_layers: int = 2
    gpt_dim: int = 64
    gpt_heads: int = 4
    dvae: str = "tiny"  # "tiny" or "xtts" (the release's DVAE architecture, 51.5 M params)
    seed: int = 0
    vocab_size: int = 1024
    like_release: bool = False  # the release's architecture (30 x 1024 GPT, release DVAE) and file forms
    config: Path | None = None  # with like_release: the release's config.json to use as it is
    vocab: Path | None = None  # with like_release: the release's vocab.json to use as it is

    def validate(self) -> None:
        for flag, path in (("--release_config", self.config), ("--release_vocab", self.vocab)):
            if path is not None and not self.like_release:
                raise BaseModelError(f"{flag} {path}: only with --like_release")
            if path is not None and not Path(path).is_file():
                raise BaseModelError(f"{flag} {path}: not found")
        if self.like_release:
            return
        if self.gpt_dim % 32 or self.gpt_dim % self.gpt_heads:
            raise BaseModelError(
                f"--gpt_dim {self.gpt_dim}: must be a multiple of 32 (GroupNorm) and of --gpt_heads {self.gpt_heads}"
            )
        if self.dvae not in ("tiny", "xtts"):
            raise BaseModelError(f"--dvae {self.dvae}: choose 'tiny' or 'xtts'")


def write_tiny_base(out: str | Path, spec: TinyBaseSpec | None = None, overwrite: bool = False) -> Path:
    """Write a randomly initialised base model in the XTTS-v2 release layout to `out`."""
    spec = spec or TinyBaseSpec()
    spec.validate()
    final = Path(out)
    if final.exists() and any(final.iterdir()) and not overwrite:
        raise OutputExistsError(f"{final}: exists and is not empty; pass --overwrite or choose another --out")
    # Written aside and renamed into place: an interrupted write never leaves a half base model.
    with publish_dir(final) as out:
        _write_tiny_files(out, spec)
    return final


# The architecture of the public XTTS-v2.0.3 release (its config.json; the values that differ from
# coqui's XttsConfig defaults, read off the release's config.json, kept in ../shared/xtts-release/).
RELEASE_MODEL_ARGS = dict(
    gpt_layers=30,
    gpt_n_model_channels=1024,
    gpt_n_heads=16,
    gpt_max_audio_tokens=605,
    gpt_max_text_tokens=402,
    gpt_max_prompt_tokens=70,
    gpt_num_audio_tokens=1026,
    gpt_start_audio_token=1024,
    gpt_stop_audio_token=1025,
    gpt_use_perceiver_resampler=True,
    gpt_use_masking_gt_prompt_approach=True,
    decoder_input_dim=1024,
)
RELEASE_SETTINGS = dict(temperature=0.75, repetition_penalty=5.0, gpt_cond_len=30, max_ref_len=30)
RELEASE_VOCAB_SIZE = 6681


def _write_tiny_files(out: Path, spec: TinyBaseSpec) -> None:
    if spec.like_release:
        return _write_release_shaped(out, spec)
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.dvae import DiscreteVAE
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    from .text import all_demo_sentences

    torch.manual_seed(spec.seed)

    config = XttsConfig()
    n_vocab = train_vocab(all_demo_sentences(), out / "vocab.json", config.languages, spec.vocab_size)
    dvae_kwargs = TINY_DVAE_KWARGS if spec.dvae == "tiny" else XTTS_DVAE_KWARGS
    n_codes = dvae_kwargs["num_tokens"]
    args = config.model_args
    args.gpt_layers, args.gpt_n_model_channels, args.gpt_n_heads = (
        spec.gpt_layers,
        spec.gpt_dim,
        spec.gpt_heads,
    )
    args.gpt_number_text_tokens = n_vocab
    args.gpt_num_audio_tokens, args.gpt_start_audio_token, args.gpt_stop_audio_token = (
        n_codes + 2,
        n_codes,
        n_codes + 1,
    )
    args.gpt_use_perceiver_resampler = True  # v2
    args.gpt_use_masking_gt_prompt_approach = True  # v2
    args.decoder_input_dim = spec.gpt_dim  # HiFiGAN reads the GPT latents
    # The release's inference settings, so samples are made as users of XTTS-v2 make them.
    config.temperature, config.repetition_penalty, config.gpt_cond_len, config.max_ref_len = 0.75, 5.0, 30, 30
    config.gpt_cond_chunk_len = 4

    with quiet_transformers():  # Xtts() builds the GPT once, init_models() again
        model = Xtts(config)
        model.tokenizer = VoiceBpeTokenizer(vocab_file=str(out / "vocab.json"))
        model.init_models()
    # Smooth, non-trivial statistics so that code which forgets to apply them gives other numbers.
    mel_stats = 2.0 + 0.5 * torch.cos(torch.linspace(0, 3.14159, 80))
    model.mel_stats.copy_(mel_stats)

    config.model_args.gpt_start_text_token = None  # read from vocab.json at load, as in the release
    config.model_args.gpt_stop_text_token = None
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=4))
    torch.save({"model": model.state_dict()}, out / "model.pth")
    dvae = DiscreteVAE(**dvae_kwargs)
    torch.save(dvae.state_dict(), out / "dvae.pth")
    torch.save(mel_stats, out / "mel_stats.pth")


def _write_release_shaped(out: Path, spec: TinyBaseSpec) -> None:
    """The release's architecture at full size with random weights, in the release's file forms:
    model.pth holds the config as a pickled XttsConfig object (two of its classes under their 2023
    module, as the real file), speakers_xtts.pth named voices. Given --config/--vocab files are used
    as they are; else the release's values and a BPE vocab trained on the demo text."""
    import shutil

    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.dvae import DiscreteVAE
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    from .text import all_demo_sentences

    torch.manual_seed(spec.seed)
    config = XttsConfig()
    if spec.config is not None:
        config.load_json(str(spec.config))
        shutil.copyfile(spec.config, out / "config.json")
    else:
        for key, value in RELEASE_MODEL_ARGS.items():
            setattr(config.model_args, key, value)
        for key, value in RELEASE_SETTINGS.items():
            setattr(config, key, value)
    if spec.vocab is not None:
        shutil.copyfile(spec.vocab, out / "vocab.json")
    else:
        train_vocab(all_demo_sentences(), out / "vocab.json", config.languages, RELEASE_VOCAB_SIZE)
    tokenizer = VoiceBpeTokenizer(vocab_file=str(out / "vocab.json"))
    config.model_args.gpt_number_text_tokens = tokenizer.get_number_tokens()
    if spec.config is None:
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=4))
    with quiet_transformers():
        model = Xtts(config)
        model.tokenizer = tokenizer
        model.init_models()
    mel_stats = 2.0 + 0.5 * torch.cos(torch.linspace(0, 3.14159, 80))
    model.mel_stats.copy_(mel_stats)
    write_release_model_pth(out / "model.pth", model.state_dict(), config)
    del model
    torch.save(DiscreteVAE(**XTTS_DVAE_KWARGS).state_dict(), out / "dvae.pth")
    torch.save(mel_stats, out / "mel_stats.pth")
    # A named voice as the release ships 58: gpt_cond_latent first (coqui unpacks the values in order).
    dim = config.model_args.gpt_n_model_channels
    speaker = torch.nn.functional.normalize(torch.randn(1, 512, 1), dim=1)
    torch.save(
        {"demo_host": {"gpt_cond_latent": torch.randn(1, 32, dim), "speaker_embedding": speaker}},
        out / "speakers_xtts.pth",
    )


def write_release_model_pth(path: Path, state: dict, config) -> None:
    """`{"model": state, "config": <XttsConfig object>}` as the release's model.pth: pickle records a
    class by its __module__, so XttsArgs and XttsAudioConfig are named after TTS.tts.models.xtts (where
    they lived in 2023; that module still imports them) while this is written. The object carries the
    release's attributes (config.json has model_dir and lacks speakers and audio.dvae_sample_rate)."""
    import copy
    import importlib

    from ..model.base import LEGACY_CLASS_NAMES, LEGACY_MODULE, config_classes

    legacy = importlib.import_module(LEGACY_MODULE)
    classes = config_classes()
    obj = copy.deepcopy(config)
    obj.__dict__.pop("speakers", None)
    obj.__dict__.pop("_supports_cloning", None)
    obj.__dict__.setdefault("model_dir", None)
    obj.audio.__dict__.pop("dvae_sample_rate", None)
    saved = {n: classes[n].__module__ for n in LEGACY_CLASS_NAMES}
    try:
        for name in LEGACY_CLASS_NAMES:
            assert getattr(legacy, name) is classes[name]
            classes[name].__module__ = LEGACY_MODULE
        torch.save({"model": state, "config": obj}, path)
    finally:
        for name, module in saved.items():
            classes[name].__module__ = module
