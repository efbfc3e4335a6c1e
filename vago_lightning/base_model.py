"""Base models in the public XTTS-v2 release layout.

A base model is a directory holding `config.json`, `model.pth` (GPT + HiFiGAN decoder + mel_stats,
as released), `dvae.pth`, `mel_stats.pth` and `vocab.json`. The real release is 1.8 GB and cannot be
downloaded on every machine, so `write_tiny_base` writes one with the same files and keys and random
weights at any size; every loading path then runs for real on it.
"""

from __future__ import annotations

import json
import re
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

import torch

from .files import publish_dir

RELEASE_FILES = ("config.json", "model.pth", "dvae.pth", "mel_stats.pth", "vocab.json")

# The DVAE of the XTTS-v2 release, as coqui's GPTTrainer builds it (sizes are hard-coded there).
XTTS_DVAE_KWARGS = dict(
    channels=80, normalization=None, positional_dims=1, num_tokens=1024, codebook_dim=512,
    hidden_dim=512, num_resnet_blocks=3, kernel_size=3, num_layers=2, use_transposed_convs=False,
)
# Same structure, a thousand times fewer weights: for fast tests. num_layers stays 2 so that one
# code still covers 1024 samples (gpt_code_stride_len), and 1024 codes keep the release's token ids.
TINY_DVAE_KWARGS = dict(XTTS_DVAE_KWARGS, codebook_dim=32, hidden_dim=32, num_resnet_blocks=1)

SPECIAL_TOKENS = ["[STOP]", "[UNK]", "[SPACE]"]


class BaseModelError(ValueError):
    """A base model directory that cannot be used; the message names the file and the fix."""


def check_base_dir(base_dir: str | Path) -> Path:
    """Return the directory as a Path, or raise naming the first missing release file."""
    base = Path(base_dir)
    if not base.is_dir():
        raise BaseModelError(
            f"{base}: base model directory not found; write a tiny one with "
            f"`python -m vago_lightning tiny-base --out {base}` or point to the XTTS-v2 release files"
        )
    for name in RELEASE_FILES:
        if not (base / name).is_file():
            raise BaseModelError(f"{base / name}: missing; a base model needs {', '.join(RELEASE_FILES)}")
    return base


def load_xtts_config(base_dir: str | Path):
    from TTS.tts.configs.xtts_config import XttsConfig

    config = XttsConfig()
    config.load_json(str(Path(base_dir) / "config.json"))
    return config


# ---------------------------------------------------------------------------------------------
# DVAE


def dvae_kwargs_from_state_dict(state: dict) -> dict:
    """Read the DVAE architecture off its weights: dvae.pth is a bare state_dict without config."""
    try:
        hidden_dim, channels, kernel_size = state["encoder.0.0.weight"].shape
        codebook_dim, num_tokens = state["codebook.embed"].shape
    except KeyError as err:
        raise BaseModelError(f"dvae.pth: not a DiscreteVAE state_dict (no key {err})") from None
    down = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.(\d+)\.0\.weight$", k))}
    res = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.(\d+)\.net\.0\.weight$", k))}
    return dict(
        XTTS_DVAE_KWARGS, channels=channels, num_tokens=num_tokens, codebook_dim=codebook_dim,
        hidden_dim=hidden_dim, num_resnet_blocks=len(res),
        kernel_size=kernel_size, num_layers=len(down),
    )


