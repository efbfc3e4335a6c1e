"""Speech from an exported model with coqui-tts's own `Xtts`: references, sentence splitting, wavs.

References are decoded with soundfile (no FFmpeg) and turned into conditioning latents the way
`Xtts.get_conditioning_latents` does it (the speaker embeddings averaged over references, the GPT
latents from the references joined).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import torch

from ..constants import CODE_STRIDE, OUTPUT_RATE, SAMPLE_RATE, SENTENCE_END
from ..data.audio import load_clip
from ..errors import AudioError, BaseModelError, OutputExistsError, UsageError
from ..files import publish_dir
from ..normalise import join_digit_groups
from .settings import DEFAULT_TEMPERATURES, Settings  # noqa: F401 - Settings and its defaults, importable from here too


class Sentence(NamedTuple):
    text: str
    register: str  # "quiz" or "conversation" for the default sentences; "texts" for a --texts file


# Sentences in both registers that are not in the demo training text.
DEFAULT_SENTENCES = [
    Sentence("Jó estét kívánok, kezdődik a mai játék!", "quiz"),
    Sentence("Melyik magyar költő írta a Nemzeti dalt?", "quiz"),
    Sentence("A helyes válasz a C, gratulálok, Ön továbbjutott!", "quiz"),
    Sentence("Most a 250 000 forintos kérdés következik, figyeljen jól.", "quiz"),
    Sentence("Tudja, a televízióban eltöltött évek alatt rengeteget tanultam az emberekről.", "conversation"),
    Sentence("Őszintén szólva sosem gondoltam volna, hogy ennyi ideig csinálom ezt a munkát.", "conversation"),
    Sentence("Hát, ez jó kérdés. Erről még soha senki nem kérdezett.", "conversation"),
]
CODES_PER_SECOND = SAMPLE_RATE / CODE_STRIDE  # 21.5 GPT audio tokens per second of speech
# The default cap on new audio tokens: time for 4 characters a second (a third of a normal pace)
# plus 1.5 s, so a model that never emits its stop token ends soon instead of at 605 tokens.
CAP_CHARS_PER_SECOND, CAP_EXTRA_SECONDS = 4.0, 1.5


def token_cap(text: str, model_limit: int) -> int:
    """The default most audio tokens to generate for `text`."""
    return min(model_limit, math.ceil(CODES_PER_SECOND * (CAP_EXTRA_SECONDS + len(text) / CAP_CHARS_PER_SECOND)))


@contextlib.contextmanager
def token_limit(model, piece: str, max_new_tokens: int | None) -> Iterator[int]:
    """Cap the audio tokens of one generation (yields the cap): coqui's GPT reads its length cap
    from `max_gen_mel_tokens` (passing max_new_tokens beside it makes transformers warn on every
    call), so a model that never emits its stop token ends after time for the text, not at 605."""
    model_limit = model.gpt.max_gen_mel_tokens
    cap = min(model_limit, max_new_tokens or token_cap(piece, model_limit))
    model.gpt.max_gen_mel_tokens = cap
    try:
        yield cap
    finally:
        model.gpt.max_gen_mel_tokens = model_limit


def load_xtts(model_dir: str | Path, device: str = "cpu"):
    """An exported model (or any XTTS-v2 release directory), loaded by coqui-tts strictly."""
    from TTS.tts.models.xtts import Xtts

    from ..model.base import check_base_dir, load_model_pth, load_xtts_config, quiet_transformers

    model_dir = check_base_dir(model_dir, kind="exported model")
    config = load_xtts_config(model_dir)
    # No random init: coqui builds the model twice (here, and again in load_checkpoint) and the strict
    # load replaces every weight (tests/test_after_training.py compares every parameter and buffer).
    with quiet_transformers(), _no_init_weights():
        model = Xtts(config)
        # coqui's own reader rewrites the release's model.pth (pickled config) in place; ours reads
        # both forms with weights_only and leaves every file as it was.
        model._load_checkpoint = lambda path: load_model_pth(path)[0]
        model.load_checkpoint(config, checkpoint_dir=str(model_dir), eval=True, strict=True)
    return model.to(device)


def _no_init_weights():
    """transformers' own context that skips the random initialization of new modules: at the release's
    size `Xtts(config)` spent 6.6 of its 7.8 s drawing random weights (cProfile, 2 cores), and
    `load_checkpoint` builds the model again before loading, strictly, every weight over them."""
    try:
        from transformers.initialization import no_init_weights  # transformers 5
    except ImportError:
        from transformers.modeling_utils import no_init_weights  # transformers 4.57
    return no_init_weights()


def voice_from_references(model, references: list[Path], max_seconds: int = 30):
    """(gpt_cond_latent, speaker_embedding) from reference recordings of the voice."""
    wavs = []
    for path in references:
        try:
            wavs.append(torch.from_numpy(load_clip(Path(path)).wav))
        except AudioError as err:
            raise UsageError(f"--reference {path}: {err}") from None
    return voice_from_waveforms(model, wavs, max_seconds)


@torch.inference_mode()
def voice_from_waveforms(model, wavs: list[torch.Tensor], max_seconds: int = 30):
    """(gpt_cond_latent, speaker_embedding) from waveforms [T] at 22,050 Hz, as coqui's
    `get_conditioning_latents` makes them with the model config's gpt_cond_len and chunk length."""
    audios, embeddings = [], []
    for wav in wavs:
        wav = wav.reshape(1, -1)[:, : SAMPLE_RATE * max_seconds].float().to(model.device)
        embeddings.append(model.get_speaker_embedding(wav, SAMPLE_RATE))
        audios.append(wav)
    cfg = model.config
    latents = model.get_gpt_cond_latents(
        torch.cat(audios, dim=-1), SAMPLE_RATE, length=cfg.gpt_cond_len, chunk_length=cfg.gpt_cond_chunk_len
    )
    return latents, torch.stack(embeddings).mean(dim=0)


