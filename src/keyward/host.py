"""Facts of the host a keyward process runs on, and running until a signal.

Usable cores (CPU affinity and the container's CPU limit), how many child processes to start per core,
listen addresses, and running a long-lived coroutine until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyward.errors import UserError

#: Most signing processes an operator may ask for (each is an interpreter with a token session).
MAX_SIGNING_PROCESSES = 64
#: Most signing processes by default: eight issue thousands of certificates a second, and each costs
#: ≈ 40 MiB of memory.
DEFAULT_MAX_SIGNING_PROCESSES = 8
#: Where the container's CPU limit is (cgroup v2 ``cpu.max``, or v1 ``cpu/cpu.cfs_quota_us``).
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, *, what: str) -> ListenAddress:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise UserError(f"{what} address {text!r} is not HOST:PORT", f"write it like 0.0.0.0:{8443}")
        return cls(host.strip("[]") or "0.0.0.0", int(port))  # noqa: S104 - a listen default

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def processes_per_core() -> int:
    """How many signing processes (the operator) or serving processes (``keyward est-server``) to run by
    default: one per usable core, at most eight; none on one core, where a process cannot add anything."""
    cores = usable_cores()
    return min(cores, DEFAULT_MAX_SIGNING_PROCESSES) if cores > 1 else 0


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by the container's CPU limit (rounded
    up). ``os.cpu_count()`` counts the node's cores, which in a pod with a CPU limit can be many times
    what it may use, and every signing process costs memory."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota(CGROUP_ROOT)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return cores


def _cgroup_cpu_quota(root: Path) -> float | None:
    """The CPU limit in cores, or None when there is none (or no cgroup to read)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


async def until_signalled(main: Coroutine[Any, Any, None]) -> None:
    """Cancel ``main`` on SIGINT/SIGTERM, so its ``finally`` blocks close tokens and servers cleanly."""
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def cancel(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel ``tasks`` (None: none) and wait until each has ended."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def run_until_signalled(main: Coroutine[Any, Any, None]) -> None:
    asyncio.run(until_signalled(main))
