"""The LightningDataModule: WebDataset shards of several corpora, planned epoch by epoch.

Every epoch is one pass over the train samples (each corpus repeated by its sampling weight). The
plan is made from the manifest's index before any audio is read, identically on every rank
(`plan.py`): shards are shuffled and dealt out to the ranks' DataLoader workers, each worker mixes
its clips a window of shards at a time, sorts them by length in pools (bucketing cuts padding) and
cuts them into batches, so that every rank gets the same number of batches, every sample is seen
once, and a worker reads each of its shards once and holds at most one window of clips. Shards are
streamed (local paths or any URL webdataset opens: http://, pipe:...) and batches come in plan order.

Validation is every corpus's val shards, in fixed corpus-homogeneous batches (so per-corpus losses
are exact), the same every time; under DDP every rank runs all of it, so no rank waits for another.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import DataError
from ..log import say
from ..model.batching import Collate
from .audio import decode_flac
from .integrity import check_shards, read_with_retries
from .manifest import check_codes_match, is_url, join, load_manifest
from .plan import expand_weights, plan_epoch


class PlannedShardDataset(IterableDataset):
    """Yields this rank's batches of one planned epoch, reading the shards that hold them."""

    def __init__(self, shards_dir: str, batches_fn, length: int, tokenizer, language: str, train: bool, seed: int):
        self.shards_dir = shards_dir
        self.batches_fn = batches_fn  # (epoch, lanes) -> this rank's batches (lists of index entries)
        self.length = length
        self.tokenizer = tokenizer
        self.language = language
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.lanes = 1  # the epoch's plan has one lane per DataLoader worker
        self.skip = 0  # batches of this epoch already trained before a resume
        # What this process did in its last pass, for tests and benchmarks.
        self.shard_reads = 0
        self.peak_cached = 0  # clips held from shards already read, waiting for their batch
        self.shard_errors: dict[tuple[str, str], str] = {}  # (corpus, shard) -> why it ended early

    def __len__(self) -> int:
        return self.length

    def _sample(self, raw: dict, corpus: str) -> dict:
        meta = json.loads(raw["json"])
        sample = {
            "text": torch.tensor(self.tokenizer.encode(meta["text"], self.language), dtype=torch.long),
            "wav": torch.from_numpy(decode_flac(raw["flac"])),
            "corpus": corpus,
            "key": meta["key"],
        }
        if "codes.npy" in raw:
            sample["codes"] = torch.from_numpy(np.load(io.BytesIO(raw["codes.npy"])).astype(np.int64))
        return sample

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        collate = Collate(train=self.train, seed=hash((self.seed, self.epoch, worker)) if self.train else 0)
        last_good = None
        for batch, raw in self.raw_batches(worker, workers):
            samples, skipped = [], []
            for entry, sample in zip(batch, raw):
                shard = f"{entry['corpus']}/{entry['shard']}"
                if sample is None:  # not in its shard: the shard ended early
                    error = self.shard_errors.get((entry["corpus"], entry["shard"]), "not found in its shard")
                    skipped.append({"shard": shard, "key": entry["key"], "error": error})
                    continue
                try:
                    samples.append(self._sample(sample, entry["corpus"]))
                except DataError:  # shards made with other settings: no clip of them will do
                    raise
                except Exception as err:  # noqa: BLE001 - a clip whose bytes rotted: skipped and reported
                    skipped.append({"shard": shard, "key": entry["key"], "error": f"{type(err).__name__}: {err}"})
            if not samples:
                # Every rank must yield as many batches as its plan says (DDP, resume positions): a batch
                # none of whose clips decode trains the last good clip again.
                if last_good is None:
                    raise DataError(f"{self.shards_dir}: no clip of the first batch decodes: {skipped}")
                samples = [last_good]
            last_good = samples[-1]
            out = collate(samples)
            out.skipped = skipped
            yield out

    def raw_batches(self, worker: int = 0, workers: int = 1):
        """(entries, raw samples) of the batches of `worker`, in plan order; a sample its shard did not
        hold is None. The DataLoader hands out a rank's batches to its workers in turn, so worker w
        makes batches w, w + workers, ...: with as many workers as the plan has lanes, those are one
        lane's, read a window at a time."""
        mine = self.batches_fn(self.epoch, self.lanes)[self.skip :][worker::workers]
        wanted = {_ident(e): (e["corpus"], e["shard"], e.get("copy", 0)) for batch in mine for e in batch}
        read: set = set()
        cache: dict = {}
        self.shard_reads, self.peak_cached = 0, 0
        for batch in mine:
            # A unit (a shard, or its repeat under a corpus weight) is read once, when a batch first
            # needs it; its clips are kept only until their batch is made.
            for unit in sorted({(e["corpus"], e["shard"], e.get("copy", 0)) for e in batch} - read):
                read.add(unit)
                self.shard_reads += 1
                self._read_unit(unit, wanted, cache)
            self.peak_cached = max(self.peak_cached, len(cache))
            yield batch, [cache.pop(_ident(e), None) for e in batch]

    def _read_unit(self, unit: tuple, wanted: dict, cache: dict) -> None:
        """Cache the wanted samples of one unit. A dropped connection is read again (samples already
        cached are not taken twice); a local shard that cannot be read to its end keeps the samples
        before the cut, and the error is kept for the clips after it."""
        corpus, shard, copy = unit
        location = join(self.shards_dir, corpus, shard)

        def read() -> None:
            for sample in self.read_shard(corpus, shard):
                ident = (corpus, sample["__key__"], copy)
                if ident in wanted:
                    cache[ident] = sample
                    del wanted[ident]
            if unit in wanted.values():  # a stream that stopped at a file boundary raises nothing
                raise DataError(f"{location}: ended before all of its samples were read")

        def retrying(attempt: int, err: Exception) -> None:
            say(f"{location}: reading it failed ({type(err).__name__}); trying again ({attempt} of {RETRIES})")

        try:
            read_with_retries(read, location, retries=RETRIES, backoff=RETRY_BACKOFF, on_retry=retrying)
        except DataError as err:
            if is_url(location):
                raise
            self.shard_errors[(corpus, shard)] = str(err)
        except Exception as err:  # noqa: BLE001 - a local shard cut short: its clips are skipped, reported
            self.shard_errors[(corpus, shard)] = f"shard unreadable from here ({type(err).__name__}: {err.args[0]})"
        for ident in [i for i, u in wanted.items() if u == unit]:
            del wanted[ident]  # not in the shard: reported as skipped when its batch comes

    def read_shard(self, corpus: str, shard: str):
        """The samples of one shard as webdataset groups them (a local path or any URL it opens)."""
        import webdataset as wds

        return wds.DataPipeline(wds.SimpleShardList([join(self.shards_dir, corpus, shard)]), wds.tarfile_to_samples())


