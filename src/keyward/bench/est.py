"""(e) EST enrollments per second over TLS with keep-alive, against ``keyward est-server``.

The server is the real command (``keyward est-server``: an ``EstServer`` over a ``TcsEstCa`` whose
RSA-3072 CA key is in its own SoftHSM2 token), in its own process as users run it. Clients are
``httpx.AsyncClient``s in this process, each with one keep-alive TLS connection, posting
``/simpleenroll`` with HTTP Basic; the CSRs are made before the clock starts. A run with one client shows
the latency-bound rate, one with 16 the throughput-bound rate, to compare with the raw token rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import ssl
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx
from cryptography import x509

from keyward.bench.csrs import leaf_csr_pems
from keyward.bench.errors import BenchFailed
from keyward.bench.observe import CpuMeter, peak_rss, reset_peak_rss
from keyward.bench.rates import Rate, sustained_rate
from keyward.est import wire

CLIENT_COUNTS = (1, 16)
#: Distinct CSRs the clients cycle through (the server does not care about repeats; the wire does).
CSR_POOL = 64
STARTUP_TIMEOUT = 120.0
_LISTENING = re.compile(r"listening on (https://\S+?/\.well-known/est)/")


@dataclass(frozen=True)
class EstEndpoint:
    base_url: str
    ca_file: Path
    username: str
    password: str
    pid: int
    log_file: Path


@dataclass
class EstRun:
    """Enrollments with some number of clients, and the CPU the server and the clients spent on them."""

    rate: Rate
    server_cpu_seconds: float | None
    client_cpu_seconds: float | None

    def as_dict(self) -> dict[str, object]:
        operations = self.rate.operations
        return {
            **self.rate.as_dict(),
            "server_cpu_ms_per_enrollment": _per_operation_ms(self.server_cpu_seconds, operations),
            "client_cpu_ms_per_enrollment": _per_operation_ms(self.client_cpu_seconds, operations),
            "server_cpu_bound_per_second": self.server_cpu_bound,
        }

    @property
    def server_cpu_bound(self) -> float | None:
        """Enrollments/s all cores would allow at the server's CPU cost per enrollment, were the clients
        on another machine: the server's own ceiling, without the benchmark's share of the cores."""
        if not self.server_cpu_seconds or not self.rate.operations:
            return None
        return round((os.cpu_count() or 1) * self.rate.operations / self.server_cpu_seconds, 1)


def _per_operation_ms(seconds: float | None, operations: int) -> float | None:
    return round(seconds * 1000 / operations, 3) if seconds is not None and operations else None


@dataclass
class EstResult:
    runs: dict[int, EstRun]  # concurrent clients → what they achieved
    server_peak_rss: int | None

    @property
    def rates(self) -> dict[int, Rate]:
        return {clients: run.rate for clients, run in self.runs.items()}

    def as_dict(self) -> dict[str, object]:
        return {
            "clients": {str(clients): run.as_dict() for clients, run in self.runs.items()},
            "server_peak_rss_mib": (
                round(self.server_peak_rss / 2**20, 1) if self.server_peak_rss is not None else None
            ),
        }


@asynccontextmanager
async def est_server_process(state_dir: Path) -> AsyncIterator[EstEndpoint]:
    """``keyward est-server`` with an RSA-3072 CA on a free loopback port, stopped on exit."""
    log_file = state_dir / "est-server.log"
    with _log_file(log_file) as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "keyward",
            "est-server",
            "--state-dir",
            str(state_dir),
            "--listen",
            "127.0.0.1:0",
            "--key-algorithm",
            "RSA-3072",
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
    try:
        try:
            base_url = await asyncio.wait_for(_banner_url(process, log_file), STARTUP_TIMEOUT)
        except TimeoutError:
            raise BenchFailed(
                f"keyward est-server did not listen within {STARTUP_TIMEOUT:.0f}s", f"see its log {log_file}"
            ) from None
        yield EstEndpoint(
            base_url=base_url,
            ca_file=state_dir / "ca.pem",
            username="est",
            password=(state_dir / "est-password").read_text().strip(),
            pid=process.pid,
            log_file=log_file,
        )
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


@contextlib.contextmanager
def _log_file(path: Path) -> Iterator[BinaryIO]:
    """The server's stderr: a file in its state directory (created here, instantly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as log:
        yield log


