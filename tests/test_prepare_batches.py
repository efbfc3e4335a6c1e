"""`prepare` in batches: every clip gets exactly the DVAE codes it gets alone, and its speaker
embedding within float rounding, whatever its batch, its neighbours' lengths and the threads."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from vago_lightning import metrics
from vago_lightning.data.audio import load_clip
from vago_lightning.data.prepare import PrepareSettings, length_groups, prepare
from vago_lightning.model.base import XTTS_DVAE_KWARGS, load_dvae
from vago_lightning.model.features import dvae_codes, dvae_codes_many, dvae_mel


def _by_length(demo_root: Path, n: int) -> list[str]:
    """n metadata lines of the demo interview corpus, from its shortest clip to its longest."""
    lines = (demo_root / "interview" / "metadata.csv").read_text(encoding="utf-8").splitlines()[1:]
    lines.sort(key=lambda line: sf.info(str(demo_root / "interview" / line.split("|")[0])).frames)
    return [lines[round(i * (len(lines) - 1) / (n - 1))] for i in range(n)]


@pytest.fixture(scope="module")
def spread(demo_corpora, tmp_path_factory):
    """A corpus of 9 real demo clips of 1.3 s to 10 s (the shortest and longest of the corpus, and between)."""
    demo_root, _ = demo_corpora
    root = tmp_path_factory.mktemp("spread") / "spread"
    (root / "wavs").mkdir(parents=True)
    lines = _by_length(demo_root, 9)
    for line in lines:
        shutil.copy(demo_root / "interview" / line.split("|")[0], root / line.split("|")[0])
    (root / "metadata.csv").write_text("\n".join(["audio_file|text|speaker_name", *lines]) + "\n", encoding="utf-8")
    return root


def _wavs(root: Path) -> list[torch.Tensor]:
    lines = (root / "metadata.csv").read_text(encoding="utf-8").splitlines()[1:]
    return [torch.from_numpy(load_clip(root / line.split("|")[0]).wav) for line in lines]


def test_batched_dvae_codes_are_each_clips_own_codes_with_the_release_dvae(spread, tiny_base):
    from TTS.tts.layers.xtts.dvae import DiscreteVAE

    torch.manual_seed(0)
    dvae = DiscreteVAE(**XTTS_DVAE_KWARGS).eval()  # the release's architecture (51.5 M), random weights
    mel = dvae_mel(torch.load(tiny_base / "mel_stats.pth", weights_only=True))
    wavs = _wavs(spread)
    assert len({len(w) for w in wavs}) == len(wavs) and len(wavs[-1]) > 5 * len(wavs[0])
    alone = [dvae_codes(dvae, mel, w[None])[0] for w in wavs]

    # All in one batch: the short clips padded to 5x their length, the worst case for their ends.
    together = dvae_codes_many(dvae, mel, wavs)
    for i, (a, b) in enumerate(zip(alone, together)):
        assert torch.equal(a, b), f"clip {i}: {int((a != b).sum())} of {len(a)} codes changed by batching"

    # What this guards against: the same batch padded naively gives other codes at the clips' ends.
    padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    naive = dvae_codes(dvae, mel, padded)
    assert any(not torch.equal(a, n[: len(a)]) for a, n in zip(alone[:-1], naive))


def test_prepare_in_batches_writes_each_clips_own_codes_and_speaker_similarity(spread, tiny_base, tmp_path):
    out = tmp_path / "shards"
    # 2 threads, batches of 4: a batch of 4, one of 4 and one of 1, each cut in length groups.
    prepare({"spread": spread}, out, PrepareSettings(val_fraction=0.0), tiny_base, workers=2, progress=False, batch=4)
    dvae = load_dvae(tiny_base / "dvae.pth")
    mel = dvae_mel(torch.load(tiny_base / "mel_stats.pth", weights_only=True))
    samples = {}
    for shard in sorted((out / "spread").glob("train-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, kind = member.name.split(".", 1)
                samples.setdefault(key, {})[kind] = tar.extractfile(member).read()
    assert len(samples) == 9
    similarities, wavs = [], []
    for key, sample in sorted(samples.items()):
        meta = json.loads(sample["json"])
        wav = load_clip(Path(meta["source"])).wav
        alone = dvae_codes(dvae, mel, torch.from_numpy(wav)[None])[0].numpy()
        written = np.load(io.BytesIO(sample["codes.npy"]))
        assert np.array_equal(written, alone), f"{key}: {int((written != alone).sum())} codes changed"
        similarities.append(meta["speaker_similarity"])
        wavs.append(wav)

    # Speaker embeddings: resemblyzer's own, one clip at a time (its librosa mel), against one encoder
    # pass for all (the mel in torch).
    encoder, normalize_volume = metrics._model("encoder")
    one_by_one = [
        encoder.embed_utterance(normalize_volume(metrics.to_16k(w, 22050), -30, increase_only=True)) for w in wavs
    ]
    batched = metrics.speaker_embeddings(wavs, 22050)
    for a, b in zip(one_by_one, batched):
        np.testing.assert_allclose(a, b, atol=1e-5)
    expected, _ = metrics.speaker_outliers(one_by_one)
    np.testing.assert_allclose(similarities, expected, atol=1.5e-4)  # written rounded to 4 places


def test_length_groups_pad_little_and_cover_every_clip_once():
    lengths = [100, 5000, 110, 4800, 105, 300, 5100, 120, 2000]
    groups = length_groups(lengths, most=3, slack=0.15)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        assert len(g) <= 3 and len(g) * max(lengths[i] for i in g) <= 1.15 * sum(lengths[i] for i in g)
    expected = [[100, 105, 110], [120], [300], [2000], [4800, 5000, 5100]]  # 120 alone: the first group is full
    assert [sorted(lengths[i] for i in g) for g in groups] == expected


def test_a_gpu_asked_for_where_there_is_none_is_one_line(tmp_path, capsys):
    from vago_lightning.__main__ import main

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    (tmp_path / "c").mkdir()
    assert main(["prepare", "--corpus", f"c={tmp_path / 'c'}", "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA GPU is visible here" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
