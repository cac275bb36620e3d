"""(e) EST enrollments per second over TLS with keep-alive, against ``keyward est-server``.

The server is the real command (``keyward est-server``: an ``EstServer`` over a ``TcsEstCa`` whose
RSA-3072 CA key is in its own SoftHSM2 token), as users run it: its own process, serving from one process
per core (``keyward.estserver.workers``), whose CPU is counted with the parent's. The clients are
``wrk`` (Debian's HTTP load generator, in C) with one keep-alive TLS connection per client, posting
``/simpleenroll`` with HTTP Basic; the CSRs are made before the clock starts. ``wrk`` needs a few
percent of a core where Python clients needed a fifth of the server's CPU, so on a two-core machine
the server gets the cores it would have with its clients elsewhere. A run with one client shows the
latency-bound rate, one with 16 the throughput-bound rate.

The raw RSA-3072 token rate it is judged against is measured in the same slices of time: raw signing
(all cores, this process's own token) and enrollments take turns, so a change of the machine's speed
during the run hits both alike.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import re
import resource
import shutil
import ssl
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from cryptography import x509

from keyward.bench.csrs import leaf_csr_pems
from keyward.bench.errors import BenchFailed
from keyward.bench.observe import OtherLoad, TreeCpuMeter, reset_tree_peak_rss, tree_peak_rss
from keyward.bench.rates import ROUNDS, Job, Rate, combined, sustained_rate
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
    client_cpu_seconds: float | None  # wrk's own
    latency_p50: float | None = None  # seconds, the worst slice's
    latency_p99: float | None = None

    def as_dict(self) -> dict[str, object]:
        operations = self.rate.operations
        return {
            **self.rate.as_dict(),
            "latency_p50_seconds": _rounded(self.latency_p50, 4),
            "latency_p99_seconds": _rounded(self.latency_p99, 4),
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


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _per_operation_ms(seconds: float | None, operations: int) -> float | None:
    return round(seconds * 1000 / operations, 3) if seconds is not None and operations else None


@dataclass
class EstResult:
    runs: dict[int, EstRun]  # concurrent clients → what they achieved
    server_peak_rss: int | None
    reference: Rate  # raw RSA-3072 token signatures, all cores, in the same slices of time

    @property
    def rates(self) -> dict[int, Rate]:
        return {clients: run.rate for clients, run in self.runs.items()}

    def as_dict(self) -> dict[str, object]:
        return {
            "load_generator": "wrk",
            "raw_rsa3072_token_per_second_all_cores": round(self.reference.per_second, 1),
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
            ca_file=state_dir / "tls-ca.pem",  # the server's TLS CA (ca.pem is the enrollment CA)
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


def _lua_string(text: str) -> str:
    """A Lua long string; base64 and our header values never contain ``]]``."""
    if "]]" in text:
        raise ValueError("text for a Lua long string must not contain ']]'")
    return f"[[{text}]]"


def wrk_script(bodies: Sequence[bytes], username: str, password: str) -> str:
    """wrk's Lua script: POST the bodies in turn with Basic auth, and print a JSON summary at the end.

    The credentials live in this script (written 0600), not on wrk's command line, where any local
    user could read them in ``ps``.
    """
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    listed = ",\n".join(_lua_string(body.decode("ascii")) for body in bodies)
    return f"""-- written by keyward bench (e); holds a credential: keep it private
