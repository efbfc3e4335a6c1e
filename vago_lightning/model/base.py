"""Base models in the public XTTS-v2 release layout: checking, fingerprinting and loading them.

A base model is a directory holding `config.json`, `model.pth` (GPT + HiFiGAN decoder + mel_stats,
as released), `dvae.pth`, `mel_stats.pth` and `vocab.json`: the real release, or one written by
`python -m vago_lightning tiny-base` (vago_lightning/demo/tiny_base.py) to try the pipeline.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
from collections import namedtuple
from pathlib import Path

import torch

from ..errors import BaseModelError
from ..files import sha256_file

RELEASE_FILES = ("config.json", "model.pth", "dvae.pth", "mel_stats.pth", "vocab.json")
RELEASE_HELP = (
    "a base model is the five files of the XTTS-v2 release (config.json model.pth dvae.pth mel_stats.pth "
    "vocab.json, from the Hugging Face repository coqui/XTTS-v2) in one folder, e.g. models/xtts-v2; "
    "to try the pipeline without them, `python -m vago_lightning tiny-base --out models/tiny-xtts` writes a "
    "small random one (it speaks noise)"
)

# The DVAE of the XTTS-v2 release, as coqui's GPTTrainer builds it (sizes are hard-coded there).
XTTS_DVAE_KWARGS = dict(
    channels=80,
    normalization=None,
    positional_dims=1,
    num_tokens=1024,
    codebook_dim=512,
    hidden_dim=512,
    num_resnet_blocks=3,
    kernel_size=3,
    num_layers=2,
    use_transposed_convs=False,
)


EXPORT_HELP = (
    "an exported model is a folder written by `python -m vago_lightning export --ckpt "
    "checkpoints/<run>/best.ckpt --out exported/<run>` (or the XTTS-v2 release itself)"
)


def check_base_dir(base_dir: str | Path, kind: str = "base model") -> Path:
    """Return the directory as a Path, or raise naming the first missing release file. `kind`: "base
    model" (what training starts from) or "exported model" (what export wrote)."""
    base = Path(base_dir)
    help_ = EXPORT_HELP if kind == "exported model" else RELEASE_HELP
    if not base.is_dir():
        raise BaseModelError(f"{base}: {kind} directory not found; {help_}")
    for name in RELEASE_FILES:
        if not (base / name).is_file():
            raise BaseModelError(f"{base / name}: missing; {help_}")
    return base


GPT_ARGS = (
    "gpt_layers",
    "gpt_n_model_channels",
    "gpt_n_heads",
    "gpt_max_audio_tokens",
    "gpt_max_text_tokens",
    "gpt_max_prompt_tokens",
    "gpt_num_audio_tokens",
    "gpt_start_audio_token",
    "gpt_stop_audio_token",
    "gpt_use_perceiver_resampler",
    "gpt_code_stride_len",
    "gpt_number_text_tokens",
)


def base_fingerprint(base_dir: str | Path) -> dict:
    """What training, codes and export depend on: the DVAE, the mel statistics, the vocab and the GPT's
    architecture. model.pth's bytes are left out on purpose: coqui-tts rewrites that file in place on
    first load without changing a weight."""
    base = Path(base_dir)
    stats = tuple((base / n).stat() for n in ("dvae.pth", "mel_stats.pth", "vocab.json", "config.json"))
    return dict(_fingerprint(str(base.resolve()), tuple((s.st_size, s.st_mtime_ns) for s in stats)), path=str(base))


@functools.lru_cache(maxsize=8)
def _fingerprint(base: str, _stamp: tuple) -> dict:
    """Hashed once per process per unchanged base (dvae.pth is 210 MB at full size)."""
    base = Path(base)
    args = json.loads((base / "config.json").read_text(encoding="utf-8")).get("model_args", {})
    gpt = json.dumps({k: args.get(k) for k in GPT_ARGS}, sort_keys=True)
    return {
        "dvae_sha256": sha256_file(base / "dvae.pth"),
        "mel_stats_sha256": sha256_file(base / "mel_stats.pth"),
        "vocab_sha256": sha256_file(base / "vocab.json"),
        "gpt_sha256": hashlib.sha256(gpt.encode()).hexdigest(),
    }


def same_base(a: dict | None, b: dict | None) -> bool:
    """Whether two fingerprints name the same base (paths may differ)."""
    keys = ("dvae_sha256", "mel_stats_sha256", "vocab_sha256", "gpt_sha256")
    return a is not None and b is not None and all(a.get(k) == b.get(k) for k in keys)


# ---------------------------------------------------------------------------------------------
# model.pth in either of its two forms, read without running pickled code

LEGACY_MODULE = "TTS.tts.models.xtts"  # where the release's pickle names XttsArgs and XttsAudioConfig
LEGACY_CLASS_NAMES = ("XttsArgs", "XttsAudioConfig")