@torch.no_grad()
def copy_gpt_weights(gpt, model) -> None:
    """Put a training GPT's weights into an inference `Xtts` (whose extra names, `gpt_inference.*`
    and `gpt.wte`, alias the same modules)."""
    from ..model.lora import merged_state

    own = model.gpt.state_dict()
    state = merged_state(gpt)  # a LoRA-trained GPT's adapters merged in; a fully trained one as it is
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise BaseModelError(f"the training GPT has weights the inference model lacks: {unknown[:3]}")
    model.gpt.load_state_dict({k: v.detach().to(model.device) for k, v in state.items()}, strict=False)


@torch.inference_mode()
def speaker_embedding_of(model, wav: np.ndarray, rate: int) -> torch.Tensor:
    """The speaker embedding (HiFiGAN's speaker encoder, L2-normalized) of a waveform."""
    return model.get_speaker_embedding(torch.from_numpy(wav).float()[None].to(model.device), rate).flatten()


def split_sentences(text: str, limit: int = 224) -> list[str]:
    """Split long text at sentence ends (then at commas, then at spaces) into pieces of <= limit chars."""
    pieces = []
    for sentence in SENTENCE_END.split(text.strip()):
        while len(sentence) > limit:
            comma, space = sentence.rfind(", ", 0, limit), sentence.rfind(" ", 0, limit)
            cut = comma + 1 if comma > 0 else (space if space > 0 else limit)
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    return pieces


@torch.inference_mode()
def speak(model, text: str, voice, settings: Settings) -> tuple[np.ndarray, bool]:
    """One text (split at sentence ends when long) at 24 kHz, pieces joined with 0.2 s of silence;
    and whether a piece ran to its token cap (a model that does not stop: `runaway`)."""
    latents, speaker = voice
    limit = model.tokenizer.char_limits.get(settings.language.split("-")[0], 250)
    out, runaway = [], False
    for piece in split_sentences(join_digit_groups(text), limit):  # 100 000 read as prepare reads it
        torch.manual_seed(settings.seed)
        with token_limit(model, piece, settings.max_new_tokens) as cap:
            result = model.inference(
                piece,
                settings.language,
                latents,
                speaker,
                temperature=settings.temperature,
                top_k=settings.top_k,
                top_p=settings.top_p,
                repetition_penalty=settings.repetition_penalty,
            )
        runaway |= result["gpt_latents"].shape[1] >= cap - 2  # its latents: one per generated code
        out += [
            np.asarray(result["wav"], dtype=np.float32),
            np.zeros(int(0.2 * OUTPUT_RATE), dtype=np.float32),
        ]
    return (np.concatenate(out[:-1]) if out else np.zeros(0, dtype=np.float32)), runaway


