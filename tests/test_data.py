"""The DataModule: planned epochs (every sample once, equal batches per rank), bucketing, validation."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch

from vago_lightning.data.datamodule import PlannedShardDataset, ShardDataModule
from vago_lightning.data.plan import expand_weights, plan_epoch
from vago_lightning.demo.tiny_base import TinyBaseSpec, write_tiny_base
from vago_lightning.errors import DataError
from vago_lightning.training.cli import cli_main

REPO = Path(__file__).resolve().parent.parent
CONFIGS = ["finetune.yaml", "configs/demo.yaml", "configs/demo-quiz.yaml"]


def _samples(n, corpus="c", shard_size=None):
    """n index entries of one corpus, in shards of `shard_size` (one shard when None)."""
    return [
        {
            "key": f"k{i:05d}",
            "corpus": corpus,
            "duration": 1.0 + (i * 7919 % 97) / 10,
            "shard": f"s{i // shard_size:04d}" if shard_size else "s",
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("n,batch,world", [(306, 3, 1), (307, 3, 2), (305, 3, 3), (100, 4, 2), (7, 3, 2)])
def test_plan_sees_every_sample_once_with_equal_batches_per_rank(n, batch, world):
    samples = _samples(n)
    plan = plan_epoch(samples, batch, world, seed=0, epoch=0)
    assert len(plan) == world and len({len(batches) for batches in plan}) == 1
    keys = [s["key"] for batches in plan for b in batches for s in b]
    assert sorted(keys) == sorted(s["key"] for s in samples)
    sizes = [len(b) for batches in plan for b in batches]
    assert max(sizes) <= batch and max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    if world == 1:
        assert len(plan[0]) == -(-n // batch)  # 306 clips at batch 3: 102 steps


@pytest.mark.parametrize("n,batch,world,lanes,window", [(306, 3, 1, 2, 1), (1000, 3, 2, 2, 2), (913, 4, 3, 3, 8)])
def test_plan_in_shard_windows_keeps_every_guarantee(n, batch, world, lanes, window):
    samples = _samples(n * 2 // 3, "quiz", 64) + _samples(n - n * 2 // 3, "interview", 64)
    plan = plan_epoch(samples, batch, world, seed=0, epoch=0, lanes=lanes, window_shards=window)
    assert len({len(batches) for batches in plan}) == 1
    keys = [(s["corpus"], s["key"]) for batches in plan for b in batches for s in b]
    assert sorted(keys) == sorted((s["corpus"], s["key"]) for s in samples)
    sizes = [len(b) for batches in plan for b in batches]
    assert max(sizes) <= batch and max(sizes) - min(sizes) <= 1
    # Each lane (every `lanes`-th batch of a rank) draws on a few shards at a time, not on all of them.
    for batches in plan:
        for lane in range(lanes):
            shards = [{(s["corpus"], s["shard"]) for s in b} for b in batches[lane::lanes]]
            assert max(len(set().union(*shards[i : i + 8])) for i in range(len(shards))) <= window + 2


def test_plan_is_deterministic_per_epoch_and_reshuffles_across_epochs():
    samples = _samples(120)
    keys = lambda plan: [[s["key"] for s in b] for b in plan[0]]  # noqa: E731
    assert keys(plan_epoch(samples, 3, 1, 0, 0)) == keys(plan_epoch(samples, 3, 1, 0, 0))
    assert keys(plan_epoch(samples, 3, 1, 0, 0)) != keys(plan_epoch(samples, 3, 1, 0, 1))
    assert keys(plan_epoch(samples, 3, 1, 0, 0)) != keys(plan_epoch(samples, 3, 1, 1, 0))


def test_bucketing_cuts_padding():
    samples = _samples(300)

    def padding(plan):
        return sum(max(s["duration"] for s in b) * len(b) - sum(s["duration"] for s in b) for b in plan[0])

    bucketed = padding(plan_epoch(samples, 3, 1, 0, 0, pool_batches=16))
    plain = padding(plan_epoch(samples, 3, 1, 0, 0, pool_batches=1))
    assert bucketed < plain / 3


def test_corpus_weights_repeat_or_subsample():
    by_corpus = {"quiz": _samples(10, "quiz"), "interview": _samples(20, "interview")}
    out = expand_weights(by_corpus, {"quiz": 2.0, "interview": 0.5}, seed=0, epoch=0)
    counts = Counter(s["corpus"] for s in out)
    assert counts == {"quiz": 20, "interview": 10}
    assert Counter(s["key"] for s in out if s["corpus"] == "quiz") == Counter({s["key"]: 2 for s in by_corpus["quiz"]})


def _datamodule(demo_shards, tiny_base, **kwargs):
    dm = ShardDataModule(shards_dir=str(demo_shards), base_model=str(tiny_base), **kwargs)
    dm.setup("fit")
    return dm


def test_train_loader_streams_every_train_sample_once_per_epoch(demo_shards, tiny_base):
    dm = _datamodule(demo_shards, tiny_base, num_workers=2)
    manifest = json.loads((demo_shards / "manifest.json").read_text())
    train_keys = {e["key"] for c in manifest["corpora"].values() for e in c["splits"]["train"]["index"]}
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == -(-len(train_keys) // 3)
    seen = [k for b in batches for k in b.key]
    assert len(seen) == len(set(seen)) and set(seen) == train_keys
    first = batches[0]
    assert first.codes.dtype == torch.long and first.cond_idxs is not None
    assert first.wav.shape[0] == first.text.shape[0] <= 3
    # The order follows the plan (workers interleaved), and the next epoch has another plan.
    plan = [[s["key"] for s in b] for b in dm.train_dataloader().dataset.batches_fn(0, loader.lanes)]
    assert [b.key for b in batches] == plan
    assert [s["key"] for s in dm.train_dataloader().dataset.batches_fn(1, loader.lanes)[0]] != plan[0]


def test_validation_is_fixed_and_per_corpus(demo_shards, tiny_base):
    dm = _datamodule(demo_shards, tiny_base, num_workers=2)
    first = list(dm.val_dataloader())
    second = list(dm.val_dataloader())
    assert [b.key for b in first] == [b.key for b in second]
    assert all(len(set(b.corpus)) == 1 for b in first)
    assert {c for b in first for c in b.corpus} == {"quiz", "interview"}
    assert all(b.cond_idxs is None for b in first)
    for a, b in zip(first, second):
        assert torch.equal(a.cond_wav, b.cond_wav)


def test_refuses_codes_from_another_dvae(demo_shards, tmp_path):
    other = write_tiny_base(tmp_path / "other", TinyBaseSpec(seed=3))
    with pytest.raises(DataError) as err:
        _datamodule(demo_shards, other)
    message = str(err.value)
    assert "dvae.pth" in message and str(other) in message and "--base_model" in message


def test_unknown_corpus_and_language_mismatch_are_named(demo_shards, tiny_base):
    with pytest.raises(DataError, match="no corpus 'milliomos'"):
        _datamodule(demo_shards, tiny_base, corpora=["milliomos"])
    with pytest.raises(DataError, match="prepared for language 'hu'"):
        _datamodule(demo_shards, tiny_base, language="en")
    with pytest.raises(DataError, match="manifest.json: not found"):
        ShardDataModule(shards_dir=str(demo_shards / "nowhere"), base_model=str(tiny_base)).setup("fit")


def test_shards_are_read_through_urls_too(demo_shards, tiny_base):
    """webdataset opens the shards: a URL prefix (file://) or a `pipe:` command works as well as a path."""
    dm = _datamodule(demo_shards, tiny_base, num_workers=0)
    expected = [b.key for b in dm.val_dataloader()]
    # A command with the path in the middle, as `pipe:aws s3 cp s3://bucket/data_shards/{} -` has it.
    for prefix in (demo_shards.as_uri(), f"pipe:cat {demo_shards}", f"pipe:dd if={demo_shards}/{{}} status=none"):
        by_url = ShardDataModule(shards_dir=prefix, base_model=str(tiny_base), num_workers=0)
        by_url.setup("fit")
        assert [b.key for b in by_url.val_dataloader()] == expected, prefix


def test_an_address_that_cannot_be_read_is_one_line(demo_shards, tiny_base):
    # Found by hand: a mistyped address gave webdataset's OSError traceback with the whole Popen call.
    for prefix, status in ((f"pipe:cat {demo_shards}-typo/{{}}", 1), ("http://127.0.0.1:9/data_shards/", 7)):
        dm = ShardDataModule(shards_dir=prefix, base_model=str(tiny_base), num_workers=0)
        with pytest.raises(DataError, match=f"manifest.json: could not be read .*status {status}.*--data.shards_dir"):
            dm.setup("fit")


@contextlib.contextmanager
def _serving(folder):
    """`folder` over HTTP on a free local port (Python's http.server); yields (URL, paths requested)."""
    requested = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, format, *args):
            requested.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", requested
    finally:
        server.shutdown()
        server.server_close()


