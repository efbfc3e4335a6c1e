"""`export`: a training checkpoint to the public XTTS-v2 release layout, loadable by coqui-tts as is.

    exported/<run>/ config.json model.pth vocab.json dvae.pth mel_stats.pth [speakers_xtts.pth] origin.json

`model.pth` holds the fine-tuned GPT with the base's HiFiGAN decoder and mel statistics, and no
optimizer state, so it is about the size of the base's model.pth.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..errors import BaseModelError, OutputExistsError
from ..files import publish_dir
from ..model.base import (
    base_fingerprint,
    check_base_dir,
    check_gpt_state,
    check_same_base,
    gpt_state_from_checkpoint,
    load_model_pth,
)

COPIED = ("config.json", "vocab.json", "dvae.pth", "mel_stats.pth")
SPEAKERS = "speakers_xtts.pth"
ORIGIN = "origin.json"  # the run, step and checkpoint exported; coqui-tts ignores the file


def origin_of(ckpt: dict, path: Path) -> dict:
    """Which run and step an export holds, for the pages that compare exports."""
    run = path.parent.name if path.parent.parent.name == "checkpoints" else None
    return {"checkpoint": str(path), "run": run, "step": int(ckpt.get("global_step", 0))}


def read_origin(model_dir: Path) -> dict | None:
    """An export's origin.json, or None (the base model itself, or an export made before it existed)."""
    try:
        return json.loads((Path(model_dir) / ORIGIN).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def base_of_checkpoint(ckpt: dict, path: Path, override: str | Path | None) -> Path:
    if override:
        return check_base_dir(override)
    for candidate in (ckpt.get("base_model"), ckpt.get("hyper_parameters", {}).get("base_model")):
        if candidate and Path(candidate).is_dir():
            return check_base_dir(candidate)
    raise BaseModelError(f"{path}: its base model ({ckpt.get('base_model')}) is not there; pass --base_model DIR")


def export_checkpoint(
    ckpt_path: str | Path,
    out: str | Path,
    base_model: str | Path | None = None,
    speakers: dict[str, list[Path]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the release layout for `ckpt_path` to `out` (all at once: written aside, then renamed)."""
    ckpt_path, final = Path(ckpt_path), Path(out)
    if not ckpt_path.is_file():
        raise BaseModelError(f"--ckpt {ckpt_path}: not found")
    if final.exists() and any(final.iterdir()) and not overwrite:
        raise OutputExistsError(f"{final}: exists; pass --overwrite or choose another --out")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
    if "state_dict" not in ckpt:
        raise BaseModelError(f"{ckpt_path}: not a Lightning checkpoint of a vago_lightning run")
    base = base_of_checkpoint(ckpt, ckpt_path, base_model)
    check_same_base(ckpt, base_fingerprint(base), str(base), source=str(ckpt_path))
    trained, _ = gpt_state_from_checkpoint(ckpt_path, base)  # a LoRA run: its adapters merged in
    state = dict(load_model_pth(base / "model.pth")[0])
    check_gpt_state({k[4:]: v for k, v in state.items() if k.startswith("gpt.")}, trained, ckpt_path)
    for key, value in trained.items():
        state[f"gpt.{key}"] = value.to(state[f"gpt.{key}"].dtype)

    with publish_dir(final) as tmp:
        torch.save({"model": state}, tmp / "model.pth")
        (tmp / ORIGIN).write_text(json.dumps(origin_of(ckpt, ckpt_path), indent=2), encoding="utf-8")
        for name in COPIED + ((SPEAKERS,) if (base / SPEAKERS).is_file() else ()):
            shutil.copy2(base / name, tmp / name)
        if speakers:
            add_speakers(tmp, speakers)
    return final


def add_speakers(model_dir: Path, speakers: dict[str, list[Path]]) -> None:
    """Store named voices in speakers_xtts.pth, so `TTS(...).tts(text, speaker=NAME)` needs no audio."""
    from .synthesis import load_xtts, voice_from_references

    model = load_xtts(model_dir)
    table = torch.load(model_dir / SPEAKERS, weights_only=True) if (model_dir / SPEAKERS).is_file() else {}
    for name, references in speakers.items():
        latents, embedding = voice_from_references(model, references)
        table[name] = {"gpt_cond_latent": latents.cpu(), "speaker_embedding": embedding.cpu()}
    torch.save(table, model_dir / SPEAKERS)