def reference_profile(references: list[Path]):
    """The judge's view of the references (`metrics.Reference`): their speaker embedding and, when a
    reference lies in a corpus whose metadata.csv gives its text, their speaking rate."""
    from .. import metrics

    clips = [load_clip(Path(p)) for p in references]
    return metrics.Reference.of([(c.wav, SAMPLE_RATE) for c in clips], [reference_text(Path(p)) for p in references])


def reference_text(path: Path) -> str | None:
    """The transcript of a corpus clip, from the metadata.csv of its corpus: coqui's format names it
    by its path (its text in field 2), LJSpeech by its id (the normalized text in field 3)."""
    for folder in (path.parent, path.parent.parent):
        metadata = folder / "metadata.csv"
        if not metadata.is_file():
            continue
        relative = path.relative_to(folder).as_posix()
        for line in metadata.read_text(encoding="utf-8-sig").splitlines():
            fields = [f.strip() for f in line.split("|")]
            if len(fields) >= 2 and fields[0] == relative:
                return fields[1]
            if len(fields) >= 2 and fields[0] == path.stem:
                return fields[2] if len(fields) > 2 and fields[2] else fields[1]
    return None


def generate(
    model_dir: str | Path,
    references: list[Path],
    texts: list[Sentence | str],
    temperatures: list[float],
    out: str | Path,
    settings: Settings | None = None,
    model=None,
    reference=None,
) -> dict:
    """One wav per text and temperature in `out`, and `out/index.json` describing each with the
    judge's figures (see `metrics.judge`). `out` is replaced as a whole (written aside, then
    renamed), so no wav of an earlier run stays beside the new index; a folder that generate did not
    write is refused. `reference`: the judge's reference profile, when the caller has one."""
    settings = settings or Settings()
    final = Path(out)
    if final.is_dir() and any(final.iterdir()) and not (final / "index.json").is_file():
        raise OutputExistsError(f"--out {final}: exists and holds files generate did not write; choose another --out")
    model = model or load_xtts(model_dir)
    voice = voice_from_references(model, references)
    reference = reference or reference_profile(references)
    sentences = [t if isinstance(t, Sentence) else Sentence(t, "texts") for t in texts]
    with publish_dir(final) as folder:
        entries = [
            _sample(folder, model, voice, reference, i, sentence, temperature, settings)
            for i, sentence in enumerate(sentences)
            for temperature in temperatures
        ]
        index = {
            "model": str(model_dir),
            "references": [str(r) for r in references],
            "reference_speaking_rate": None if reference.rate != reference.rate else round(reference.rate, 3),
            "settings": {k: v for k, v in asdict(settings).items() if k != "temperature"},
            "temperatures": temperatures,
            "sample_rate": OUTPUT_RATE,
            "samples": entries,
        }
        (folder / "index.json").write_text(json.dumps(index, indent=2, ensure_ascii=False), encoding="utf-8")
    return index


def _sample(folder: Path, model, voice, reference, i: int, sentence: Sentence, temperature: float, settings) -> dict:
    from .. import metrics

    start = time.perf_counter()
    wav, runaway = speak(model, sentence.text, voice, Settings(**dict(asdict(settings), temperature=temperature)))
    seconds = time.perf_counter() - start
    name = f"{i:03d}_t{temperature:.2f}.wav"
    sf.write(folder / name, wav, OUTPUT_RATE)
    duration = len(wav) / OUTPUT_RATE
    return {
        "file": name,
        "text": sentence.text,
        "register": sentence.register,
        "temperature": temperature,
        "duration": round(duration, 3),
        "synthesis_seconds": round(seconds, 3),
        "real_time_factor": round(seconds / duration, 3) if duration else None,
        **metrics.judge(wav, OUTPUT_RATE, sentence.text, reference, hit_token_limit=runaway),
    }


def read_texts(path: str | Path | None) -> list[Sentence]:
    """One text per non-empty line of `path`, or the default sentences of both registers."""
    if path is None:
        return list(DEFAULT_SENTENCES)
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--texts {path}: not found; give a UTF-8 file with one text per line")
    texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise UsageError(f"--texts {path}: holds no text")
    return [Sentence(text, "texts") for text in texts]
