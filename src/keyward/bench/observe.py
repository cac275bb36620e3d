"""What the end-to-end benchmark observes besides time: our own API calls, and a process's peak memory.

The sandbox API counts every request it serves; the benchmark's own calls are counted here, on the
client side, so that the operator's share is the difference. Peak RSS is the kernel's high-water mark
(VmHWM), reset before each run so that one run's peak does not hide in the next.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class CountingApi:
    """Wraps a kr8s API object and counts the requests made through it (``Kube`` and watches use
    ``call_api`` for everything)."""

    def __init__(self, api: Any) -> None:
        self._api = api
        self.requests = 0
        self.writes = 0
        self.watches = 0

    def call_api(self, method: str = "GET", **kwargs: Any) -> Any:
        self.requests += 1
        if method.upper() in WRITE_METHODS:
            self.writes += 1
        if (kwargs.get("params") or {}).get("watch"):
            self.watches += 1
        return self._api.call_api(method, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)


def _status_field(pid: int, field: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status, in bytes; None if the process or field is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return None


def peak_rss(pid: int) -> int | None:
    """The process's peak resident set size since start or since ``reset_peak_rss`` (VmHWM), in bytes."""
    return _status_field(pid, "VmHWM")


def current_rss(pid: int) -> int | None:
    return _status_field(pid, "VmRSS")


def with_children(pid: int) -> list[int]:
    """``pid`` and its child processes (the operator's signing processes), from /proc."""
    found = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(child) for child in (task / "children").read_text().split()]
    return found


def tree_peak_rss(pid: int) -> int | None:
    """The peak RSS of ``pid`` plus that of each of its children (an upper bound of their sum)."""
    peaks = [peak_rss(member) for member in with_children(pid)]
    return sum(peak for peak in peaks if peak is not None) if peaks[0] is not None else None


def reset_tree_peak_rss(pid: int) -> None:
    for member in with_children(pid):
        reset_peak_rss(member)


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (``5`` to clear_refs, Linux 4.0+); False when not permitted."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    return False


def cpu_seconds(pid: int | None = None) -> float | None:
    """CPU time (user + system, all threads) of process ``pid``, or of this process when None."""
    if pid is None:
        return time.process_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After "pid (comm)": state is field 3, utime field 14, stime field 15 (proc(5)).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """How many cores processes other than ours kept busy during a run (this machine is shared).

    Ours are this process and ``pids`` with their children (signing processes). A high value means the
    run competed for the cores and its numbers are low; the report shows it next to each result.
    """

    def __init__(self, pids: tuple[int, ...] = ()) -> None:
        self._meters: list[CpuMeter | TreeCpuMeter] = [CpuMeter(None), *(TreeCpuMeter(pid) for pid in pids)]
        self._machine: float | None = None
        self._wall = 0.0

    def start(self) -> None:
        for meter in self._meters:
            meter.start()
        self._machine = machine_busy_seconds()
        self._wall = time.monotonic()

    def stop(self) -> float | None:
        """Cores' worth of CPU the other processes used, averaged over the run."""
        machine = machine_busy_seconds()
        wall = time.monotonic() - self._wall
        ours = [meter.stop() for meter in self._meters]
        if machine is None or self._machine is None or wall <= 0 or any(o is None for o in ours):
            return None
        other = machine - self._machine - sum(o for o in ours if o is not None)
        return max(0.0, other / wall)


class TreeCpuMeter:
    """CPU seconds a process and its children spend between ``start`` and ``stop``; a child that starts
    meanwhile counts in full."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._started: dict[int, float] = {}
        self.seconds: float | None = None

    def start(self) -> None:
        self._started = {m: c for m in with_children(self.pid) if (c := cpu_seconds(m)) is not None}

    def stop(self) -> float | None:
        now = {m: c for m in with_children(self.pid) if (c := cpu_seconds(m)) is not None}
        if self.pid in now and self.pid in self._started:
            self.seconds = sum(c - self._started.get(m, 0.0) for m, c in now.items())
        return self.seconds


@dataclass
class CpuMeter:
    """CPU seconds a process spends between ``start`` and ``stop``: who used the cores during a run."""

    pid: int | None = None
    _started: float | None = None
    seconds: float | None = None

    def start(self) -> None:
        self._started = cpu_seconds(self.pid)

    def stop(self) -> float | None:
        now = cpu_seconds(self.pid)
        if now is not None and self._started is not None:
            self.seconds = now - self._started
        return self.seconds