def load_dvae(path: str | Path):
    """Build the frozen DVAE of a base model from its dvae.pth, strictly (coqui loads it strict=False)."""
    from TTS.tts.layers.xtts.dvae import DiscreteVAE

    state = torch.load(path, map_location="cpu", weights_only=True)
    dvae = DiscreteVAE(**dvae_kwargs_from_state_dict(state))
    missing, unexpected = dvae.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("discrete_loss.")]
    if missing or unexpected:
        raise BaseModelError(f"{path}: DVAE keys do not match (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return dvae.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# The tiny base writer


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

    def validate(self) -> None:
        if self.gpt_dim % 32 or self.gpt_dim % self.gpt_heads:
            raise BaseModelError(
                f"--gpt-dim {self.gpt_dim}: must be a multiple of 32 (GroupNorm) and of --gpt-heads {self.gpt_heads}"
            )
        if self.dvae not in ("tiny", "xtts"):
            raise BaseModelError(f"--dvae {self.dvae}: choose 'tiny' or 'xtts'")


def write_tiny_base(out: str | Path, spec: TinyBaseSpec = TinyBaseSpec(), overwrite: bool = False) -> Path:
    """Write a randomly initialised base model in the XTTS-v2 release layout to `out`."""
    spec.validate()
    final = Path(out)
    if final.exists() and any(final.iterdir()) and not overwrite:
        raise BaseModelError(f"{final}: exists and is not empty; pass --overwrite or choose another --out")
    # Written aside and renamed into place: an interrupted write never leaves a half base model.
    with publish_dir(final) as out:
        _write_tiny_files(out, spec)
    return final


def _write_tiny_files(out: Path, spec: TinyBaseSpec) -> None:
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.dvae import DiscreteVAE
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    from .demo_text import all_demo_sentences

    torch.manual_seed(spec.seed)

    config = XttsConfig()
    n_vocab = train_vocab(all_demo_sentences(), out / "vocab.json", config.languages, spec.vocab_size)
    dvae_kwargs = TINY_DVAE_KWARGS if spec.dvae == "tiny" else XTTS_DVAE_KWARGS
    n_codes = dvae_kwargs["num_tokens"]
    args = config.model_args
    args.gpt_layers, args.gpt_n_model_channels, args.gpt_n_heads = spec.gpt_layers, spec.gpt_dim, spec.gpt_heads
    args.gpt_number_text_tokens = n_vocab
    args.gpt_num_audio_tokens, args.gpt_start_audio_token, args.gpt_stop_audio_token = n_codes + 2, n_codes, n_codes + 1
    args.gpt_use_perceiver_resampler = True  # v2
    args.gpt_use_masking_gt_prompt_approach = True  # v2
    args.decoder_input_dim = spec.gpt_dim  # HiFiGAN reads the GPT latents
    # The release's inference settings, so samples are made as users of XTTS-v2 make them.
    config.temperature, config.repetition_penalty, config.gpt_cond_len, config.max_ref_len = 0.75, 5.0, 30, 30
    config.gpt_cond_chunk_len = 4

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


# ---------------------------------------------------------------------------------------------
# The GPT: built from a base's config and vocab, weights from any of the three checkpoint kinds


def load_tokenizer(base_dir: str | Path):
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer

    return VoiceBpeTokenizer(vocab_file=str(Path(base_dir) / "vocab.json"))


# coqui's perceiver attention makes a namedtuple class per instance, which cannot be pickled (and
# so cannot reach DDP-spawned processes); the same class defined once, at module level, can.
EfficientAttentionConfig = namedtuple("EfficientAttentionConfig", ["enable_flash", "enable_math", "enable_mem_efficient"])


def make_picklable(module) -> None:
    for sub in module.modules():
        if hasattr(sub, "cpu_config") and hasattr(sub, "cuda_config"):
            sub.config = EfficientAttentionConfig
            sub.cpu_config = EfficientAttentionConfig(*sub.cpu_config)
            if sub.cuda_config is not None:
                sub.cuda_config = EfficientAttentionConfig(*sub.cuda_config)


def build_gpt(config, tokenizer):
    """coqui's `GPT` with the sizes `Xtts.init_models` gives it (text token ids come from vocab.json)."""
    from TTS.tts.layers.xtts.gpt import GPT

    a = config.model_args
    vocab = tokenizer.tokenizer
    gpt = GPT(
        layers=a.gpt_layers, model_dim=a.gpt_n_model_channels, heads=a.gpt_n_heads,
        start_text_token=vocab.token_to_id("[START]"), stop_text_token=vocab.token_to_id("[STOP]"),
        max_text_tokens=a.gpt_max_text_tokens, max_mel_tokens=a.gpt_max_audio_tokens,
        max_prompt_tokens=a.gpt_max_prompt_tokens, number_text_tokens=tokenizer.get_number_tokens(),
        num_audio_tokens=a.gpt_num_audio_tokens, start_audio_token=a.gpt_start_audio_token,
        stop_audio_token=a.gpt_stop_audio_token, use_perceiver_resampler=a.gpt_use_perceiver_resampler,
        code_stride_len=a.gpt_code_stride_len,
    )
    make_picklable(gpt)
    return gpt


def gpt_state_from_checkpoint(path: str | Path) -> tuple[dict, str]:
    """The GPT weights (keys relative to the GPT) of a checkpoint, and which kind it was.

    Kinds: an XTTS release `model.pth` ({"model": {"gpt.*", "hifigan_decoder.*", ...}}), a coqui
    trainer `best_model.pth` ({"model": {"xtts.gpt.*", "dvae.*", ...}, "optimizer": ...}), or one of
    our Lightning checkpoints ({"state_dict": {"gpt.*", ...}}).
    """
    path = Path(path)
    if not path.is_file():
        raise BaseModelError(f"{path}: checkpoint not found (init_from)")
    ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    if "state_dict" in ckpt:
        state, kind, prefix = ckpt["state_dict"], "lightning", "gpt."
    elif "model" in ckpt and any(k.startswith("xtts.gpt.") for k in ckpt["model"]):
        state, kind, prefix = ckpt["model"], "coqui-trainer", "xtts.gpt."
    elif "model" in ckpt:
        state, kind, prefix = ckpt["model"], "xtts-release", "gpt."
    else:
        raise BaseModelError(f"{path}: neither a Lightning checkpoint nor an XTTS model.pth (keys {list(ckpt)[:5]})")
    gpt = {k[len(prefix):]: v for k, v in state.items()
           if k.startswith(prefix) and not k[len(prefix):].startswith("gpt_inference.")}
    if not gpt:
        raise BaseModelError(f"{path}: holds no GPT weights (no key starts with '{prefix}')")
    return gpt, kind


def load_gpt_weights(gpt, state: dict, source: str | Path) -> None:
    """Load strictly; a missing, extra or mis-shaped key fails naming the key and both shapes."""
    check_gpt_state(gpt.state_dict(), state, source)
    gpt.load_state_dict(state, strict=True)


def check_gpt_state(own: dict, state: dict, source: str | Path) -> None:
    """Raise unless `state` has exactly the keys and shapes of `own` (both keyed relative to the GPT)."""
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise BaseModelError(
                f"{source}: {key} has shape {tuple(value.shape)} but the base model's GPT needs "
                f"{tuple(own[key].shape)}; the checkpoint belongs to another base model or vocab"
            )
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise BaseModelError(f"{source}: GPT keys do not match the base model (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
