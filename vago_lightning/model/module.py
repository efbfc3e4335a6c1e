"""The LightningModule: coqui's XTTS GPT trained with separate text-CE and mel-CE losses.

Only the GPT is trained. The DVAE and the mel extractors are frozen, in eval mode, run under
no_grad, and left out of checkpoints (they come from the base model directory). The HiFiGAN decoder
is not held at all: export takes it from the base's model.pth.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import lightning as L
import torch

from ..constants import language_problem
from ..errors import BaseModelError, UsageError
from ..log import say
from .base import (
    LORA_KEY,
    base_fingerprint,
    check_base_dir,
    check_lora_start,
    check_same_base,
    load_dvae,
    load_tokenizer,
    starting_gpt,
)
from .batching import Batch
from .features import conditioning_mel, dvae_codes, dvae_mel
from .lora import LoraSettings, add_lora, is_adapter_key, weights_checksum
from .losses import LossWeights, PromptMasking, gpt_losses, weighted
from .optim import OptimizerName, lr_factor, make_optimizer, weight_decay_groups

FROZEN_PREFIXES = ("dvae.", "dvae_mel.", "cond_mel.")


class XttsGPTModule(L.LightningModule):
    def __init__(
        self,
        base_model: str = "models/tiny-xtts",
        init_from: str | None = None,
        language: str = "hu",
        lr: float = 5e-6,
        weight_decay: float = 1e-2,
        betas: tuple[float, float] = (0.9, 0.96),
        eps: float = 1e-8,
        text_ce_weight: float = 0.01,
        mel_ce_weight: float = 1.0,
        prompt_masking: PromptMasking = "coqui",
        lr_schedule: Literal["constant", "cosine"] = "constant",
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.1,
        gradient_checkpointing: bool = False,
        validate_at_start: bool = True,
        fused_optimizer: bool = True,
        finetune: Literal["full", "lora"] = "full",
        lora: LoraSettings | None = None,
        optimizer: OptimizerName = "adamw",
    ):
        """
        Args:
            base_model: directory in the XTTS-v2 release layout (config.json, model.pth, dvae.pth,
                mel_stats.pth, vocab.json): the real release or one written by `tiny-base`.
            init_from: start a new run from these GPT weights (fresh optimizer, this run's LR): an
                XTTS release model.pth, one of our Lightning .ckpt files, or a coqui best_model.pth.
                Exact resume of a run is `--ckpt_path`, not this.
            language: language code of the corpora (tokenizer language token).
            lr: peak learning rate of AdamW.
            weight_decay: AdamW weight decay on weights only (none on biases, norms, embeddings).
            betas: AdamW betas (coqui: 0.9, 0.96).
            eps: AdamW epsilon.
            text_ce_weight: weight of the text cross-entropy in the loss (coqui: 0.01).
            mel_ce_weight: weight of the mel cross-entropy in the loss (coqui: 1.0).
            prompt_masking: "coqui" keeps coqui's loss exactly (prompt masked for the last item
                only, in the wrong units); "per_item" masks each item's prompt codes.
            lr_schedule: "constant" or "cosine" decay to min_lr_ratio*lr, stepped per optimizer step.
            warmup_steps: linear warm-up optimizer steps before the schedule.
            min_lr_ratio: final LR of the cosine schedule as a fraction of lr.
            gradient_checkpointing: recompute GPT-2 activations in backward (less memory, ~30% slower).
            validate_at_start: a new run validates its starting weights on every corpus before its first
                step and logs that at step 0: the "before" of the report (stage two's quiz and interview).
            fused_optimizer: AdamW's fused kernel (the same steps within 1e-6; not under 16-mixed).
            finetune: "full" trains the whole GPT; "lora" trains LoRA adapters on its GPT-2 stack
                (`lora`), the rest frozen: no gradients or optimizer moments for the 433 M frozen
                parameters, and checkpoints that hold the adapters alone; export merges them in.
            lora: the adapters of finetune "lora": r, alpha, dropout, targets, base_dtype.
            optimizer: "adamw" (torch) or "adamw8bit" (bitsandbytes: its two moments in 8 bits,
                a quarter of AdamW's optimizer memory; on a CPU its CPU kernels).
        """
        super().__init__()
        problem = language_problem(language, "model.language")
        if problem:
            raise UsageError(problem)
        self.save_hyperparameters()
        settings = LoraSettings.of(lora)
        self.hparams["lora"] = settings.as_dict()  # a plain mapping in hparams.yaml and checkpoints
        base = check_base_dir(base_model)
        self.weights = LossWeights(text_ce=text_ce_weight, mel_ce=mel_ce_weight)
        self.tokenizer = load_tokenizer(base)
        self.gpt, kind = starting_gpt(base, init_from)
        if init_from:
            self.init_kind = kind
        self.lora_record = None
        if finetune == "lora":
            self.lora_record = {
                "settings": settings.as_dict(),
                "init_from": str(Path(init_from).resolve()) if init_from else None,
                "start_checksum": weights_checksum(self.gpt.state_dict()),
            }
            add_lora(self.gpt, settings)
        mel_stats = torch.load(base / "mel_stats.pth", map_location="cpu", weights_only=True)
        self.dvae = load_dvae(base / "dvae.pth")
        self.dvae_mel = dvae_mel(mel_stats)
        self.cond_mel = conditioning_mel(mel_stats)
        for module in (self.dvae, self.dvae_mel, self.cond_mel):
            module.requires_grad_(False)
        self.base_fingerprint = base_fingerprint(base)
        if gradient_checkpointing:
            enable_gradient_checkpointing(self.gpt)

    # --- train/eval modes -------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """A bf16 frozen base needs autocast to meet fp32 activations in bf16."""
        precision = str(getattr(self._trainer, "precision", "32-true"))
        if self.lora_record and self.lora_record["settings"]["base_dtype"] == "bfloat16" and precision != "bf16-mixed":
            raise UsageError(
                f"model.lora.base_dtype bfloat16 needs trainer.precision bf16-mixed (it is {precision}); "
                f"set --trainer.precision bf16-mixed or --model.lora.base_dtype float32"
            )

    def train(self, mode: bool = True):
        """Only the GPT ever trains; the frozen parts stay in eval mode (plain nn.Module.train,
        never Xtts.eval(), which attaches a second copy of the GPT for inference)."""
        super().train(mode)
        for module in (self.dvae, self.dvae_mel, self.cond_mel):
            module.train(False)
        return self

    # --- the step ---------------------------------------------------------------------------

    @torch.no_grad()
    def batch_features(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """DVAE codes (precomputed ones when the batch has them) and conditioning mels [B,1,80,T]."""
        codes = batch.codes
        if codes is None:
            codes = dvae_codes(self.dvae, self.dvae_mel, batch.wav)
        cond_mels = self.cond_mel(batch.cond_wav).unsqueeze(1)
        return codes, cond_mels

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        codes, cond_mels = self.batch_features(batch)
        loss_text, loss_mel = gpt_losses(
            self.gpt,
            batch.text,
            batch.text_lengths,
            codes,
            batch.wav_lengths,
            cond_mels,
            batch.cond_idxs,
            self.hparams.prompt_masking,
        )
        return weighted(loss_text, loss_mel, self.weights)

    def training_step(self, batch: Batch, batch_idx: int):
        losses = self.losses(batch)
        for name, value in losses.items():
            self.log(f"train/{name}", value, prog_bar=name != "loss", batch_size=batch.size)
        return losses["loss"]

    def corpus_losses(self, batch: Batch) -> list[tuple[str, str, torch.Tensor, int]]:
        """(corpus, name, value, clips) for every corpus in the batch; corpus "" is the whole batch."""
        out, totals = [], {}
        for corpus in sorted(set(batch.corpus)):
            index = [i for i, c in enumerate(batch.corpus) if c == corpus]
            for name, value in self.losses(batch.select(index)).items():
                totals[name] = totals.get(name, 0.0) + value * len(index) / batch.size
                if corpus:
                    out.append((corpus, name, value, len(index)))
        return out + [("", name, value, batch.size) for name, value in totals.items()]

    def validation_step(self, batch: Batch, batch_idx: int):
        """Losses over the batch and per corpus: the quiz voice must be kept while the interview is
        learned."""
        for corpus, name, value, clips in self.corpus_losses(batch):
            tag = f"val/{corpus}/{name}" if corpus else f"val/{name}"
            self.log(tag, value, batch_size=clips, sync_dist=True, add_dataloader_idx=False, prog_bar=tag == "val/loss")

    def on_train_start(self) -> None:
        """The starting point: validation of the weights a new run starts from, logged at step 0."""
        trainer = self.trainer
        if not self.hparams.validate_at_start or trainer.global_step > 0 or not trainer.loggers:
            return
        datamodule = trainer.datamodule
        loader = datamodule.val_dataloader() if datamodule is not None else trainer.val_dataloaders
        sums: dict[str, float] = {}
        clips: dict[str, int] = {}
        was_training = self.training
        self.train(False)
        with torch.no_grad():
            for batch in loader or []:
                for corpus, name, value, n in self.corpus_losses(trainer.strategy.batch_to_device(batch)):
                    tag = f"val/{corpus}/{name}" if corpus else f"val/{name}"
                    sums[tag] = sums.get(tag, 0.0) + float(value) * n
                    clips[tag] = clips.get(tag, 0) + n
        self.train(was_training)
        if not sums:
            return
        metrics = {tag: total / clips[tag] for tag, total in sums.items()}
        metrics["val/starting_point"] = 1.0  # tells the report that step 0 holds the starting weights
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=0)
        corpora = ", ".join(
            f"{t.split('/')[1]} {v:.3f}"
            for t, v in sorted(metrics.items())
            if t.count("/") == 2 and t.endswith("/loss")
        )
        say(
            f"starting point (before the first step, logged at step 0): val/loss {metrics['val/loss']:.3f} ({corpora})",
            warning=False,
        )

    # --- optimizer --------------------------------------------------------------------------

    def configure_optimizers(self):
        hp = self.hparams
        # AdamW's fused kernel (CPU and CUDA; measured 4x faster than the per-tensor loop on CPU), except
        # under 16-mixed, whose grad scaler must unscale the gradients before the step sees them.
        fused = hp.fused_optimizer and str(getattr(self._trainer, "precision", "32-true")) != "16-mixed"
        optimizer = make_optimizer(
            hp.optimizer, weight_decay_groups(self.gpt, hp.weight_decay), hp.lr, tuple(hp.betas), hp.eps, fused
        )
        total = self.total_optimizer_steps() if hp.lr_schedule == "cosine" else 0
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: lr_factor(step, hp.warmup_steps, hp.lr_schedule, int(total), hp.min_lr_ratio),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Lightning refuses to clip for a fused optimizer under any mixed precision, for fear of a grad
        scaler; bf16-mixed has none, so its gradients are the real ones and are clipped here directly."""
        fused = getattr(optimizer, "defaults", {}).get("fused")
        if gradient_clip_val and fused and str(self.trainer.precision) == "bf16-mixed":
            if gradient_clip_algorithm in (None, "norm"):
                torch.nn.utils.clip_grad_norm_(self.gpt.parameters(), gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_value_(self.gpt.parameters(), gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def total_optimizer_steps(self) -> int:
        """The run's length for the cosine schedule. Taken from max_steps or from the data plan, not
        from `trainer.estimated_stepping_batches`: calling that sets up the train loader early, and
        Lightning then never restores its position on a resume (Lightning issue #20550)."""
        trainer = self.trainer
        if trainer.max_steps and trainer.max_steps > 0:
            return trainer.max_steps
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "batches_per_epoch") or not trainer.max_epochs:
            return int(trainer.estimated_stepping_batches)
        per_epoch = math.ceil(datamodule.batches_per_epoch() / trainer.accumulate_grad_batches)
        return per_epoch * trainer.max_epochs

    # --- checkpoints ------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep checkpoints to the trained GPT: the frozen DVAE (51.5 M params at full size) comes
        from the base model directory named in the hyperparameters, whose fingerprint is recorded."""
        state = checkpoint["state_dict"]
        for key in [k for k in state if not self.is_saved(k)]:
            del state[key]
        checkpoint["base_model"] = str(Path(self.hparams.base_model).resolve())
        checkpoint["base_fingerprint"] = self.base_fingerprint
        if self.lora_record:
            checkpoint[LORA_KEY] = self.lora_record

    def is_saved(self, key: str) -> bool:
        """Whether a state key goes into checkpoints: the trained weights only (in LoRA mode the
        adapters; the frozen rest comes from the base model and `init_from`)."""
        if self.lora_record:
            return is_adapter_key(key)
        return not key.startswith(FROZEN_PREFIXES)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse to resume or validate a checkpoint against another base model than it was trained on,
        and LoRA adapters against other starting weights."""
        check_same_base(checkpoint, self.base_fingerprint, self.hparams.base_model)
        theirs = checkpoint.get(LORA_KEY)
        if bool(theirs) != bool(self.lora_record):
            mode = "lora" if theirs else "full"
            raise BaseModelError(
                f"the checkpoint is of a model.finetune {mode} run; resume or validate it with --model.finetune {mode} "
                f"(to start a new run from its weights, use --model.init_from)"
            )
        if theirs:
            check_lora_start(theirs, self.lora_record["start_checksum"], "the checkpoint")

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Strict, except for what checkpoints leave out (frozen parts: they come from the base)."""
        own = super().state_dict()
        missing = [k for k in own if k not in state_dict]
        trained = [k for k in missing if self.is_saved(k)]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (trained or unexpected):
            raise BaseModelError(
                f"checkpoint does not match the model: missing {trained[:3]}, "
                f"unexpected {unexpected[:3]}; it belongs to another base model or model.finetune mode"
            )
        full = {**{k: own[k] for k in missing}, **state_dict}
        return super().load_state_dict(full, strict=strict, assign=assign)


def enable_gradient_checkpointing(gpt) -> None:
    """HF gradient checkpointing on coqui's GPT-2 stack. It needs `wte`, which coqui deletes, so it
    is aliased to the mel embedding while enabling and removed again."""
    gpt.gpt.wte = gpt.mel_embedding
    # transformers 5.23 renamed it (the old name warns on every run of the 12 GB profile).
    enable = getattr(gpt.gpt, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        gpt.gpt.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    del gpt.gpt.wte
