"""coqui-tts's own XTTS trainer, built on one of our base model directories.

The reference our training is measured against: the parity test compares losses and one optimizer
step with it, and the benchmark times it. Nothing here is used for training.
"""

from __future__ import annotations

from pathlib import Path

from vago_lightning.model.base import check_base_dir, load_xtts_config


def coqui_gpt_trainer(base_dir: str | Path, lr: float = 5e-6):
    """A coqui `GPTTrainer` loading `base_dir` the way the v2 recipe does (model.pth as xtts_checkpoint).

    Coqui's DVAE sizes are hard-coded to the release's, so the base must be written with `--dvae xtts`.
    Importing coqui's trainer package sets torch to one thread (a side effect of its dataset
    module); the previous thread count is put back.
    """
    import torch

    threads = torch.get_num_threads()
    from TTS.tts.layers.xtts.trainer.gpt_trainer import GPTArgs, GPTTrainer, GPTTrainerConfig

    torch.set_num_threads(threads)
    base = check_base_dir(base_dir)
    release = load_xtts_config(base)
    margs = release.model_args
    args = GPTArgs(
        max_conditioning_length=132300,
        min_conditioning_length=66150,
        max_wav_length=255995,
        max_text_length=200,
        debug_loading_failures=True,
        mel_norm_file=str(base / "mel_stats.pth"),
        dvae_checkpoint=str(base / "dvae.pth"),
        xtts_checkpoint=str(base / "model.pth"),
        tokenizer_file=str(base / "vocab.json"),
        gpt_num_audio_tokens=margs.gpt_num_audio_tokens,
        gpt_start_audio_token=margs.gpt_start_audio_token,
        gpt_stop_audio_token=margs.gpt_stop_audio_token,
        gpt_use_masking_gt_prompt_approach=True,
        gpt_use_perceiver_resampler=True,
        gpt_layers=margs.gpt_layers,
        gpt_n_model_channels=margs.gpt_n_model_channels,
        gpt_n_heads=margs.gpt_n_heads,
        gpt_max_audio_tokens=margs.gpt_max_audio_tokens,
        gpt_max_text_tokens=margs.gpt_max_text_tokens,
        gpt_max_prompt_tokens=margs.gpt_max_prompt_tokens,
        decoder_input_dim=margs.decoder_input_dim,
    )
    config = GPTTrainerConfig(
        model_args=args,
        audio=release.audio,
        lr=lr,
        optimizer="AdamW",
        optimizer_wd_only_on_weights=True,
        optimizer_params={"betas": [0.9, 0.96], "eps": 1e-8, "weight_decay": 1e-2},
        batch_size=3,
        eval_batch_size=3,
        mixed_precision=False,
    )
    return GPTTrainer(config)


def coqui_batch(batch) -> dict:
    """One of our batches in the layout of coqui's `XTTSDataset.collate_fn` (copies, since coqui's
    forward modifies cond_idxs in place)."""
    return {
        "padded_text": batch.text.int(),
        "text_lengths": batch.text_lengths.clone(),
        "wav": batch.wav[:, None].clone(),
        "wav_lengths": batch.wav_lengths.clone(),
        "conditioning": batch.cond_wav[:, None, None].clone(),
        "cond_idxs": None if batch.cond_idxs is None else batch.cond_idxs.clone(),
        "cond_lens": None,
    }
