"""Sustained rates: run a job back to back from several concurrent loops for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from keyward.bench.observe import OtherLoad

Job = Callable[[], Awaitable[object]]
#: Slices each micro-benchmark's time is cut into, alternating between the jobs compared.
ROUNDS = 3


@dataclass(frozen=True)
class Rate:
    """``operations`` completed in ``seconds`` of wall-clock time."""

    operations: int
    seconds: float
    other_cpu_cores: float | None = None  # what other processes used meanwhile (see OtherLoad)

    @property
    def per_second(self) -> float:
        return self.operations / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "operations": self.operations,
            "seconds": round(self.seconds, 3),
            "per_second": round(self.per_second, 1),
            "other_processes_cpu_cores": (
                round(self.other_cpu_cores, 2) if self.other_cpu_cores is not None else None
            ),
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


async def sustained_rate(
    job: Job,
    *,
    concurrency: int,
    duration: float,
    processes: tuple[int, ...] = (),
) -> Rate:
    """Run ``job`` from ``concurrency`` loops, each starting again as soon as its last call returned.

    Loops stop starting new calls at the deadline; the rate counts every call that finished and the time
    until the last one did, so a slow last call lowers the rate instead of being dropped. One call per
    loop always runs, so a tiny ``duration`` still measures something. ``processes`` are the pids that
    take part besides this one (a server), so that only the rest counts as other load.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    completed = 0
    other = OtherLoad(processes)
    other.start()
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
    elapsed = time.perf_counter() - started
    return Rate(completed, elapsed, other.stop())


def combined(rates: Sequence[Rate]) -> Rate:
    """Several measurements of the same job as one: operations and seconds add up."""
    seconds = sum(rate.seconds for rate in rates)
    others = [rate.other_cpu_cores for rate in rates]
    other = None
    if seconds > 0 and all(value is not None for value in others):
        other = sum((rate.other_cpu_cores or 0.0) * rate.seconds for rate in rates) / seconds
    return Rate(sum(rate.operations for rate in rates), seconds, other)


async def interleaved_split_rates(
    jobs: Mapping[str, Job],
    *,
    workers: int,
    duration: float,
    rounds: int = ROUNDS,
    processes: Callable[[], tuple[int, ...]] = tuple,
) -> dict[str, SplitRate]:
    """Each job's rate one at a time, then ``workers`` at a time, ``duration`` seconds each.

    The jobs take turns in ``rounds`` short slices (a b a b ...) rather than one after the other, so
    that a burst of load from another process on a shared machine hits them alike and their ratio,
    which is what the targets judge, stays fair. ``processes`` names the processes that run the jobs
    (signing processes, started by the warm-up), so that their work is not counted as other load.
    """
    for job in jobs.values():
        # Warm up every pool thread (its first call opens a session and looks the key handle up).
        await asyncio.gather(*(job() for _ in range(workers)))
    slice_seconds = duration / rounds
    results: dict[str, SplitRate] = {}
    measured: dict[tuple[str, int], list[Rate]] = {}
    for concurrency in dict.fromkeys((1, workers)):  # once on a one-core machine
        for _ in range(rounds):
            for name, job in jobs.items():
                rate = await sustained_rate(
                    job, concurrency=concurrency, duration=slice_seconds, processes=processes()
                )
                measured.setdefault((name, concurrency), []).append(rate)
    for name in jobs:
        results[name] = SplitRate(combined(measured[(name, 1)]), combined(measured[(name, workers)]), workers)
    return results
