"""Speech at the speed of the hardware (issue 24): streamed decoding does each sample once and gives
the samples of one whole-sentence decode; the precision levers keep the model's answer."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F

from vago_lightning.errors import UsageError
from vago_lightning.inference.precision import quantize_gpt_int8, remove_weight_norm, resolve_precision
from vago_lightning.inference.streaming import CONTEXT_FRAMES, StreamingDecoder, stream_sentence
from vago_lightning.inference.synthesis import load_xtts, token_limit


@pytest.fixture(scope="module")
def model(exported):
    return load_xtts(exported)


def whole_decode(hifigan, latents, speaker, speed):
    """coqui's whole-sentence path: the speed interpolation, then `HifiDecoder.forward`."""
    x = latents[None]
    if speed != 1.0:
        x = F.interpolate(x.transpose(1, 2), scale_factor=1.0 / speed, mode="linear").transpose(1, 2)
    return hifigan(x, g=speaker).reshape(-1)


@pytest.mark.parametrize(
    ("speed", "tokens", "chunk"), [(1.0, 41, 20), (1.0, 41, 1), (1.0, 4, 20), (1.3, 30, 7), (0.5, 23, 6)]
)
def test_streamed_samples_are_those_of_one_whole_decode(model, speed, tokens, chunk):
    hifigan = model.hifigan_decoder
    torch.manual_seed(tokens)
    latents = torch.randn(tokens, model.gpt.model_dim)
    speaker = torch.randn(1, 512, 1)
    frames = []
    handle = hifigan.waveform_decoder.register_forward_hook(lambda m, args, out: frames.append(args[0].shape[-1]))
    try:
        with torch.inference_mode():
            whole = whole_decode(hifigan, latents, speaker, speed)
            whole_frames, frames[:] = frames[0], []
            decoder = StreamingDecoder(hifigan, speaker, 1.0 / speed)
            parts = [decoder.push(latents[i : i + chunk]) for i in range(0, tokens, chunk)] + [decoder.finish()]
    finally:
        handle.remove()
    streamed = torch.cat(parts)
    assert streamed.shape == whole.shape
    assert (streamed - whole).abs().max() < 1e-5
    # Each frame once, plus context at the window edges (coqui's stream decodes every prefix again).
    assert sum(frames) <= whole_frames + 2 * CONTEXT_FRAMES * len(frames)


def test_a_streamed_sentence_is_coquis_whole_sentence_decoded_once(model):
    """Same seed, same sampling: our stream (chunks of 3 tokens) equals coqui's `inference_stream` run
    as one chunk (one decode of the whole sentence, no cross-fades)."""
    latents, speaker = next(iter(model.speaker_manager.speakers.values())).values()
    text, settings = "Jó estét kívánok, kezdődik a játék!", dict(temperature=0.65, top_k=50, top_p=0.85)
    with token_limit(model, text, 14):
        torch.manual_seed(3)
        ours = list(stream_sentence(model, text, "hu", latents, speaker, 3, repetition_penalty=5.0, **settings))
        torch.manual_seed(3)
        coqui = list(
            model.inference_stream(
                text, "hu", latents, speaker, stream_chunk_size=10**6, repetition_penalty=5.0, **settings
            )
        )
    assert len(coqui) == 1 and len(ours) > 2  # it streamed
    ours, coqui = torch.cat(ours), coqui[0]
    assert ours.shape == coqui.shape
    assert (ours - coqui).abs().max() < 1e-5


def test_folding_weight_norm_keeps_every_sample(exported):
    model = load_xtts(exported)
    decoder = model.hifigan_decoder
    latents, speaker = torch.randn(1, 9, model.gpt.model_dim), torch.randn(1, 512, 1)
    with torch.inference_mode():
        before = decoder(latents, g=speaker)
    assert remove_weight_norm(decoder.waveform_decoder) > 50
    with torch.inference_mode():
        after = decoder(latents, g=speaker)
    assert (before - after).abs().max() < 1e-6
    assert remove_weight_norm(decoder.waveform_decoder) == 0  # nothing left to fold


def test_int8_gpt_blocks_keep_the_gpts_answer(exported):
    model = load_xtts(exported)
    gpt2 = model.gpt.gpt
    x = torch.randn(1, 40, model.gpt.model_dim)
    with torch.inference_mode():
        before = gpt2(inputs_embeds=x).last_hidden_state
    assert quantize_gpt_int8(gpt2) == 4 * len(gpt2.h)  # attention in/out, MLP in/out per block
    with torch.inference_mode():
        after = gpt2(inputs_embeds=x).last_hidden_state
    assert F.cosine_similarity(before.flatten(), after.flatten(), dim=0) > 0.999
    latents, speaker = next(iter(model.speaker_manager.speakers.values())).values()
    with token_limit(model, "Jó estét!", 8):
        audio = torch.cat(list(stream_sentence(model, "Jó estét!", "hu", latents, speaker, chunk_tokens=4)))
    assert audio.numel() > 0 and torch.isfinite(audio).all()


def test_precision_choices():
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("auto", "cpu") in ("int8", "bf16")
    with pytest.raises(UsageError, match="int8 kernels are for CPUs"):
        resolve_precision("int8", "cuda")
    with pytest.raises(UsageError, match="--precision fp8: choose one of auto, fp32, bf16, int8"):
        resolve_precision("fp8", "cpu")


def test_the_engine_streams_in_int8_and_stops_when_asked(exported):
    from vago_lightning.serve.engine import Engine, SpeechSettings

    engine = Engine(exported, precision="int8")
    assert engine.precision == "int8"
    stop = threading.Event()
    chunks = []
    for chunk in engine.stream(
        "Jó estét! Hát, ez jó kérdés.", "demo_host", SpeechSettings(max_new_tokens=12, stream_chunk_size=3), stop
    ):
        chunks.append(chunk)
        stop.set()
    assert len(chunks) == 1
