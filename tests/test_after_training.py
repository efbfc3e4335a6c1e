"""After training: export loaded by coqui-tts, generate, compare in a real browser, audio in TensorBoard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import lightning as L
import pytest
import soundfile as sf
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from vago_lightning.__main__ import main
from vago_lightning.inference.synthesis import load_xtts, split_sentences
from vago_lightning.model.base import RELEASE_FILES
from vago_lightning.model.batching import Collate
from vago_lightning.model.module import XttsGPTModule
from vago_lightning.training.callbacks import SampleAudio

from helpers import corpus_samples


def test_export_writes_the_release_layout_with_the_trained_gpt(exported, trained_ckpt, tiny_base):
    assert sorted(p.name for p in exported.iterdir()) == sorted(RELEASE_FILES + ("speakers_xtts.pth", "origin.json"))
    base_size = (tiny_base / "model.pth").stat().st_size
    assert abs((exported / "model.pth").stat().st_size - base_size) < 0.01 * base_size  # no optimizer state
    state = torch.load(exported / "model.pth", weights_only=True)["model"]
    trained = torch.load(trained_ckpt, weights_only=False)["state_dict"]
    base = torch.load(tiny_base / "model.pth", weights_only=True)["model"]
    assert torch.equal(state["gpt.mel_head.weight"], trained["gpt.mel_head.weight"])
    assert not torch.equal(state["gpt.mel_head.weight"], base["gpt.mel_head.weight"])  # it did train
    hifigan = [k for k in base if k.startswith("hifigan_decoder.")]
    assert hifigan and all(torch.equal(state[k], base[k]) for k in hifigan)


def test_coqui_loads_the_export_unchanged_and_speaks(exported, demo_corpora):
    root, _ = demo_corpora
    model = load_xtts(exported)  # Xtts.load_checkpoint, strict=True
    wav, sr = sf.read(root / "quiz" / "wavs" / "quiz_0002.wav", dtype="float32")
    audio = torch.from_numpy(wav)[None]
    out = model.inference(
        "Melyik folyó szeli ketté Budapestet?",
        "hu",
        model.get_gpt_cond_latents(audio, sr),
        model.get_speaker_embedding(audio, sr),
        max_new_tokens=40,
    )
    assert len(out["wav"]) > 0 and torch.isfinite(torch.as_tensor(out["wav"])).all()


def test_the_tts_api_uses_the_export_and_its_stored_voice(exported, tmp_path):
    from TTS.api import TTS

    tts = TTS(model_path=str(exported), config_path=str(exported / "config.json"))
    assert tts.speakers == ["demo_host"]
    tts.tts_to_file(
        text="Jó estét kívánok!",
        speaker="demo_host",
        language="hu",
        file_path=str(tmp_path / "api.wav"),
        max_new_tokens=40,
    )
    info = sf.info(tmp_path / "api.wav")
    assert info.samplerate == 24000 and info.frames > 0


def test_the_tts_api_with_speaker_wav_on_an_export(exported, demo_corpora, tmp_path):
    """coqui's most common call reads the reference through torchaudio/torchcodec, which needs the
    FFmpeg libraries (make install adds Debian's ffmpeg)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("FFmpeg not installed (make install adds it as root; Windows: see README)")
    from TTS.api import TTS

    reference = demo_corpora[0] / "quiz" / "wavs" / "quiz_0001.wav"
    tts = TTS(model_path=str(exported), config_path=str(exported / "config.json"))
    tts.tts_to_file(
        text="Jó estét kívánok!",
        speaker_wav=str(reference),
        language="hu",
        file_path=str(tmp_path / "wav.wav"),
        max_new_tokens=40,
    )
    assert sf.info(tmp_path / "wav.wav").frames > 0


def test_export_refuses_to_overwrite_and_names_a_missing_base(exported, trained_ckpt, tmp_path, capsys):
    assert main(["export", "--ckpt", str(trained_ckpt), "--out", str(exported)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(
            [
                "export",
                "--ckpt",
                str(trained_ckpt),
                "--out",
                str(tmp_path / "x"),
                "--base-model",
                str(tmp_path / "nowhere"),
            ]
        )
        == 2
    )
    assert "nowhere" in capsys.readouterr().err


def test_split_sentences():
    text = "Első mondat. Második mondat! " + "Hosszú, " * 60 + "vége."
    pieces = split_sentences(text, limit=100)
    assert pieces[:2] == ["Első mondat.", "Második mondat!"]
    assert all(len(p) <= 100 for p in pieces) and " ".join(pieces).replace("  ", " ") == text.strip()


@pytest.mark.slow  # ~70 s on a 2-core AVX2 CPU (generation and the judge)
def test_generate_writes_one_wav_per_sentence_and_temperature_and_an_index(exported, demo_corpora, tmp_path):
    root, _ = demo_corpora
    texts = tmp_path / "texts.txt"
    long_text = "Ez egy hosszú szöveg. " * 14
    texts.write_text(f"Jó estét kívánok!\n\n{long_text}\n", encoding="utf-8")
    out = tmp_path / "samples"
    assert (
        main(
            [
                "generate",
                "--model",
                str(exported),
                "--reference",
                str(root / "quiz" / "wavs" / "quiz_0001.wav"),
                "--texts",
                str(texts),
                "--temperature",
                "0.55",
                "0.75",
                "--max-new-tokens",
                "30",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    index = json.loads((out / "index.json").read_text())
    assert [(s["file"], s["temperature"]) for s in index["samples"]] == [
        ("000_t0.55.wav", 0.55),
        ("000_t0.75.wav", 0.75),
        ("001_t0.55.wav", 0.55),
        ("001_t0.75.wav", 0.75),
    ]
    for s in index["samples"]:
        info = sf.info(out / s["file"])
        assert info.samplerate == 24000 and abs(info.frames / 24000 - s["duration"]) < 1e-2
        assert s["real_time_factor"] > 0 and s["text"]
    # The long text (300+ characters) was spoken in pieces: longer than any single short line.
    assert index["samples"][2]["duration"] > index["samples"][0]["duration"]
    assert "temperature" not in index["settings"] and index["temperatures"] == [0.55, 0.75]

    # Again into the same folder with fewer temperatures: no wav of the first run stays behind.
    reference = str(root / "quiz" / "wavs" / "quiz_0001.wav")
    args = ["generate", "--model", str(exported), "--reference", reference, "--texts", str(texts)]
    assert main([*args, "--temperature", "0.65", "--max_new_tokens", "10", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["000_t0.65.wav", "001_t0.65.wav", "index.json"]
    # A folder generate did not write is refused, not emptied.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert main([*args, "--out", str(tmp_path / "mine")]) == 2
    assert (tmp_path / "mine" / "notes.txt").is_file()


def test_bad_generate_input_is_one_line(exported, tmp_path, capsys):
    out = str(tmp_path / "x")
    assert main(["generate", "--model", str(exported), "--reference", "nope.wav", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: --reference nope.wav: missing_file")
    assert main(["generate", "--model", str(tmp_path / "none"), "--reference", "nope.wav", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "exported model directory not found" in err and "export --ckpt" in err


def test_compare_page_renders_in_a_headless_browser(exported, demo_corpora, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (make test installs it)")
    root, _ = demo_corpora
    texts = tmp_path / "texts.txt"
    texts.write_text("Jó estét kívánok!\nHát, ez jó kérdés.\n", encoding="utf-8")
    out = tmp_path / "report"
    assert (
        main(
            [
                "compare",
                "--model",
                f"A={exported}",
                "--model",
                f"B={exported}",
                "--reference",
                str(root / "quiz" / "wavs" / "quiz_0001.wav"),
                "--texts",
                str(texts),
                "--temperature",
                "0.65",
                "--max-new-tokens",
                "20",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    for m in report["models"].values():
        assert m["duration"] > 0 and m["count"] == 2 and set(m["registers"]) == {"texts"}
        for s in m["samples"]:
            # The tiny random model speaks noise: the judge says so, and its similarity stays low.
            assert "no_speech" in s["flags"] and (s["speaker_similarity"] is None or s["speaker_similarity"] < 0.7)
            assert s["speech_ratio"] is not None and s["xtts_encoder_similarity"] is not None
        assert m["no_speech"] == 2 and m["speaker_similarity"] is None  # nothing to average
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            (out / "index.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert dom.count("<audio") == 2 * 2 + 1  # a player per model for each sentence and temperature, and the reference
    figures = re.search(r'<table id="figures">(.*?)</table>', dom, re.S).group(1)
    # header + per model: all samples and one register ("texts")
    assert figures.count("<tr>") == 1 + 2 * 2 and "speaker similarity" in figures
    assert dom.count("no speech: similarity means nothing") == 4 and 'id="reference"' in dom
    assert 'id="checklist"' in dom and "Voice consistency" in dom
    assert "data:audio/wav;base64," in dom  # self-contained: the audio is in the page


def test_sample_audio_is_logged_to_tensorboard(tiny_base, demo_corpora, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, _ = demo_corpora
    module = XttsGPTModule(base_model=str(tiny_base), lr=3e-4)
    samples = corpus_samples(root / "quiz", module.tokenizer, 6)
    train = DataLoader(samples, batch_size=3, collate_fn=Collate(train=True, seed=0))
    val = DataLoader(samples[:3], batch_size=3, collate_fn=Collate(train=False))
    callback = SampleAudio(every_n_validations=2, max_new_tokens=20, sentences={"quiz": "Jó estét!"})
    trainer = L.Trainer(
        max_steps=4,
        val_check_interval=1,
        accelerator="cpu",
        enable_progress_bar=False,
        logger=TensorBoardLogger(tmp_path, name="run", version=""),
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        check_val_every_n_epoch=None,
        callbacks=[callback],
    )
    trainer.fit(module, train, val)
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert "samples/quiz" in events.Tags()["audio"]
    assert [e.step for e in events.Audio("samples/quiz")] == [2, 4]  # every second validation
    assert {"samples/speaker_similarity/quiz", "samples/speech_ratio/quiz"} <= set(events.Tags()["scalars"])
    assert [e.value for e in events.Scalars("samples/speech_ratio/quiz")] == [0.0, 0.0]  # noise, said so


def test_the_compare_conclusion_reads_plainly():
    from vago_lightning.inference.compare import conclusion, describe_model

    def model(similarity, no_speech=0, runaway=0):
        return {"speaker_similarity": similarity, "no_speech": no_speech, "count": 21, "runaway": runaway}

    both = {"milliomos": model(0.81), "combined": model(0.874, no_speech=2)}
    text = conclusion(both)
    assert text.startswith("combined sounds most like the reference speaker (similarity 0.874, milliomos 0.810).")
    assert "Samples without speech: combined (2 of 21)." in text and text.endswith("tone, energy or pacing.")
    assert conclusion({"a": model(None, 21), "b": model(None, 21, 3)}).startswith("No model produced speech")
    origin = {"checkpoint": "checkpoints/demo-quiz/best.ckpt", "run": "demo-quiz", "step": 108}
    shown = describe_model("milliomos", {"path": "exported/demo-quiz", "origin": origin})
    assert shown == "milliomos: exported/demo-quiz, run demo-quiz at step 108"


def test_an_export_loads_without_random_init_into_the_same_model(exported):
    # load_xtts skips the random init that the strict load overwrites: every parameter and buffer is
    # still the export's (one left to the skipped init would hold whatever the memory held).
    from TTS.tts.models.xtts import Xtts

    from vago_lightning.model.base import load_model_pth, load_xtts_config, quiet_transformers

    config = load_xtts_config(exported)
    with quiet_transformers():
        reference = Xtts(config)
        reference._load_checkpoint = lambda path: load_model_pth(path)[0]
        reference.load_checkpoint(config, checkpoint_dir=str(exported), eval=True, strict=True)
    loaded = load_xtts(exported)
    ours = dict([*loaded.named_parameters(), *loaded.named_buffers()])
    theirs = dict([*reference.named_parameters(), *reference.named_buffers()])
    assert ours.keys() == theirs.keys() and len(ours) > 100
    assert [name for name in ours if not torch.equal(ours[name], theirs[name])] == []