def test_trains_from_shards_on_a_web_server(tiny_base, demo_shards, tmp_path, monkeypatch):
    """The manifest and the shards come from http://127.0.0.1:<port>/ (any object store behind a URL
    works the same way), read by a DataLoader worker."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["train.py"])
    with _serving(demo_shards) as (url, requested):
        cli = cli_main(
            [
                "fit",
                *[arg for name in CONFIGS for arg in ("--config", str(REPO / name))],
                f"--model.base_model={tiny_base}",
                f"--data.shards_dir={url}",
                "--data.num_workers=1",
                "--trainer.max_steps=3",
                "--trainer.val_check_interval=3",
            ]
        )
    assert cli.trainer.global_step == 3
    assert "/manifest.json" in requested
    assert any(p.startswith("/quiz/train-") for p in requested) and any(p.startswith("/quiz/val-") for p in requested)


def test_corpus_weights_through_the_loader(demo_shards, tiny_base):
    dm = _datamodule(demo_shards, tiny_base, num_workers=0, corpora=["quiz"], corpus_weights={"quiz": 2.0})
    loader = dm.train_dataloader()
    keys = [k for b in loader for k in b.key]
    counts = Counter(keys)
    assert len(counts) == 80 and set(counts.values()) == {2}  # every quiz clip twice per epoch
    # Each of the 2 quiz train shards is read once per repeat, no more.
    assert loader.dataset.shard_reads == 2 * 2


class FakeShards(PlannedShardDataset):
    """The real dataset's reading logic on shards that exist only in the index (no audio)."""

    def __init__(self, samples, plan_fn):
        super().__init__("nowhere", plan_fn, 0, None, "hu", train=True, seed=0)
        self.shards = {}
        for s in samples:
            self.shards.setdefault((s["corpus"], s["shard"]), []).append(s["key"])

    def read_shard(self, corpus, shard):
        return [{"__key__": key} for key in self.shards[(corpus, shard)]]


