"""(f) Restart at scale: the operator restarted with N issued CertificateRequests in the cluster.

The N requests are issued first, as in (c) (created and approved by the benchmark, signed by the
operator). Then the operator is stopped (SIGTERM) and started again, and right after its process starts
the benchmark creates and approves one new request. Measured:

- seconds from the new operator process's start to the new request's certificate, seen in a watch;
- re-signs: requests of the N whose resourceVersion or certificate changed across the restart (a
  certificate written again, or any status write to an issued request), from a list before the stop and
  one after the restarted operator went idle;
- the restarted operator's API requests and writes until it went idle (the new request's status write
  and its Event are two writes), its CPU time (with its signing processes) and its peak RSS with its
  signing processes, after it has seen every request.

Targets: no re-sign; the new request signed within ``TARGET_SECONDS`` of the start; peak RSS with the
signing processes at most ``TARGET_RSS_MIB``, after the restart and while the N were issued.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from keyward.bench.csrs import leaf_csr_pem
from keyward.bench.e2e import CertificateRequestDriver, EndToEndResult, issue_all
from keyward.bench.errors import BenchFailed
from keyward.bench.observe import OtherLoad, TreeCpuMeter, cpu_seconds, tree_peak_rss, with_children
from keyward.bench.sandboxed import BenchSandbox, wait_for_object
from keyward.kube.resources import CERTIFICATE_REQUESTS

TARGET_SECONDS = 10.0
TARGET_RSS_MIB = 200.0
NEW_REQUEST = "bench-after-restart"
#: How long the new request may take before the benchmark gives up (the target is far below).
NEW_REQUEST_TIMEOUT = 300.0
#: The restarted operator is idle once its processes used under IDLE_SHARE of a core for IDLE_WINDOW s.
IDLE_SHARE = 0.05
IDLE_WINDOW = 2.0
IDLE_LIMIT = 600.0


@dataclass
class RestartResult:
    existing: int
    fill: EndToEndResult  # issuing the existing requests before the restart
    seconds_to_new_certificate: float
    resigns: int
    seconds_to_idle: float
    operator_api_requests: int
    operator_api_writes: int
    operator_cpu_seconds: float | None
    operator_peak_rss: int | None
    other_cpu_cores: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "existing_requests": self.existing,
            "seconds_to_new_certificate": round(self.seconds_to_new_certificate, 3),
            "resigns": self.resigns,
            "seconds_to_idle": round(self.seconds_to_idle, 2),
            "operator_api_requests": self.operator_api_requests,
            "operator_api_writes": self.operator_api_writes,
            "operator_cpu_seconds": (
                round(self.operator_cpu_seconds, 2) if self.operator_cpu_seconds is not None else None
            ),
            "operator_cpu_ms_per_existing_request": (
                round(self.operator_cpu_seconds * 1000 / self.existing, 3)
                if self.operator_cpu_seconds is not None
                else None
            ),
            "operator_peak_rss_mib": _mib(self.operator_peak_rss),
            "fill_seconds": round(self.fill.seconds, 2),
            "fill_operator_peak_rss_mib": _mib(self.fill.operator_peak_rss),
            "other_processes_cpu_cores": (
                round(self.other_cpu_cores, 2) if self.other_cpu_cores is not None else None
            ),
        }


def _mib(size: int | None) -> float | None:
    return round(size / 2**20, 1) if size is not None else None


Snapshot = dict[str, tuple[str, str]]  # name → (resourceVersion, status.certificate)


async def _snapshot(bench: BenchSandbox) -> Snapshot:
    items = await bench.client.list(CERTIFICATE_REQUESTS, bench.namespace)
    return {
        item["metadata"]["name"]: (
            str(item["metadata"].get("resourceVersion")),
            str((item.get("status") or {}).get("certificate") or ""),
        )
        for item in items
    }


def _tree_cpu(pid: int) -> float:
    return sum(c for member in with_children(pid) if (c := cpu_seconds(member)) is not None)


async def _idle_since(pid: int, started: float) -> float:
    """Seconds from ``started`` until the process tree went idle (see IDLE_SHARE, IDLE_WINDOW)."""
    last, quiet_since = _tree_cpu(pid), None
    while time.perf_counter() - started < IDLE_LIMIT:
        await asyncio.sleep(0.25)
        now, used = time.perf_counter(), _tree_cpu(pid)
        if used - last < IDLE_SHARE * 0.25:
            quiet_since = quiet_since if quiet_since is not None else now - 0.25
            if now - quiet_since >= IDLE_WINDOW:
                return quiet_since - started
        else:
            quiet_since = None
        last = used
    raise BenchFailed(f"(f) the restarted operator did not go idle within {IDLE_LIMIT:.0f}s")


async def restart_at_scale(
    bench: BenchSandbox, existing: int, *, timeout: float, progress: Callable[[str], None]
) -> RestartResult:
    driver = CertificateRequestDriver(bench.namespace, bench.issuer)
    fill = await issue_all(bench, driver, existing, timeout=timeout)
    before = await _snapshot(bench)
    operator = bench.sandbox.operator
    if operator is None:
        raise RuntimeError("the sandbox has no operator process")
    progress(f"(f) {len(before)} issued CertificateRequests; restarting the operator ...")
    await operator.stop()
    pem = leaf_csr_pem(f"{NEW_REQUEST}.bench.keyward.test")
    server_before = bench.sandbox.api.request_counts()
    own_before = (bench.counted.requests, bench.counted.writes)
    started = time.perf_counter()
    await operator.start()
    pid = bench.operator_pid
    cpu, other = TreeCpuMeter(pid), OtherLoad((pid,))
    cpu.start()
    other.start()
    created = await driver.create(bench.client, NEW_REQUEST, pem)
    await driver.approve(bench.client, created)
    outcome: list[str] = []

    def decided(obj: Mapping[str, Any]) -> bool:
        result = driver.outcome(obj)
        if result is not None:
            outcome.append(result)
        return result is not None

    try:
        await wait_for_object(
            bench.client,
            CERTIFICATE_REQUESTS,
            bench.namespace,
            NEW_REQUEST,
            decided,
            timeout=NEW_REQUEST_TIMEOUT,
        )
    except TimeoutError:
        raise BenchFailed(
            f"(f) the request made after the restart was not issued within {NEW_REQUEST_TIMEOUT:.0f}s",
            f"see the operator log {bench.operator_log()}",
        ) from None
    issued = time.perf_counter() - started
    if outcome[-1] != "issued":
        raise BenchFailed(f"(f) the request made after the restart: {outcome[-1]}")
    idle = await _idle_since(pid, started)
    cpu.stop()
    other_cores = other.stop()
    peak = tree_peak_rss(pid)
    server_after = bench.sandbox.api.request_counts()
    own = (bench.counted.requests - own_before[0], bench.counted.writes - own_before[1])
    after = await _snapshot(bench)
    resigns = sum(1 for name, seen in before.items() if after.get(name) != seen)
    return RestartResult(
        existing=len(before),
        fill=fill,
        seconds_to_new_certificate=issued,
        resigns=resigns,
        seconds_to_idle=idle,
        operator_api_requests=server_after["requests"] - server_before["requests"] - own[0],
        operator_api_writes=server_after["writes"] - server_before["writes"] - own[1],
        operator_cpu_seconds=cpu.seconds,
        operator_peak_rss=peak,
        other_cpu_cores=other_cores,
    )
