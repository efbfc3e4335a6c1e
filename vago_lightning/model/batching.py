"""Pure torch batching: coqui's conditioning slice, the padding collate, and the `Batch` it makes.

A sample is a dict: `text` (int64 token ids), `wav` (float32 [T] at 22,050 Hz), optionally `codes`
(int64 precomputed DVAE codes), `corpus` and `key`. A `Batch` holds the padded tensors the model reads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F

from ..constants import MAX_COND_SAMPLES, MIN_COND_SAMPLES


@dataclass
class Batch:
    """What the DataModule yields and the LightningModule reads (Lightning moves the tensors)."""

    text: torch.Tensor  # int64 [B, L] token ids, zero-padded
    text_lengths: torch.Tensor  # int64 [B]
    wav: torch.Tensor  # float32 [B, T] at 22,050 Hz, zero-padded
    wav_lengths: torch.Tensor  # int64 [B] samples
    cond_wav: torch.Tensor  # float32 [B, 132300]: each clip's conditioning slice, zero-padded
    cond_idxs: torch.Tensor | None  # int64 [B, 2] slice [start, end) in samples; None in validation
    corpus: list[str]  # the corpus of each clip
    key: list[str]  # the shard key of each clip
    codes: torch.Tensor | None = None  # int64 [B, C] precomputed DVAE codes, when every clip has them
    skipped: list[dict] = field(default_factory=list)  # clips of this batch that could not be decoded

    @property
    def size(self) -> int:
        return int(self.text.shape[0])

    def select(self, index: list[int]) -> Batch:
        """The sub-batch of the items at `index` (for per-corpus validation)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "skipped":
                out[f.name] = []  # reported with the whole batch
            elif value is None:
                out[f.name] = None
            elif isinstance(value, torch.Tensor):
                out[f.name] = value[index]
            else:
                out[f.name] = [value[i] for i in index]
        return Batch(**out)

    def pin_memory(self) -> Batch:
        """Called by the DataLoader with pin_memory=True, so copies to the GPU can be asynchronous."""
        return Batch(
            **{
                f.name: (v.pin_memory() if isinstance(v := getattr(self, f.name), torch.Tensor) else v)
                for f in fields(self)
            }
        )


def prompt_slice(
    wav: torch.Tensor,
    train: bool,
    rng: random.Random,
    min_len: int = MIN_COND_SAMPLES,
    max_len: int = MAX_COND_SAMPLES,
) -> tuple[torch.Tensor, list[int]]:
    """coqui's `get_prompt_slice` on a decoded clip: in training a random 3-6 s slice at a random
    start; in validation the 4.5 s slice from the start. A clip shorter than that gives half of it.
    Returns the slice zero-padded to `max_len` and [start, end] in samples."""
    length = (min_len + max_len) // 2 if not train else rng.randint(min_len, max_len)
    if wav.shape[-1] - length < 0:
        length = wav.shape[-1] // 2
    start = 0 if not train else rng.randint(0, wav.shape[-1] - length)
    piece = wav[..., start : start + length]
    return F.pad(piece, (0, max_len - piece.shape[-1])), [start, start + length]


def pad_stack(tensors: list[torch.Tensor], value=0) -> torch.Tensor:
    longest = max(t.shape[-1] for t in tensors)
    return torch.stack([F.pad(t, (0, longest - t.shape[-1]), value=value) for t in tensors])


class Collate:
    """Pads a list of samples into a batch and cuts each sample's conditioning slice."""

    def __init__(self, train: bool, seed: int | None = None):
        self.train = train
        self.rng = random.Random(seed)

    def __call__(self, samples: list[dict]) -> Batch:
        slices = [prompt_slice(s["wav"], self.train, self.rng) for s in samples]
        with_codes = all(s.get("codes") is not None for s in samples)
        return Batch(
            text=pad_stack([s["text"] for s in samples]).long(),
            text_lengths=torch.tensor([len(s["text"]) for s in samples], dtype=torch.long),
            wav=pad_stack([s["wav"] for s in samples]).float(),
            wav_lengths=torch.tensor([s["wav"].shape[-1] for s in samples], dtype=torch.long),
            cond_wav=torch.stack([piece for piece, _ in slices]).float(),
            # Validation has no prompt masking, as in coqui's eval_step.
            cond_idxs=torch.tensor([idx for _, idx in slices], dtype=torch.long) if self.train else None,
            corpus=[s.get("corpus", "") for s in samples],
            key=[s.get("key", "") for s in samples],
            codes=pad_stack([s["codes"] for s in samples]).long() if with_codes else None,
        )