def check_same_base(checkpoint: dict, fingerprint: dict, base_model: str, source: str = "the checkpoint") -> None:
    """One line when `checkpoint` was trained on another base model than `fingerprint` describes."""
    theirs = checkpoint.get("base_fingerprint")
    if theirs is not None and not same_base(theirs, fingerprint):
        raise BaseModelError(
            f"{source} was trained on the base model {theirs.get('path')}, which differs from {base_model} "
            f"(DVAE, mel statistics, vocab or GPT size); use the base it was trained on (--model.base_model)"
        )


def config_classes() -> dict[str, type]:
    """The classes of the config object the release pickles into model.pth (its datasets hold one
    BaseDatasetConfig; characters is null)."""
    from TTS.config.shared_configs import BaseDatasetConfig
    from TTS.tts.configs.xtts_config import XttsArgs, XttsAudioConfig, XttsConfig

    return {
        "XttsConfig": XttsConfig,
        "XttsArgs": XttsArgs,
        "XttsAudioConfig": XttsAudioConfig,
        "BaseDatasetConfig": BaseDatasetConfig,
    }


def config_safe_globals() -> list:
    """The weights_only allow-list: exactly the four config classes, two of them also under the old
    module name the release's pickle uses (as coqui-tts's own `_legacy_safe_globals`)."""
    classes = config_classes()
    return [*classes.values(), *((classes[n], f"{LEGACY_MODULE}.{n}") for n in LEGACY_CLASS_NAMES)]