def _rank_plan(by_corpus, weights, rank, epoch, lanes):
    return plan_epoch(expand_weights(by_corpus, weights, 0, epoch), 3, 2, 0, epoch, lanes, window_shards=8)[rank]


@pytest.mark.parametrize("skip", [0, 7])
def test_a_worker_holds_one_window_and_reads_each_shard_once_at_any_corpus_size(skip):
    """300 to 30,000 clips, two corpora weighted 2.0 and 0.5, 2 ranks x 2 workers: what a worker holds
    stays under one window (8 shards of 64) plus a batch, and shard reads stay about one per unit of
    the epoch (a shard, or its repeat), also when the epoch resumes mid-way."""
    peaks = []
    for n in (300, 3_000, 30_000):
        by_corpus = {"quiz": _samples(n // 3, "quiz", 64), "interview": _samples(n - n // 3, "interview", 64)}
        weights = {"quiz": 2.0, "interview": 0.5}
        epoch = expand_weights(by_corpus, weights, seed=0, epoch=0)
        units = len({(s["corpus"], s["shard"], c) for s in by_corpus["quiz"] for c in (0, 1)}) + len(
            {(s["corpus"], s["shard"]) for s in epoch if s["corpus"] == "interview"}
        )
        seen, reads, peak = [], 0, 0
        for rank in (0, 1):
            plan_fn = functools.partial(_rank_plan, by_corpus, weights, rank)
            for worker in (0, 1):
                data = FakeShards(by_corpus["quiz"] + by_corpus["interview"], plan_fn)
                data.lanes, data.skip = 2, skip
                seen += [
                    (e["corpus"], e["key"], r["__key__"])
                    for b, raw in data.raw_batches(worker, 2)
                    for e, r in zip(b, raw)
                ]
                reads += data.shard_reads
                peak = max(peak, data.peak_cached)
        assert all(corpus_key[1] == key for *corpus_key, key in seen)
        if skip == 0:
            assert len(seen) == len(epoch)
            assert reads <= units + 4  # a unit at the border of two lanes is read by both
        peaks.append(peak)
    assert max(peaks) <= 8 * 64 + 3  # bounded by the window, not by the corpus
