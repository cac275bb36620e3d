"""(g) EST enrollments by a legitimate client while a flood of idle TLS connections hits the server.

The server is ``keyward est-server`` as in (e). The flood: ``FLOOD_CONNECTIONS`` TLS connections opened
at once, which send nothing and are held as long as the server keeps them; each one the server refuses
or closes is opened again after ``RECONNECT_PAUSE``. It runs in a process of its own (``python -m
keyward.bench.flood``), so that its bursts of failing connections do not delay the legitimate client's
event loop and only the server's delays are measured. Before the server limited connections per client
address, 600 such connections locked every client out for about a minute. The legitimate client, from
another address (127.0.0.2; the server listens on 127.0.0.1), enrolls back to back with HTTP Basic over a
new TLS connection each time, as curl or libest's client would, so that every enrollment has to be
admitted while the flood goes on.

The client first enrolls without a flood (the baseline), then during two floods, each phase for the
benchmark's duration (at least ``MIN_SECONDS``):

- **one address** (127.0.0.1): the per-address limit is what it meets;
- **many addresses** (``SPREAD`` addresses from 127.0.0.10 on): each address stays under its limit, so
  the flood fills each serving process up to its cap, and what it meets is the closing of idle
  connections when the cap is near.

Reported per flood: enrollments, failures, latency p50/p99, and the flood's own figures (connection
attempts, how many were let through, how many it held at the end). Target, during each flood: every
enrollment succeeds and p99 stays under ``TARGET_P99`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from keyward.bench.e2e import percentile
from keyward.bench.errors import BenchFailed
from keyward.bench.est import EstEndpoint, check_enrollment, request_bodies
from keyward.bench.observe import OtherLoad
from keyward.est import wire

FLOOD_CONNECTIONS = 600
RECONNECT_PAUSE = 0.5
SPREAD = 20
LEGITIMATE_ADDRESS = "127.0.0.2"
MIN_SECONDS = 2.0
TARGET_P99 = 1.0
#: The legitimate client's patience per enrollment; a lock-out shows up as failures, not as a hang.
ENROLL_TIMEOUT = 30.0


@dataclass
class FloodRun:
    """One flood and what the legitimate client achieved meanwhile."""

    sources: int
    seconds: float
    latencies: list[float]
    failures: list[str]
    attempts: int
    admitted: int
    held_at_end: int
    other_cpu_cores: float | None = None

    @property
    def enrollments(self) -> int:
        return len(self.latencies)

    @property
    def p99(self) -> float | None:
        return percentile(self.latencies, 99) if self.latencies else None

    @property
    def met(self) -> bool:
        return not self.failures and self.p99 is not None and self.p99 < TARGET_P99

    def as_dict(self) -> dict[str, object]:
        return {
            "flood_source_addresses": self.sources,
            "flood_connections": FLOOD_CONNECTIONS if self.sources else 0,
            "seconds": round(self.seconds, 2),
            "enrollments": self.enrollments,
            "failures": len(self.failures),
            "first_failures": self.failures[:3],
            "enrollments_per_second": round(self.enrollments / self.seconds, 1) if self.seconds else None,
            "latency_p50_seconds": round(percentile(self.latencies, 50), 4) if self.latencies else None,
            "latency_p99_seconds": round(self.p99, 4) if self.p99 is not None else None,
            "latency_max_seconds": round(max(self.latencies), 4) if self.latencies else None,
            "flood_connection_attempts": self.attempts,
            "flood_connections_let_through": self.admitted,
            "flood_connections_held_at_end": self.held_at_end,
            "other_processes_cpu_cores": (
                round(self.other_cpu_cores, 2) if self.other_cpu_cores is not None else None
            ),
        }


@dataclass
class FloodResult:
    runs: list[FloodRun]

    def as_dict(self) -> dict[str, object]:
        return {
            "legitimate_client": f"{LEGITIMATE_ADDRESS}, a new TLS connection per enrollment, HTTP Basic",
            "floods": [run.as_dict() for run in self.runs],
        }


@dataclass
class _Flood:
    """Keeps ``count`` idle TLS connections open from ``sources`` (round robin), reopening closed ones."""

    ca_file: str
    host: str
    port: int
    sources: Sequence[str]
    count: int
    attempts: int = 0
    admitted: int = 0
    held: int = 0
    #: Set once every slot has tried to connect (the first wave is out).
    first_wave: asyncio.Event = field(default_factory=asyncio.Event)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _untried: int = -1

    async def run(self) -> None:
        context = ssl.create_default_context(cafile=self.ca_file)
        self._untried = self.count
        sources = self.sources
        await asyncio.gather(
            *(self._slot(context, self.host, self.port, sources[i % len(sources)]) for i in range(self.count))
        )

    def stop(self) -> None:
        self._stop.set()

    async def _slot(self, context: ssl.SSLContext, host: str, port: int, source: str) -> None:
        while not self._stop.is_set():
            self.attempts += 1
            try:
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context, server_hostname="localhost", local_addr=(source, 0)
                )
            except OSError:
                self._tried()
                await self._pause()
                continue
            self._tried()
            self.admitted += 1
            self.held += 1
            try:
                stopping = asyncio.ensure_future(self._stop.wait())
                closed = asyncio.ensure_future(reader.read())
                await asyncio.wait([stopping, closed], return_when=asyncio.FIRST_COMPLETED)
                for waiting in (stopping, closed):
                    waiting.cancel()
            finally:
                self.held -= 1
                writer.transport.abort()
            await self._pause()

    def _tried(self) -> None:
        self._untried -= 1
        if self._untried == 0:
            self.first_wave.set()

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), RECONNECT_PAUSE)


def _host_and_port(base_url: str) -> tuple[str, int]:
    url = httpx.URL(base_url)
    if url.port is None:
        raise BenchFailed(f"the EST server's URL {base_url} has no port", "this is a bug of keyward bench")
    return url.host, url.port


async def _enroll_while(
    endpoint: EstEndpoint, bodies: Sequence[bytes], seconds: float
) -> tuple[list[float], list[str], float]:
    """Enroll back to back for ``seconds``, a new connection each time: (latencies, failures, seconds)."""
    context = ssl.create_default_context(cafile=str(endpoint.ca_file))
    transport = httpx.AsyncHTTPTransport(
        verify=context, local_address=LEGITIMATE_ADDRESS, limits=httpx.Limits(max_keepalive_connections=0)
    )
    latencies: list[float] = []
    failures: list[str] = []
    started = time.monotonic()
    async with httpx.AsyncClient(transport=transport, timeout=ENROLL_TIMEOUT) as client:
        while time.monotonic() - started < seconds:
            body = bodies[(len(latencies) + len(failures)) % len(bodies)]
            sent = time.monotonic()
            try:
                response = await client.post(
                    endpoint.base_url + "/simpleenroll",
                    content=body,
                    auth=httpx.BasicAuth(endpoint.username, endpoint.password),
                    headers={"Content-Type": wire.PKCS10},
                )
            except httpx.HTTPError as exc:
                failures.append(f"{type(exc).__name__}: {str(exc)[:120]}")
                continue
            if response.status_code != 200:
                failures.append(f"HTTP {response.status_code}: {response.text[:120].strip()}")
                continue
            latencies.append(time.monotonic() - sent)
    return latencies, failures, time.monotonic() - started


async def _one_flood(
    endpoint: EstEndpoint, bodies: Sequence[bytes], sources: Sequence[str], seconds: float
) -> FloodRun:
    host, port = _host_and_port(endpoint.base_url)
    flood = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "keyward.bench.flood", str(endpoint.ca_file), host, str(port), *sources,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert flood.stdin is not None and flood.stdout is not None
    try:
        # The flood's first wave is out (every connection tried once) before the clock starts.
        try:
            ready = await asyncio.wait_for(flood.stdout.readline(), 60)
        except TimeoutError:
            ready = b""
        if ready.strip() != _FIRST_WAVE:
            raise BenchFailed(
                f"(g) the flood did not get going: {ready[-300:]!r}", "this is a bug of keyward bench"
            )
        other = OtherLoad((endpoint.pid, flood.pid))
        other.start()
        latencies, failures, elapsed = await _enroll_while(endpoint, bodies, seconds)
        others = other.stop()
        flood.stdin.close()
        output, _ = await asyncio.wait_for(flood.communicate(), 60)
    finally:
        if flood.returncode is None:
            flood.kill()
            await flood.wait()
    try:
        figures = json.loads(output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchFailed(
            f"(g) the flood's report is missing: {output[-300:]!r}", "this is a bug of keyward bench"
        ) from None
    return FloodRun(
        len(sources),
        elapsed,
        latencies,
        failures,
        figures["attempts"],
        figures["admitted"],
        figures["held"],
        others,
    )


async def _without_flood(endpoint: EstEndpoint, bodies: Sequence[bytes], seconds: float) -> FloodRun:
    other = OtherLoad((endpoint.pid,))
    other.start()
    latencies, failures, elapsed = await _enroll_while(endpoint, bodies, seconds)
    return FloodRun(0, elapsed, latencies, failures, 0, 0, 0, other.stop())


async def enrollments_under_flood(endpoint: EstEndpoint, duration: float) -> FloodResult:
    """(g): the legitimate client's enrollments without a flood (the baseline), then during a
    one-address and a many-address flood."""
    bodies = request_bodies(16)
    await check_enrollment(endpoint, bodies[0])
    seconds = max(duration, MIN_SECONDS)
    spread = [f"127.0.0.{10 + index}" for index in range(SPREAD)]
    runs = [
        await _without_flood(endpoint, bodies, seconds),
        await _one_flood(endpoint, bodies, ["127.0.0.1"], seconds),
        await _one_flood(endpoint, bodies, spread, seconds),
    ]
    return FloodResult(runs)


_FIRST_WAVE = b"first wave out"


async def _flood_until_stdin_closes(ca_file: str, host: str, port: int, sources: Sequence[str]) -> None:
    """The flood process: floods, says when the first wave is out, stops when stdin closes, reports."""
    flood = _Flood(ca_file, host, port, sources, FLOOD_CONNECTIONS)
    flooding = asyncio.create_task(flood.run())
    first_wave = asyncio.create_task(flood.first_wave.wait())
    await asyncio.wait([flooding, first_wave], return_when=asyncio.FIRST_COMPLETED)
    if flooding.done():
        await flooding  # raises what stopped it
    sys.stdout.buffer.write(_FIRST_WAVE + b"\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.buffer.read)
    held = flood.held
    flood.stop()
    await flooding
    print(json.dumps({"attempts": flood.attempts, "admitted": flood.admitted, "held": held}), flush=True)


if __name__ == "__main__":
    ca, flood_host, flood_port, *flood_sources = sys.argv[1:]
    asyncio.run(_flood_until_stdin_closes(ca, flood_host, int(flood_port), flood_sources))