def load_model_pth(path: str | Path, mmap: bool = False) -> tuple[dict, object]:
    """(weights, config) of an XTTS model.pth in either form: the release's (a pickled XttsConfig
    object, classes at their 2023 modules) or coqui-tts's rewrite (the config as a dict). Read with
    `weights_only=True`: a file that pickles anything else is refused, not run."""
    import pickle

    try:
        with torch.serialization.safe_globals(config_safe_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        first = str(err).split("\n")[0][:200]
        raise BaseModelError(f"{path}: holds objects an XTTS model.pth does not ({first}); refused") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise BaseModelError(f"{path}: not an XTTS model.pth (no 'model' weights)")
    return ckpt["model"], ckpt.get("config")


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
        XTTS_DVAE_KWARGS,
        channels=channels,
        num_tokens=num_tokens,
        codebook_dim=codebook_dim,
        hidden_dim=hidden_dim,
        num_resnet_blocks=len(res),
        kernel_size=kernel_size,
        num_layers=len(down),
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
# The GPT: built from a base's config and vocab, weights from any of the three checkpoint kinds


def load_tokenizer(base_dir: str | Path):
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer

    return VoiceBpeTokenizer(vocab_file=str(Path(base_dir) / "vocab.json"))


# coqui's perceiver attention makes a namedtuple class per instance, which cannot be pickled (and
# so cannot reach DDP-spawned processes); the same class defined once, at module level, can.
EfficientAttentionConfig = namedtuple(
    "EfficientAttentionConfig", ["enable_flash", "enable_math", "enable_mem_efficient"]
)


def make_picklable(module) -> None:
    for sub in module.modules():
        if hasattr(sub, "cpu_config") and hasattr(sub, "cuda_config"):
            sub.config = EfficientAttentionConfig
            sub.cpu_config = EfficientAttentionConfig(*sub.cpu_config)
            if sub.cuda_config is not None:
                sub.cuda_config = EfficientAttentionConfig(*sub.cuda_config)


@contextlib.contextmanager
def quiet_transformers():
    """coqui builds its GPT-2 stack from a GPT2Config whose bos/eos ids (50256) lie outside XTTS's
    vocab; they are never used, and transformers warns twice per build. Quiet only while building."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def build_gpt(config, tokenizer):
    """coqui's `GPT` with the sizes `Xtts.init_models` gives it (text token ids come from vocab.json)."""
    from TTS.tts.layers.xtts.gpt import GPT

    a = config.model_args
    vocab = tokenizer.tokenizer
    with quiet_transformers():
        gpt = GPT(
            layers=a.gpt_layers,
            model_dim=a.gpt_n_model_channels,
            heads=a.gpt_n_heads,
            start_text_token=vocab.token_to_id("[START]"),
            stop_text_token=vocab.token_to_id("[STOP]"),
            max_text_tokens=a.gpt_max_text_tokens,
            max_mel_tokens=a.gpt_max_audio_tokens,
            max_prompt_tokens=a.gpt_max_prompt_tokens,
            number_text_tokens=tokenizer.get_number_tokens(),
            num_audio_tokens=a.gpt_num_audio_tokens,
            start_audio_token=a.gpt_start_audio_token,
            stop_audio_token=a.gpt_stop_audio_token,
            use_perceiver_resampler=a.gpt_use_perceiver_resampler,
            code_stride_len=a.gpt_code_stride_len,
        )
    make_picklable(gpt)
    gpt.gpt.config.use_cache = False  # training never reuses past keys and values: no cache to build
    return gpt


def gpt_state_from_checkpoint(path: str | Path, base_model: str | Path | None = None) -> tuple[dict, str]:
    """The GPT weights (keys relative to the GPT) of a checkpoint, and which kind it was.

    Kinds: an XTTS release `model.pth` ({"model": {"gpt.*", "hifigan_decoder.*", ...}}), a coqui
    trainer `best_model.pth` ({"model": {"xtts.gpt.*", "dvae.*", ...}, "optimizer": ...}), one of
    our Lightning checkpoints ({"state_dict": {"gpt.*", ...}}), or one of a LoRA run, which holds the
    adapters alone: its GPT is rebuilt from its base (`base_model` when given) and starting weights,
    with the adapters merged in.
    """
    path = Path(path)
    if not path.is_file():
        raise BaseModelError(f"{path}: checkpoint not found (init_from)")
    if path.suffix == ".ckpt":  # one of our own Lightning checkpoints (Lightning pickles its state)
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    else:  # a downloaded model.pth or best_model.pth: weights and plain data only
        state, config = load_model_pth(path, mmap=True)
        ckpt = {"model": state, "config": config}
    if "state_dict" in ckpt and ckpt.get(LORA_KEY):
        return lora_checkpoint_gpt_state(ckpt, path, base_model), "lightning-lora"
    if "state_dict" in ckpt:
        state, kind, prefix = ckpt["state_dict"], "lightning", "gpt."
    elif "model" in ckpt and any(k.startswith("xtts.gpt.") for k in ckpt["model"]):
        state, kind, prefix = ckpt["model"], "coqui-trainer", "xtts.gpt."
    elif "model" in ckpt:
        state, kind, prefix = ckpt["model"], "xtts-release", "gpt."
    else:
        raise BaseModelError(f"{path}: neither a Lightning checkpoint nor an XTTS model.pth (keys {list(ckpt)[:5]})")
    gpt = {
        k[len(prefix) :]: v
        for k, v in state.items()
        if k.startswith(prefix) and not k[len(prefix) :].startswith("gpt_inference.")
    }
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
        raise BaseModelError(
            f"{source}: GPT keys do not match the base model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


LORA_KEY = "lora"  # a LoRA run's checkpoints: {"settings", "init_from", "start_checksum"}


def starting_gpt(base: Path, init_from: str | Path | None):
    """The GPT a run starts from: the base's, then `init_from`'s weights when given; and the kind of
    `init_from`."""
    gpt = build_gpt(load_xtts_config(base), load_tokenizer(base))
    state, _ = gpt_state_from_checkpoint(base / "model.pth")
    load_gpt_weights(gpt, state, base / "model.pth")
    kind = None
    if init_from:
        state, kind = gpt_state_from_checkpoint(init_from)
        load_gpt_weights(gpt, state, init_from)
    return gpt, kind


def check_lora_start(recorded: dict, checksum: float, source: str | Path) -> None:
    """One line when an adapter would be applied to other weights than it was trained on top of."""
    if abs(recorded["start_checksum"] - checksum) > 1e-9 * max(1.0, abs(checksum)):
        raise BaseModelError(
            f"{source}: its LoRA adapters were trained on top of the weights of "
            f"{recorded.get('init_from') or 'the base model'}, which differ from those loaded now; "
            f"use the same base model and --model.init_from as that run"
        )


def lora_checkpoint_gpt_state(ckpt: dict, path: Path, base_model: str | Path | None) -> dict:
    """The plain GPT weights of a LoRA run's checkpoint: base, starting weights, adapters merged."""
    from .lora import LoraSettings, add_lora, is_adapter_key, merged_state, weights_checksum

    recorded = ckpt[LORA_KEY]
    base = check_base_dir(base_model or ckpt.get("base_model") or ckpt["hyper_parameters"]["base_model"])
    gpt, _ = starting_gpt(base, recorded.get("init_from"))
    check_lora_start(recorded, weights_checksum(gpt.state_dict()), path)
    settings = LoraSettings.of(recorded["settings"])
    settings.base_dtype = "float32"  # merged into fp32 weights, whatever the run held them in
    add_lora(gpt, settings)
    adapters = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("gpt.") and is_adapter_key(k)}
    own = {k for k in gpt.state_dict() if is_adapter_key(k)}
    if set(adapters) != own:
        raise BaseModelError(
            f"{path}: its LoRA adapters do not match its settings (missing {sorted(own - set(adapters))[:3]}, "
            f"unexpected {sorted(set(adapters) - own)[:3]})"
        )
    gpt.load_state_dict(adapters, strict=False)
    return merged_state(gpt)
