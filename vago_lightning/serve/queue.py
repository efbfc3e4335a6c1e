"""One generation at a time per model, the rest waiting in a bounded line.

Peers' servers crash or mix two requests' audio when two generations share one model. Here every
job runs on the model's single thread, start to end, so no two generations ever interleave; a job
hands its chunks to its own asyncio queue, so every response carries only its own audio. Past
`max_waiting` jobs waiting, `submit` refuses (the server answers 503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

DONE = object()  # end of a job's chunks


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Stats:
    served: int = 0
    cancelled: int = 0
    rejected: int = 0
    failed: int = 0
    seconds: list[float] = field(default_factory=list)  # the last generations' durations

    def mean_seconds(self) -> float:
        return sum(self.seconds) / len(self.seconds) if self.seconds else 5.0


class Job:
    """A submitted generation: its chunks arrive on `chunks` (an asyncio.Queue of the caller's loop),
    then DONE, or the exception that ended it. `cancel()` stops it at the next chunk (or before it
    starts)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.chunks: asyncio.Queue = asyncio.Queue()
        self.stop = threading.Event()
        self.finished = threading.Event()

    def cancel(self) -> None:
        self.stop.set()

    def _emit(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.chunks.put_nowait, item)
        except RuntimeError:  # the server is shutting down: nobody waits for this job any more
            self.stop.set()


class GenerationQueue:
    def __init__(self, max_waiting: int):
        self.max_waiting = max_waiting
        self.stats = Stats()
        self._waiting = 0
        self._running = 0
        self._lock = threading.Lock()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generation")

    def state(self) -> dict:
        with self._lock:
            return {"running": self._running, "waiting": self._waiting, "max_waiting": self.max_waiting}

    def submit(self, produce: Callable[[threading.Event], Iterator]) -> Job:
        """Queue `produce(stop)`, an iterator of chunks run on the model's thread. Raises QueueFull."""
        with self._lock:
            if self._waiting >= self.max_waiting:
                self.stats.rejected += 1
                # The line ahead of a newcomer, at the recent pace of one generation.
                raise QueueFull(max(1, math.ceil(self.stats.mean_seconds() * (self._waiting + 1))))
            self._waiting += 1
        job = Job(asyncio.get_running_loop())
        self._thread.submit(self._run, job, produce)
        return job

    def _run(self, job: Job, produce: Callable[[threading.Event], Iterator]) -> None:
        with self._lock:
            self._waiting -= 1
            self._running += 1
        start = time.perf_counter()
        outcome = "served"
        try:
            if job.stop.is_set():
                outcome = "cancelled"
                return
            for chunk in produce(job.stop):
                job._emit(chunk)
            outcome = "cancelled" if job.stop.is_set() else "served"
        except BaseException as err:  # handed to the request, which answers for it
            outcome = "failed"
            job._emit(err)
        finally:
            with self._lock:
                self._running -= 1
                setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
                if outcome == "served":
                    self.stats.seconds = [*self.stats.seconds[-19:], time.perf_counter() - start]
            job._emit(DONE)
            job.finished.set()

    def shutdown(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
