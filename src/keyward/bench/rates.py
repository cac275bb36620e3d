"""Sustained rates: run a job back to back from several concurrent loops for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    """``operations`` completed in ``seconds`` of wall-clock time."""

    operations: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.operations / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "operations": self.operations,
            "seconds": round(self.seconds, 3),
            "per_second": round(self.per_second, 1),
        }


@dataclass(frozen=True)
class SplitRate:
    """The same job with one job at a time and with ``workers`` at a time (one per core)."""

    one_worker: Rate
    all_cores: Rate
    workers: int

    @property
    def scaling(self) -> float:
        """How many times the one-worker rate all cores reach."""
        return self.all_cores.per_second / self.one_worker.per_second if self.one_worker.operations else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "one_worker": self.one_worker.as_dict(),
            "all_cores": self.all_cores.as_dict(),
            "workers": self.workers,
            "scaling": round(self.scaling, 2),
        }


async def sustained_rate(job: Callable[[], Awaitable[object]], *, concurrency: int, duration: float) -> Rate:
    """Run ``job`` from ``concurrency`` loops, each starting again as soon as its last call returned.

    Loops stop starting new calls at the deadline; the rate counts every call that finished and the time
    until the last one did, so a slow last call lowers the rate instead of being dropped. One call per
    loop always runs, so a tiny ``duration`` still measures something.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    completed = 0
    started = time.perf_counter()
    deadline = started + duration

    async def loop() -> None:
        nonlocal completed
        while True:
            await job()
            completed += 1
            if time.perf_counter() >= deadline:
                return

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return Rate(completed, time.perf_counter() - started)


async def split_rate(job: Callable[[], Awaitable[object]], *, workers: int, duration: float) -> SplitRate:
    """``job``'s rate one at a time, then ``workers`` at a time, each for ``duration`` seconds."""
    # Warm up every pool thread (its first call opens a session and looks the key handle up).
    await asyncio.gather(*(job() for _ in range(workers)))
    one = await sustained_rate(job, concurrency=1, duration=duration)
    many = await sustained_rate(job, concurrency=workers, duration=duration)
    return SplitRate(one, many, workers)
