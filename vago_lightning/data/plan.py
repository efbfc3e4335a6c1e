"""Pure epoch planning: which clips go in which batch on which rank, before any audio is read.

Each sample is an `IndexEntry` of the manifest (key, shard, duration, category) with its corpus.
The plan is a pure function of the index, the seed and the epoch, so every rank computes the same
one and a resumed run computes the one it was in.
"""

from __future__ import annotations

import math
import random

from ..errors import DataError


def plan_epoch(
    samples: list[dict], batch_size: int, world_size: int, seed: int, epoch: int, pool_batches: int = 16
) -> list[list[list[dict]]]:
    """Batches for each rank for one epoch: rank r's list is plan[r]. Same on every rank.

    Shuffled, then sorted by duration inside pools of `pool_batches` batches, cut into
    world_size * k batches of near-equal size (k = ceil(n / (world_size * batch_size))), shuffled
    again and dealt round-robin. Every sample appears exactly once; every rank gets k batches.
    """
    rng = random.Random(f"{seed}/{epoch}")
    order = list(samples)
    rng.shuffle(order)
    n = len(order)
    per_rank = math.ceil(n / (world_size * batch_size))
    n_batches = world_size * per_rank
    if n < n_batches:
        raise DataError(
            f"{n} train samples cannot fill {n_batches} batches for {world_size} ranks; "
            "use fewer devices or a smaller batch_size"
        )
    sizes = [n // n_batches + (1 if i < n % n_batches else 0) for i in range(n_batches)]
    pool = pool_batches * batch_size
    bucketed = []
    for start in range(0, n, pool):
        bucketed += sorted(order[start : start + pool], key=lambda s: s["duration"])
    batches, at = [], 0
    for size in sizes:
        batches.append(bucketed[at : at + size])
        at += size
    rng.shuffle(batches)
    return [batches[r::world_size] for r in range(world_size)]


def expand_weights(
    samples_by_corpus: dict[str, list[dict]], weights: dict[str, float], seed: int, epoch: int
) -> list[dict]:
    """One epoch's samples: each corpus repeated by its weight (2.0 = twice; 0.5 = a random half)."""
    rng = random.Random(f"{seed}/{epoch}/weights")
    out = []
    for name, samples in sorted(samples_by_corpus.items()):
        weight = weights.get(name, 1.0)
        whole, part = int(weight), weight - int(weight)
        out += samples * whole
        out += rng.sample(samples, round(len(samples) * part))
    return out
