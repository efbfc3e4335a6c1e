"""Pure epoch planning: which clips go in which batch, on which rank and DataLoader worker, before
any audio is read.

Each sample is an `IndexEntry` of the manifest (key, shard, duration) with its corpus. The plan is a
pure function of the index, the seed, the epoch and the layout (ranks x workers), so every rank
computes the same one and a resumed run computes the one it was in.

Memory shapes it. With one global shuffle, every worker would touch nearly every shard and hold each
clip it needs later until it uses it: most of the corpus. So the shuffle is at shard level: the
epoch's "units" (a shard's clips; a shard repeated by a corpus weight is one unit per repeat) are
shuffled and dealt out in contiguous runs, one run per lane (a rank's DataLoader worker). A lane
takes its units a window of `window_shards` at a time and mixes the window's clips, sorts them by
duration in pools (length bucketing), cuts them into batches and shuffles those. A worker therefore
reads each of its shards once and holds at most one window of clips, whatever the corpus size.
"""

from __future__ import annotations

import math
import random
from collections import Counter

from ..errors import DataError


def plan_epoch(
    samples: list[dict],
    batch_size: int,
    world_size: int,
    seed: int,
    epoch: int,
    lanes: int = 1,
    window_shards: int = 8,
    pool_batches: int = 16,
) -> list[list[list[dict]]]:
    """Batches for each rank for one epoch: rank r's list is plan[r], in training order. The same on
    every rank. Every sample appears exactly once, every rank gets the same number of batches
    (k = ceil(n / (world_size * batch_size))), batch sizes differ by at most one.

    A rank's p-th batch belongs to lane p % lanes, so a DataLoader with `lanes` workers (which hands
    out batch p to worker p % workers) gives each worker the batches of one lane, in order. A clip
    that a corpus weight repeats carries `copy` (1, 2, ...) from its second appearance on.
    """
    rng = random.Random(f"{seed}/{epoch}")
    n = len(samples)
    per_rank = math.ceil(n / (world_size * batch_size))
    n_batches = world_size * per_rank
    if n < n_batches:
        raise DataError(
            f"{n} train samples cannot fill {n_batches} batches for {world_size} ranks; "
            "use fewer devices or a smaller batch_size"
        )
    # The epoch's t-th batch (t = p * world_size + rank) holds q + 1 clips for the first `extra`.
    q, extra = divmod(n, n_batches)
    sizes: dict[tuple[int, int], list[int]] = {(r, lane): [] for r in range(world_size) for lane in range(lanes)}
    for p in range(per_rank):
        for r in range(world_size):
            sizes[(r, p % lanes)].append(q + (1 if p * world_size + r < extra else 0))
    pieces = _deal(_units(samples, rng), [sum(sizes[lane]) for lane in sorted(sizes)])
    plan = []
    for r in range(world_size):
        lane_batches = [
            _lane(pieces[r * lanes + lane], sizes[(r, lane)], window_shards, pool_batches * batch_size, rng)
            for lane in range(lanes)
        ]
        plan.append([lane_batches[p % lanes][p // lanes] for p in range(per_rank)])
    return plan


def _units(samples: list[dict], rng: random.Random) -> list[list[dict]]:
    """The epoch's samples grouped by (corpus, shard, copy), in a random order."""
    copies: Counter = Counter()
    units: dict[tuple, list[dict]] = {}
    for s in samples:
        copy = copies[(s["corpus"], s["key"])]
        copies[(s["corpus"], s["key"])] += 1
        units.setdefault((s["corpus"], s["shard"], copy), []).append(dict(s, copy=copy) if copy else s)
    order = sorted(units)
    rng.shuffle(order)
    return [units[u] for u in order]


def _deal(units: list[list[dict]], counts: list[int]) -> list[list[list[dict]]]:
    """Consecutive runs of `units` holding counts[i] samples each; a unit at the border of two runs
    is split between them (its shard is then read by both lanes)."""
    runs: list[list[list[dict]]] = [[] for _ in counts]
    lane, room = 0, counts[0] if counts else 0
    for unit in units:
        at = 0
        while at < len(unit):
            while room == 0:
                lane += 1
                room = counts[lane]
            piece = unit[at : at + room]
            runs[lane].append(piece)
            at += len(piece)
            room -= len(piece)
    return runs


def _lane(units: list[list[dict]], sizes: list[int], window_shards: int, pool: int, rng: random.Random) -> list:
    """One lane's batches: `units` a window at a time, mixed, sorted by duration within pools of
    `pool` clips and cut into the next batches of `sizes` that the window fills; the clips left over
    (fewer than a batch) go on to the next window."""
    batches: list[list[dict]] = []
    carry: list[dict] = []
    done = 0  # batches of `sizes` made
    for start in range(0, len(units), window_shards):
        window = carry + [s for unit in units[start : start + window_shards] for s in unit]
        rng.shuffle(window)
        last = start + window_shards >= len(units)
        end, taken = done, 0
        while end < len(sizes) and (last or taken + sizes[end] <= len(window)):
            taken += sizes[end]
            end += 1
        window, carry = window[:taken], window[taken:]
        bucketed = []
        for at in range(0, len(window), pool):
            bucketed += sorted(window[at : at + pool], key=lambda s: s["duration"])
        cut, at = [], 0
        for size in sizes[done:end]:
            cut.append(bucketed[at : at + size])
            at += size
        rng.shuffle(cut)
        batches += cut
        done = end
    assert done == len(sizes) and not carry, "every planned batch filled"
    return batches


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