local bodies = {{
{listed}
}}
local headers = {{
  ["Content-Type"] = {_lua_string(wire.PKCS10)},
  ["Authorization"] = {_lua_string("Basic " + token)},
}}
local sent = 0
request = function()
  sent = sent + 1
  return wrk.format("POST", nil, headers, bodies[(sent % #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{_WRK_MARK} {{"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


_WRK_MARK = "KEYWARD-WRK"
#: A certs-only answer with one RSA-3072-signed certificate is over a kilobyte of base64; less means
#: the server answered something else than certificates.
_MIN_ANSWER_BYTES = 1000


@dataclass(frozen=True)
class WrkRun:
    """What one ``wrk`` run reports, and the CPU it used itself."""

    requests: int
    seconds: float
    bytes: int
    errors: dict[str, int]
    latency_p50: float
    latency_p99: float
    cpu_seconds: float


def find_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise BenchFailed(
            "(e) needs wrk, the HTTP load generator, and it is not installed",
            "install it with 'apt-get install wrk' (make setup does)",
        )
    return found


async def run_wrk(endpoint: EstEndpoint, script: Path, clients: int, seconds: int) -> WrkRun:
    """``wrk`` with ``clients`` keep-alive connections for ``seconds``; every answer must be a 200."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = await asyncio.create_subprocess_exec(
        find_wrk(),
        "--threads",
        "1",
        "--connections",
        str(clients),
        "--duration",
        f"{seconds}s",
        "--timeout",
        "60s",
        "--script",
        str(script),
        endpoint.base_url + "/simpleenroll",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = output.decode(errors="replace")
    found = re.search(_WRK_MARK + r" (\{.*\})", text)
    if process.returncode != 0 or found is None:
        raise BenchFailed(
            f"wrk failed (exit {process.returncode}): {text.strip()[-300:]}", f"its script is {script}"
        )
    summary: dict[str, Any] = json.loads(found.group(1))
    errors = {name: int(summary[name]) for name in ("connect", "read", "write", "status", "timeout")}
    requests = int(summary["requests"])
    if any(errors.values()) or requests == 0 or summary["bytes"] < requests * _MIN_ANSWER_BYTES:
        raise BenchFailed(
            f"EST enrollments under load did not all succeed: {requests} requests, errors {errors}",
            f"see the log of keyward est-server: {endpoint.log_file}",
        )
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return WrkRun(
        requests=requests,
        seconds=summary["duration_us"] / 1e6,
        bytes=int(summary["bytes"]),
        errors=errors,
        latency_p50=summary["p50_us"] / 1e6,
        latency_p99=summary["p99_us"] / 1e6,
        cpu_seconds=cpu,
    )


async def check_enrollment(endpoint: EstEndpoint, body: bytes) -> x509.Certificate:
    """One enrollment by a second, independent client, its answer decoded: proof that what ``wrk`` counts
    is real issuance."""
    context = ssl.create_default_context(cafile=str(endpoint.ca_file))
    async with httpx.AsyncClient(verify=context, timeout=60.0) as client:
        response = await client.post(
            endpoint.base_url + "/simpleenroll",
            content=body,
            auth=httpx.BasicAuth(endpoint.username, endpoint.password),
            headers={"Content-Type": wire.PKCS10},
        )
    if response.status_code != 200:
        raise BenchFailed(
            f"an EST enrollment was answered {response.status_code}: {response.text[:200].strip()!r}",
            f"see the log of keyward est-server: {endpoint.log_file}",
        )
    return wire.decode_certs_only(response.content)[0]


def request_bodies(count: int) -> list[bytes]:
    return [wire.encode_csr(x509.load_pem_x509_csr(pem)) for pem in leaf_csr_pems(count, "est.keyward.test")]


def _slice_seconds(duration: float, rounds: int) -> int:
    """wrk runs for whole seconds; each slice is at least one."""
    return max(1, math.ceil(duration / rounds))


@dataclass
class _Measured:
    rates: list[Rate]
    server_cpu: float
    client_cpu: float
    latency_p50: list[float]
    latency_p99: list[float]


async def est_enrollment(
    endpoint: EstEndpoint,
    duration: float,
    raw_signature: Job,
    workers: int,
    client_counts: Sequence[int] = CLIENT_COUNTS,
    rounds: int = ROUNDS,
) -> EstResult:
    """Enrollments per second with each number of concurrent keep-alive clients, taking turns with the
    raw token signing rate (``raw_signature`` from ``workers`` loops) in ``rounds`` slices each."""
    find_wrk()
    script = endpoint.log_file.parent / "wrk-enroll.lua"
    bodies = request_bodies(CSR_POOL)
    script.touch(mode=0o600)
    script.chmod(0o600)  # a reused --state-dir may hold the file with a looser mode
    script.write_text(wrk_script(bodies, endpoint.username, endpoint.password))
    await check_enrollment(endpoint, bodies[0])
    seconds = _slice_seconds(duration, rounds)
    reset_tree_peak_rss(endpoint.pid)
    measured = {clients: _Measured([], 0.0, 0.0, [], []) for clients in client_counts}
    reference: list[Rate] = []
    for _ in range(rounds):
        reference.append(await sustained_rate(raw_signature, concurrency=workers, duration=seconds))
        for clients in client_counts:
            server_cpu, other = TreeCpuMeter(endpoint.pid), OtherLoad((endpoint.pid,))
            server_cpu.start()
            other.start()
            run = await run_wrk(endpoint, script, clients, seconds)
            others = other.stop()
            row = measured[clients]
            row.server_cpu += server_cpu.stop() or 0.0
            row.client_cpu += run.cpu_seconds
            row.latency_p50.append(run.latency_p50)
            row.latency_p99.append(run.latency_p99)
            # wrk is a child of this process but not one of "ours" for OtherLoad: take its share out.
            other_cores = None if others is None else max(0.0, others - run.cpu_seconds / run.seconds)
            row.rates.append(Rate(run.requests, run.seconds, other_cores))
    runs = {
        clients: EstRun(
            combined(row.rates),
            row.server_cpu,
            row.client_cpu,
            latency_p50=max(row.latency_p50),
            latency_p99=max(row.latency_p99),
        )
        for clients, row in measured.items()
    }
    return EstResult(runs, tree_peak_rss(endpoint.pid), combined(reference))
