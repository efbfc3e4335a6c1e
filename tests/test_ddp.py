"""Two processes on CPU (gloo): no hang, equal batch counts, every train sample once per epoch as the
corpus weights say."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import lightning as L
import pytest

from vago_lightning.data.datamodule import ShardDataModule
from vago_lightning.model.module import XttsGPTModule
from vago_lightning.training.guard import DivergenceGuard


class OneRankSeesNaN(XttsGPTModule):
    """Rank 1 alone sees a non-finite loss at step 3 (its gradients stay finite): unless the ranks
    decide together, rank 1 would skip a step that rank 0 applies and their weights would part."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if self.trainer.global_rank == 1 and self.trainer.global_step == 3:
            loss = loss + loss.detach() * float("nan")  # the value is NaN, the gradients are not
        return loss


class ReportGuard(L.Callback):
    def __init__(self, out: str):
        self.out = out

    def on_train_end(self, trainer, pl_module):
        guard = next(cb for cb in trainer.callbacks if isinstance(cb, DivergenceGuard))
        total = sum(float(p.double().sum()) for p in pl_module.gpt.parameters())
        (Path(self.out) / f"guard-rank{trainer.global_rank}.json").write_text(
            json.dumps({"skipped": guard.skipped, "weights": total})
        )


class RecordKeys(L.Callback):
    """Writes the keys each rank trains on, per epoch, to files (spawned ranks return nothing)."""

    def __init__(self, out: str):
        self.out = out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        path = Path(self.out) / f"rank{trainer.global_rank}-epoch{trainer.current_epoch}.txt"
        with open(path, "a") as f:
            f.write(" ".join(batch.key) + "\n")  # one line per batch


@pytest.mark.slow
def test_two_process_ddp_sees_every_sample_once_per_epoch_and_the_guard_decides_together(
    tiny_base, demo_shards, tmp_path
):
    """Two corpora of uneven size (80 and 226 train clips) under corpus weights, one DataLoader worker
    per rank: equal batch counts, and each epoch's clips exactly as the weights say, none twice."""
    seen = tmp_path / "seen"
    seen.mkdir()
    model = OneRankSeesNaN(base_model=str(tiny_base), lr=1e-4)
    weights = {"quiz": 2.0, "interview": 0.25}
    data = ShardDataModule(
        shards_dir=str(demo_shards), base_model=str(tiny_base), corpus_weights=weights, num_workers=1
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=2,
        val_check_interval=20,
        check_val_every_n_epoch=None,
        callbacks=[RecordKeys(str(seen)), DivergenceGuard(), ReportGuard(str(seen))],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, data)
    manifest = json.loads((demo_shards / "manifest.json").read_text())
    train = {n: {e["key"] for e in c["splits"]["train"]["index"]} for n, c in manifest["corpora"].items()}
    assert (len(train["quiz"]), len(train["interview"])) == (80, 226)
    subsets = []
    for epoch in (0, 1):
        lines = [(seen / f"rank{r}-epoch{epoch}.txt").read_text().splitlines() for r in (0, 1)]
        # 2 x 80 quiz + 56 interview clips, 2 ranks, batch 3: 36 batches on each rank
        assert len(lines[0]) == len(lines[1]) == 36
        counts = Counter(" ".join(lines[0] + lines[1]).split())
        assert {k: counts[k] for k in train["quiz"]} == dict.fromkeys(train["quiz"], 2)
        interview = {k for k in counts if k in train["interview"]}
        assert len(interview) == round(226 * 0.25) and all(counts[k] == 1 for k in interview)
        assert set(counts) <= train["quiz"] | train["interview"]
        subsets.append(interview)
    assert subsets[0] != subsets[1]  # another random quarter each epoch
    # The guard's decision was taken by both ranks: both skipped, and the weights stayed identical.
    reports = [json.loads((seen / f"guard-rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["skipped"] == reports[1]["skipped"] == 1
    assert reports[0]["weights"] == reports[1]["weights"]