RETRIES = 4  # a shard over http(s) is read again this many times after a failure...
RETRY_BACKOFF = 1.0  # ...waiting 1, 2, 4, 8 s


def _ident(entry: dict) -> tuple:
    return entry["corpus"], entry["key"], entry.get("copy", 0)


class EpochLoader(DataLoader):
    """A DataLoader that tells its dataset the trainer's epoch before each pass (a new plan, a new
    order), and that Lightning can checkpoint: after a resume mid-epoch it goes on with the batches
    of that epoch's plan that were not trained yet, so no clip is seen twice or skipped."""

    def __init__(self, dataset: PlannedShardDataset, trainer=None, **kwargs):
        super().__init__(dataset, batch_size=None, **kwargs)
        self.trainer = trainer
        self.lanes = max(1, self.num_workers)
        self._resume: dict | None = None

    def __iter__(self):
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        resume = self._resume if self._resume and self._resume["epoch"] == epoch else None
        self.dataset.epoch = epoch
        self.dataset.skip = resume["batches_done"] if resume else 0
        # The interrupted epoch keeps its plan even if the number of workers changed.
        self.dataset.lanes = resume.get("lanes", 1) if resume else self.lanes
        if resume and resume.get("world_size", self.trainer.world_size) != self.trainer.world_size:
            say(
                f"resumed in the middle of epoch {epoch} on {self.trainer.world_size} devices, the checkpoint "
                f"was saved on {resume['world_size']}: the rest of this epoch may repeat or miss some clips; "
                "the next epochs see every clip once"
            )
        self._resume = None
        return super().__iter__()

    def state_dict(self) -> dict:
        if self.trainer is None:
            return {}
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return {
            "epoch": self.trainer.current_epoch,
            "batches_done": progress.processed,  # of this rank's batches in the epoch's plan
            "lanes": self.dataset.lanes,
            "world_size": self.trainer.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        if state:
            self._resume = dict(state)


class ShardDataModule(L.LightningDataModule):
    def __init__(
        self,
        shards_dir: str = "data_shards",
        corpora: list[str] | None = None,
        corpus_weights: dict[str, float] | None = None,
        batch_size: int = 3,
        num_workers: int = 2,
        bucket_pool_batches: int = 16,
        window_shards: int = 8,
        seed: int = 0,
        base_model: str = "models/tiny-xtts",
        language: str = "hu",
        multiprocessing_context: Literal["fork", "spawn", "forkserver"] | None = None,
        max_bad_clips: int | None = None,
        verify: bool = False,
    ):
        """
        Args:
            shards_dir: output folder of `prepare` (local path or URL prefix that webdataset opens).
            corpora: corpora of the manifest to use; null for all of them.
            corpus_weights: per-corpus repetition per epoch, e.g. {quiz: 2.0}; 1.0 when not given.
            batch_size: clips per batch on each device.
            num_workers: DataLoader worker processes per device for decoding.
            bucket_pool_batches: batches per length-sorting pool; 1 turns bucketing off.
            window_shards: shards each DataLoader worker mixes at once: clips are shuffled and sorted
                by length within a window, and a worker holds at most one window of clips in memory.
            seed: shuffling seed; each epoch's plan is derived from it and the epoch number.
            base_model: the model's base directory (linked from model.base_model): vocab and DVAE check.
            language: the model's language (linked from model.language).
            multiprocessing_context: how DataLoader workers start; null: the platform's own (spawn on
                Windows and macOS, fork on Linux).
            max_bad_clips: clips that cannot be decoded are skipped and listed in the run's skipped.jsonl;
                past this many the run stops. null: 1% of an epoch's train clips (at least 1).
            verify: also compare every shard's SHA-256 with the manifest before training (reads every
                shard once); their sizes are always compared.
        """
        super().__init__()
        self.save_hyperparameters()
        self.tokenizer = None

    def setup(self, stage: str) -> None:
        from ..model.base import base_fingerprint, check_base_dir, load_tokenizer

        if self.tokenizer is not None:
            return  # set up already (the command line checks the data before Lightning starts)
        hp = self.hparams
        manifest = load_manifest(hp.shards_dir)
        where = join(hp.shards_dir, "manifest.json")
        names = list(hp.corpora) if hp.corpora else sorted(manifest.corpora)
        for name in names + sorted(hp.corpus_weights or {}):
            if name not in manifest.corpora:
                raise DataError(
                    f"{where}: no corpus {name!r} (it has {sorted(manifest.corpora)}); fix data.corpora or prepare it"
                )
        if manifest.language != hp.language:
            raise DataError(f"{where}: prepared for language {manifest.language!r}, model.language is {hp.language!r}")
        check_codes_match(manifest, names, base_fingerprint(check_base_dir(hp.base_model)), hp.base_model, where)
        say(f"preflight: {check_shards(manifest, hp.shards_dir, names, hp.verify)}", warning=False)
        self.manifest = manifest
        # Plain dicts of what planning needs: the index travels to every DataLoader worker.
        train = {n: _entries(manifest.samples(n, "train"), n) for n in names}
        if not any(train.values()):
            raise DataError(f"{where}: no train samples in corpora {names}")
        self.corpora = names
        self.train_samples = train
        self.val_samples = {n: _entries(manifest.samples(n, "val"), n) for n in names}
        self.tokenizer = load_tokenizer(hp.base_model)  # last: it marks the module as set up

    def bad_clip_limit(self) -> int:
        """Clips that may fail to decode before the run stops (data.max_bad_clips)."""
        if self.hparams.max_bad_clips is not None:
            return self.hparams.max_bad_clips
        return max(1, round(0.01 * sum(len(v) for v in self.train_samples.values())))

    # --- train ------------------------------------------------------------------------------

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def batches_per_epoch(self) -> int:
        """Train batches each rank gets per epoch (the same for every epoch)."""
        return len(_RankPlan(self, self._world()[0])(0, 1))

    def train_dataloader(self):
        plan_fn = _RankPlan(self, self._world()[0])
        length = len(plan_fn(0, 1))  # the same for every epoch and layout (weights give fixed counts)
        dataset = PlannedShardDataset(
            self.hparams.shards_dir,
            plan_fn,
            length,
            self.tokenizer,
            self.hparams.language,
            train=True,
            seed=self.hparams.seed,
        )
        return EpochLoader(dataset, self.trainer, **self._workers(self.hparams.num_workers), persistent_workers=False)

    # --- validation -------------------------------------------------------------------------

    def val_batches(self) -> list[list[dict]]:
        """Fixed corpus-homogeneous batches, in corpus and key order."""
        batches = []
        for name in self.corpora:
            samples = sorted(self.val_samples[name], key=lambda e: e["key"])
            size = self.hparams.batch_size
            batches += [samples[i : i + size] for i in range(0, len(samples), size)]
        return batches

    def val_dataloader(self):
        batches = self.val_batches()
        if not batches:
            return []
        dataset = PlannedShardDataset(
            self.hparams.shards_dir,
            _Fixed(batches),
            len(batches),
            self.tokenizer,
            self.hparams.language,
            train=False,
            seed=0,
        )
        return EpochLoader(dataset, None, **self._workers(min(self.hparams.num_workers, len(batches))))

    def _workers(self, count: int) -> dict:
        context = self.hparams.multiprocessing_context if count > 0 else None
        # Pinned batches on a GPU, so that Lightning's non_blocking copies overlap the step.
        trainer = self.trainer
        pin = trainer is not None and trainer.strategy.root_device.type == "cuda"
        init = _leave_stop_signals_to_the_trainer if count > 0 else None
        return {"num_workers": count, "multiprocessing_context": context, "pin_memory": pin, "worker_init_fn": init}


def _leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """A console sends Ctrl-C (Ctrl-Break) to every process of the program, a scheduler may send SIGTERM
    to all of them: a DataLoader worker that died of it would end the run before its save. The main
    process stops the run; a worker ends with it (PyTorch's workers watch their parent)."""
    import signal

    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


def _entries(index: list, corpus: str) -> list[dict]:
    # A few hundred bytes per clip: shard names are shared, categories are not needed.
    return [{"key": e.key, "shard": sys.intern(e.shard), "duration": e.duration, "corpus": corpus} for e in index]


# Picklable callables (DataLoader workers are separate processes).


class _RankPlan:
    def __init__(self, datamodule: ShardDataModule, rank: int):
        self.samples = datamodule.train_samples
        self.weights = datamodule.hparams.corpus_weights or {}
        self.batch_size = datamodule.hparams.batch_size
        self.seed = datamodule.hparams.seed
        self.pool = datamodule.hparams.bucket_pool_batches
        self.window = datamodule.hparams.window_shards
        self.rank, self.world = rank, datamodule._world()[1]

    def __call__(self, epoch: int, lanes: int):
        samples = expand_weights(self.samples, self.weights, self.seed, epoch)
        return plan_epoch(samples, self.batch_size, self.world, self.seed, epoch, lanes, self.window, self.pool)[
            self.rank
        ]


class _Fixed:
    def __init__(self, batches):
        self.batches = batches

    def __call__(self, epoch: int, lanes: int):
        return self.batches
