"""The speed levers of speech on one model, each measured alone: real-time factor, and whether the
voice stayed the same (the judge's speaker similarity of each lever's audio to fp32's, beside the
similarity of fp32 to itself with another sampling seed, which is what "the same voice" looks like).

    python benchmarks/bench_speech_levers.py --model exported/demo-combined [--voice demo_host]
        [--sentences 7] [--max_new_tokens 60] [--levers coqui-stream coqui-whole ours ours-1-thread int8 bf16]

Each lever loads the model fresh in this process and speaks the default Hungarian sentences of
`generate` one at a time (fp32 unless the lever says otherwise):
  coqui-stream  coqui's `inference_stream` (chunks of 20 tokens: each chunk decodes the sentence so far)
  coqui-whole   coqui's `inference` (the whole sentence, one decode): what coqui's tts-server runs
  ours          `serve`'s path in fp32: each sample decoded once, HiFi-GAN's weight norm folded
  ours-1-thread the same on one thread
  int8          `serve --precision int8`: the GPT-2 blocks' projections in int8
  bf16          `serve --precision bf16`: bf16 autocast (slow where the CPU emulates bf16)
  no-kv-cache   coqui's GPT without its key/value cache (every token recomputes the whole prefix)
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np
import torch

from vago_lightning import metrics
from vago_lightning.constants import OUTPUT_RATE
from vago_lightning.inference.synthesis import DEFAULT_SENTENCES, load_xtts, token_limit
from vago_lightning.serve.engine import Engine, SpeechSettings

LEVERS = ["coqui-stream", "coqui-whole", "ours", "ours-1-thread", "int8", "bf16", "no-kv-cache"]


def speak(lever: str, engine: Engine, text: str, voice: str, settings: SpeechSettings) -> np.ndarray:
    model = engine.model
    latents, speaker = engine.voices[voice]
    if not lever.startswith("coqui"):
        return np.concatenate(list(engine.stream(text, voice, settings, threading.Event())))
    sampling = dict(
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        repetition_penalty=settings.repetition_penalty,
    )
    torch.manual_seed(settings.seed)
    with token_limit(model, text, settings.max_new_tokens), torch.inference_mode():
        if lever == "coqui-whole":
            return np.asarray(model.inference(text, settings.language, latents, speaker, **sampling)["wav"])
        chunks = model.inference_stream(text, settings.language, latents, speaker, stream_chunk_size=20, **sampling)
        return torch.cat(list(chunks)).float().numpy()


def load(lever: str, model_dir: Path) -> Engine:
    precision = {"int8": "int8", "bf16": "bf16"}.get(lever, "fp32")
    engine = Engine(model_dir, precision=precision)
    if lever.startswith("coqui") or lever == "no-kv-cache":  # coqui's model as it loads, weight norm and all
        engine.model = load_xtts(model_dir)
    if lever == "no-kv-cache":
        engine.model.gpt.init_gpt_for_inference(kv_cache=False)
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a model folder in the release layout")
    parser.add_argument("--voice", default="demo_host")
    parser.add_argument("--sentences", type=int, default=len(DEFAULT_SENTENCES))
    parser.add_argument("--max_new_tokens", type=int, default=60, help="cap on audio tokens per sentence")
    parser.add_argument("--levers", nargs="+", default=LEVERS[:6], choices=LEVERS)
    args = parser.parse_args()
    texts = [s.text for s in DEFAULT_SENTENCES[: args.sentences]]
    settings = SpeechSettings(max_new_tokens=args.max_new_tokens)
    cpu = platform.processor() or platform.machine()
    print(f"machine: {os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}; model {args.model}")
    rows, baseline, threads = {}, None, torch.get_num_threads()
    for lever in ["ours", *[x for x in args.levers if x != "ours"]]:
        torch.set_num_threads(1 if lever == "ours-1-thread" else threads)
        engine = load(lever, args.model)
        speak(lever, engine, texts[0], args.voice, settings)  # warm-up
        wavs, seconds = [], 0.0
        for text in texts:
            start = time.perf_counter()
            wavs.append(speak(lever, engine, text, args.voice, settings))
            seconds += time.perf_counter() - start
        embeddings = [metrics.speaker_embedding(w, OUTPUT_RATE) for w in wavs]
        if baseline is None:
            baseline = embeddings
            # fp32 again with another seed: how alike two samplings of the same voice are
            other = SpeechSettings(max_new_tokens=args.max_new_tokens, seed=1)
            again = [metrics.speaker_embedding(speak(lever, engine, t, args.voice, other), OUTPUT_RATE) for t in texts]
            rows["fp32, another seed"] = (
                None,
                None,
                np.nanmean([metrics.cosine(a, b) for a, b in zip(baseline, again)]),
            )
        audio = sum(len(w) for w in wavs) / OUTPUT_RATE
        similarity = np.nanmean([metrics.cosine(a, b) for a, b in zip(baseline, embeddings)])
        rows[lever] = (audio, seconds / audio, similarity)
        print(f"{lever}: {audio:.1f} s of audio, RTF {seconds / audio:.2f}, similarity {similarity:.3f}", flush=True)
        del engine
    torch.set_num_threads(threads)
    whole = rows.get("coqui-whole", (None, None))[1]
    print("| lever | audio | RTF | speed vs coqui-whole | speaker similarity to fp32 |")
    print("|---|---:|---:|---:|---:|")
    for lever, (audio, rtf, similarity) in rows.items():
        if audio is None:
            print(f"| {lever} | – | – | – | {similarity:.3f} |")
            continue
        speed = f"{whole / rtf:.2f}x" if whole else "–"
        print(f"| {lever} | {audio:.1f} s | {rtf:.2f} | {speed} | {similarity:.3f} |")


if __name__ == "__main__":
    main()