async def _banner_url(process: asyncio.subprocess.Process, log_file: Path) -> str:
    assert process.stdout is not None
    while True:
        line = await process.stdout.readline()
        if not line:
            raise BenchFailed("keyward est-server exited before listening", f"see its log {log_file}")
        found = _LISTENING.search(line.decode(errors="replace"))
        if found:
            return found.group(1)


class _Enroller:
    """One keep-alive client per concurrent loop; each enrollment must answer 200 with a certificate."""

    def __init__(self, endpoint: EstEndpoint, clients: int, bodies: Sequence[bytes]) -> None:
        context = ssl.create_default_context(cafile=str(endpoint.ca_file))
        self._url = endpoint.base_url + "/simpleenroll"
        self._bodies = bodies
        self._next = 0
        self._idle: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        self._clients = [
            httpx.AsyncClient(
                verify=context,
                auth=httpx.BasicAuth(endpoint.username, endpoint.password),
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                timeout=60.0,
                headers={"Content-Type": wire.PKCS10},
            )
            for _ in range(clients)
        ]
        for client in self._clients:
            self._idle.put_nowait(client)

    async def enroll(self) -> None:
        body = self._bodies[self._next % len(self._bodies)]
        self._next += 1
        client = await self._idle.get()
        try:
            response = await client.post(self._url, content=body)
        finally:
            self._idle.put_nowait(client)
        if response.status_code != 200 or not response.content:
            raise _refused(response)

    async def check_one(self) -> x509.Certificate:
        """A full enrollment whose answer is decoded: proof the benchmark measures real issuance."""
        client = await self._idle.get()
        try:
            response = await client.post(self._url, content=self._bodies[0])
        finally:
            self._idle.put_nowait(client)
        if response.status_code != 200:
            raise _refused(response)
        return wire.decode_certs_only(response.content)[0]

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


def _refused(response: httpx.Response) -> BenchFailed:
    return BenchFailed(
        f"an EST enrollment was answered {response.status_code}: {response.text[:200].strip()!r}",
        "see the log of keyward est-server in the benchmark's state directory (--state-dir)",
    )


def _request_bodies(count: int) -> list[bytes]:
    return [wire.encode_csr(x509.load_pem_x509_csr(pem)) for pem in leaf_csr_pems(count, "est.keyward.test")]


async def est_enrollment(
    endpoint: EstEndpoint, duration: float, client_counts: Sequence[int] = CLIENT_COUNTS
) -> EstResult:
    """Enrollments per second with each number of concurrent keep-alive clients."""
    bodies = _request_bodies(CSR_POOL)
    reset_peak_rss(endpoint.pid)
    runs: dict[int, EstRun] = {}
    for clients in client_counts:
        enroller = _Enroller(endpoint, clients, bodies)
        try:
            # Warm up: open every connection (TLS handshake) and every token worker's session.
            await enroller.check_one()
            await asyncio.gather(*(enroller.enroll() for _ in range(clients)))
            server_cpu, client_cpu = CpuMeter(endpoint.pid), CpuMeter()
            server_cpu.start()
            client_cpu.start()
            rate = await sustained_rate(
                enroller.enroll, concurrency=clients, duration=duration, processes=(endpoint.pid,)
            )
            runs[clients] = EstRun(rate, server_cpu.stop(), client_cpu.stop())
        finally:
            with contextlib.suppress(Exception):
                await enroller.aclose()
    return EstResult(runs, peak_rss(endpoint.pid))
