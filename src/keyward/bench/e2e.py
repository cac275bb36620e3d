"""(c)/(d) Issuance end to end: N approved requests created at once, until every one is issued.

The CSRs are generated before the clock starts. Each request is created and approved by the benchmark
(as cert-manager's approver or a Kubernetes approver would), then a watch records when its certificate
appears. Latency is from sending the approval to seeing the certificate; throughput is N over the time
from the first create to the last certificate. API requests and writes per issuance are the operator's:
everything the sandbox API served meanwhile, minus the benchmark's own calls (counted client side).
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from keyward.bench.csrs import leaf_csr_pems
from keyward.bench.errors import BenchFailed
from keyward.bench.observe import CpuMeter, OtherLoad, TreeCpuMeter, reset_tree_peak_rss, tree_peak_rss
from keyward.bench.sandboxed import BenchSandbox, condition_true
from keyward.kube.client import Kube
from keyward.kube.resources import CERTIFICATE_REQUESTS, CSRS, Resource
from keyward.kube.watching import list_and_watch

#: Requests in flight from the benchmark client at once: "all at once", without a thousand sockets.
SUBMIT_CONCURRENCY = 64
#: Read the API counts once no request came for SETTLE_QUIET s (at most SETTLE_LIMIT s after the end).
SETTLE_QUIET = 1.0
SETTLE_LIMIT = 30.0
APPROVAL = {"type": "Approved", "status": "True", "reason": "KeywardBench", "message": "approved by bench"}


class RequestDriver(Protocol):
    """How the benchmark creates, approves and judges one kind of request."""

    resource: Resource
    noun: str

    async def create(self, kube: Kube, name: str, pem: bytes) -> dict[str, Any]: ...
    async def approve(self, kube: Kube, created: dict[str, Any]) -> None: ...
    def outcome(self, obj: Mapping[str, Any]) -> str | None:
        """Return "issued", a failure message, or None while the request is undecided."""
        ...


class CertificateRequestDriver:
    resource = CERTIFICATE_REQUESTS
    noun = "CertificateRequest"

    def __init__(self, namespace: str, issuer: str) -> None:
        self.namespace = namespace
        self.issuer = issuer

    async def create(self, kube: Kube, name: str, pem: bytes) -> dict[str, Any]:
        spec = {
            "request": base64.b64encode(pem).decode(),
            "issuerRef": {"group": "tcs.intel.com", "kind": "TCSIssuer", "name": self.issuer},
        }
        body = {"metadata": {"name": name, "namespace": self.namespace}, "spec": spec}
        return await kube.create(self.resource, body, self.namespace)

    async def approve(self, kube: Kube, created: dict[str, Any]) -> None:
        name = created["metadata"]["name"]
        patch = {"status": {"conditions": [dict(APPROVAL, lastTransitionTime=_now_rfc3339())]}}
        await kube.patch(self.resource, name, patch, self.namespace, subresource="status")

    def outcome(self, obj: Mapping[str, Any]) -> str | None:
        for condition in (obj.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Ready":
                if condition.get("status") == "True":
                    return "issued"
                if condition.get("reason") in ("Failed", "Denied"):
                    return f"{condition.get('reason')}: {condition.get('message')}"
        return None


class CsrDriver:
    resource = CSRS
    noun = "CertificateSigningRequest"

    def __init__(self, signer_name: str) -> None:
        self.signer_name = signer_name

    async def create(self, kube: Kube, name: str, pem: bytes) -> dict[str, Any]:
        spec = {
            "request": base64.b64encode(pem).decode(),
            "signerName": self.signer_name,
            "usages": ["digital signature", "key encipherment", "server auth"],
        }
        return await kube.create(self.resource, {"metadata": {"name": name}, "spec": spec})

    async def approve(self, kube: Kube, created: dict[str, Any]) -> None:
        body = dict(created)
        body["status"] = {"conditions": [dict(APPROVAL, lastUpdateTime=_now_rfc3339())]}
        await kube.replace(self.resource, body, subresource="approval")

    def outcome(self, obj: Mapping[str, Any]) -> str | None:
        if (obj.get("status") or {}).get("certificate"):
            return "issued"
        if condition_true(obj, "Failed"):
            failed = [c for c in obj["status"]["conditions"] if c.get("type") == "Failed"]
            return f"Failed: {failed[0].get('message')}"
        return None


@dataclass
class EndToEndResult:
    kind: str
    requests: int
    seconds: float  # first create sent → last certificate seen
    submit_seconds: float  # first create sent → last approval answered
    latencies: Sequence[float] = field(repr=False)
    operator_api_requests: int
    operator_api_writes: int
    operator_peak_rss: int | None
    operator_cpu_seconds: float | None = None  # the operator process, first create → last issued
    sandbox_cpu_seconds: float | None = None  # this process: API server, stand-in and benchmark client
    other_cpu_cores: float | None = None  # what other processes used meanwhile (see OtherLoad)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def writes_per_issuance(self) -> float:
        return self.operator_api_writes / self.requests

    @property
    def requests_per_issuance(self) -> float:
        return self.operator_api_requests / self.requests

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "per_second": round(self.per_second, 1),
            "submit_seconds": round(self.submit_seconds, 3),
            "latency_p50_seconds": round(percentile(self.latencies, 50), 3),
            "latency_p99_seconds": round(percentile(self.latencies, 99), 3),
            "operator_api_requests": self.operator_api_requests,
            "operator_api_writes": self.operator_api_writes,
            "api_requests_per_issuance": round(self.requests_per_issuance, 2),
            "api_writes_per_issuance": round(self.writes_per_issuance, 2),
            "operator_peak_rss_mib": (
                round(self.operator_peak_rss / 2**20, 1) if self.operator_peak_rss is not None else None
            ),
            "operator_cpu_ms_per_issuance": _per_request_ms(self.operator_cpu_seconds, self.requests),
            "sandbox_process_cpu_ms_per_issuance": _per_request_ms(self.sandbox_cpu_seconds, self.requests),
            "other_processes_cpu_cores": (
                round(self.other_cpu_cores, 2) if self.other_cpu_cores is not None else None
            ),
        }


def _per_request_ms(seconds: float | None, requests: int) -> float | None:
    return round(seconds * 1000 / requests, 3) if seconds is not None else None


def percentile(values: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile (the smallest value with ``percent``% of values at or below it)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


class _Tracker:
    """Records when each of our requests is first seen issued; stops at the first failure."""

    def __init__(self, driver: RequestDriver, names: Sequence[str]) -> None:
        self.driver = driver
        self.waiting = set(names)
        self.issued_at: dict[str, float] = {}
        self.failure: str | None = None
        self.finished = asyncio.Event()

    async def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj.get("metadata", {}).get("name", "")
        if kind == "DELETED" or name not in self.waiting:
            return
        outcome = self.driver.outcome(obj)
        if outcome is None:
            return
        if outcome != "issued":
            self.failure = f"{self.driver.noun} {name}: {outcome}"
            self.finished.set()
            return
        self.waiting.discard(name)
        self.issued_at[name] = time.perf_counter()
        if not self.waiting:
            self.finished.set()


async def issue_all(
    bench: BenchSandbox, driver: RequestDriver, count: int, *, timeout: float
) -> EndToEndResult:
    """Create and approve ``count`` requests at once and wait until all are issued."""
    run = f"{int(time.time() * 1000) % 10**8:08d}"
    names = [f"bench-{run}-{index:05d}" for index in range(count)]
    pems = leaf_csr_pems(count)
    tracker = _Tracker(driver, names)
    namespace = bench.namespace if driver.resource.namespaced else None
    watcher = asyncio.create_task(list_and_watch(bench.client, driver.resource, namespace, tracker.on_event))
    try:
        await _until(lambda: bench.counted.watches > 0, timeout=30, what="the benchmark's watch to start")
        pid = bench.operator_pid
        reset_tree_peak_rss(pid)
        server_before = bench.sandbox.api.request_counts()
        own_before = (bench.counted.requests, bench.counted.writes)
        approved_at: dict[str, float] = {}
        gate = asyncio.Semaphore(SUBMIT_CONCURRENCY)

        async def submit(name: str, pem: bytes) -> None:
            async with gate:
                created = await driver.create(bench.client, name, pem)
                approved_at[name] = time.perf_counter()
                await driver.approve(bench.client, created)

        operator_cpu, own_cpu, other = TreeCpuMeter(pid), CpuMeter(), OtherLoad((pid,))
        operator_cpu.start()
        own_cpu.start()
        other.start()
        started = time.perf_counter()
        await asyncio.gather(*(submit(name, pem) for name, pem in zip(names, pems, strict=True)))
        submitted = time.perf_counter()
        try:
            await asyncio.wait_for(tracker.finished.wait(), timeout)
        except TimeoutError:
            raise BenchFailed(
                f"{len(tracker.waiting)} of {count} {driver.noun}s were not issued within {timeout:.0f}s",
                f"see the operator log {bench.operator_log()}",
            ) from None
        if tracker.failure:
            raise BenchFailed(
                f"issuance failed: {tracker.failure}", f"see the operator log {bench.operator_log()}"
            )
        operator_cpu.stop()
        own_cpu.stop()
        other_cores = other.stop()
        server_after = await _settled_counts(bench)
        peak = tree_peak_rss(pid)  # after the trailing Events too; with the signing processes
        own_requests = bench.counted.requests - own_before[0]
        own_writes = bench.counted.writes - own_before[1]
        return EndToEndResult(
            kind=driver.noun,
            requests=count,
            seconds=max(tracker.issued_at.values()) - started,
            submit_seconds=submitted - started,
            latencies=[tracker.issued_at[name] - approved_at[name] for name in names],
            operator_api_requests=server_after["requests"] - server_before["requests"] - own_requests,
            operator_api_writes=server_after["writes"] - server_before["writes"] - own_writes,
            operator_peak_rss=peak,
            operator_cpu_seconds=operator_cpu.seconds,
            sandbox_cpu_seconds=own_cpu.seconds,
            other_cpu_cores=other_cores,
        )
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def _settled_counts(bench: BenchSandbox) -> dict[str, int]:
    """The API's request counts once the operator has gone quiet: its Events trail its status writes
    (kopf posts them from a queue), and they belong to this run, not the next."""
    deadline = time.monotonic() + SETTLE_LIMIT
    counts = bench.sandbox.api.request_counts()
    quiet_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < SETTLE_QUIET:
        await asyncio.sleep(0.05)
        latest = bench.sandbox.api.request_counts()
        if latest != counts:
            counts, quiet_since = latest, time.monotonic()
    return counts


async def _until(check: Any, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BenchFailed(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.01)


def _now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def request_driver(kind: str, bench: BenchSandbox) -> RequestDriver:
    """``certificaterequests`` (c) or ``csrs`` (d), against the sandbox's benchmark issuer."""
    if kind == "certificaterequests":
        return CertificateRequestDriver(bench.namespace, bench.issuer)
    if kind == "csrs":
        return CsrDriver(bench.signer_name)
    raise ValueError(f"unknown request kind {kind!r}")
