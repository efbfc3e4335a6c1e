"""Clips that cannot be decoded (bytes that rotted inside a shard, a shard cut short): the DataLoader
skips them and reports them with each batch (`Batch.skipped`); this callback lists each once in the
run's `skipped.jsonl`, says it once, counts them in TensorBoard (`data/skipped_clips`), and past
`data.max_bad_clips` stops the run after a save, naming the shards and the command that rewrites them.

The list survives a resume (it is read back), so a resumed run counts a known bad clip once and does
not train into it again and again.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L

from ..data.manifest import prepare_command
from ..errors import DataError
from ..log import say
from .guard import log_event


class SkippedClips(L.Callback):
    def __init__(self):
        self.seen: dict[tuple[str, str], dict] = {}  # (shard, key) -> its record
        self.limit: int | None = None
        self.path: Path | None = None
        self._asked = False

    def setup(self, trainer, pl_module, stage: str) -> None:
        datamodule = trainer.datamodule
        self.limit = datamodule.bad_clip_limit() if hasattr(datamodule, "bad_clip_limit") else None
        self.path = Path(trainer.log_dir or trainer.default_root_dir) / "skipped.jsonl"
        if self.path.is_file():  # a resumed run: the clips found before count once
            for line in self.path.read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                self.seen[(record["shard"], record["key"])] = record

    def on_train_start(self, trainer, pl_module) -> None:
        self._check_limit(trainer)  # a resumed run over the limit stops at its first step, saying why

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._note(trainer, getattr(batch, "skipped", None))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._note(trainer, getattr(batch, "skipped", None))

    def _note(self, trainer, skipped: list[dict] | None) -> None:
        new = [r for r in skipped or [] if (r["shard"], r["key"]) not in self.seen]
        if not new:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:  # each rank appends its own finds, a line each
            for record in new:
                record = dict(record, step=trainer.global_step)
                self.seen[(record["shard"], record["key"])] = record
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                say(
                    f"skipped clip {record['key']} of shard {record['shard']}: it cannot be decoded "
                    f"({record['error'][:200]}); listed in {self.path}"
                )
        log_event(trainer, "data/skipped_clips", float(len(self.seen)))
        self._check_limit(trainer)

    def _check_limit(self, trainer) -> None:
        if self.limit is not None and len(self.seen) > self.limit and not self._asked:
            self._asked = True
            self._stop(trainer)

    def _stop(self, trainer) -> None:
        shards = sorted({r["shard"] for r in self.seen.values()})
        datamodule = trainer.datamodule
        corpora = sorted({s.split("/")[0] for s in shards})
        command = prepare_command(datamodule.manifest, datamodule.hparams.shards_dir, corpora)
        reason = (
            f"{len(self.seen)} clips could not be decoded, more than data.max_bad_clips ({self.limit}), in "
            f"{', '.join(shards)} (listed in {self.path}): those shards are damaged; copy them again, or rewrite "
            f"them with `{command}`"
        )
        from .checkpoints import RunCheckpoint

        for callback in trainer.callbacks:
            if isinstance(callback, RunCheckpoint):
                callback.stop.ask(reason)  # it saves last.ckpt at this step, then stops the run
                return
        raise DataError(reason)
