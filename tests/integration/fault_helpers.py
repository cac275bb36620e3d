"""Faults for the operator to survive: the sandbox's fault plan for one test, what the operator said
(its log and its metrics), a TCP proxy that makes the API unreachable, and a watch that records every
Ready condition an object showed."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import Iterable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from keyward.kube.client import Kube
from keyward.kube.resources import Resource
from keyward.kube.watching import list_and_watch
from keyward.sandbox.apiserver.faults import FaultPlan, FaultRule
from keyward.sandbox.operator_process import OperatorProcess
from tests.integration.helpers import ready_condition

#: The operator's identity in the sandbox (conftest: ServiceAccount keyward bound to the shipped RBAC).
OPERATOR_USER = "system:serviceaccount:keyward-system:keyward"
API_TIMEOUT = 2
#: Seconds a delayed answer takes: past API_TIMEOUT, so the operator gives up on it.
LATE = 4
#: The settings (README) that keep these tests short: a call unanswered for 2 s is given up, a failed
#: write is retried within 1 s, a refused one after 1 s; EST issuers re-check and retry fast.
FAST_RETRIES = {
    "KEYWARD_API_TIMEOUT": str(API_TIMEOUT),
    "KEYWARD_WRITE_BACKOFF_LIMIT": "1",
    "KEYWARD_WRITE_REFUSED_DELAY": "1",
    "KEYWARD_TCS_RECHECK_FAILED": "1",
    "KEYWARD_EST_RECHECK_INTERVAL": "2",
    "KEYWARD_EST_BACKOFF_LIMIT": "1",
}
#: One of each failure a cluster gives a write: cert-manager's webhook failing (500), API priority and
#: fairness (429 without, then with Retry-After), a permission missing (403), content refused (422), and
#: an answer that never comes in time.
EVERY_FAILURE = ("500", "429", "429/1", "403", "422", f"delay={LATE}")


def every_failure(filters: str) -> str:
    """A fault SPEC that fails the writes ``filters`` picks with each failure once, in turn (the first
    write gets the 500, its retry the 429, ...), then lets them through."""
    return ";".join(f"{effect}@{filters},first=1" for effect in EVERY_FAILURE)


class Faults:
    """Rules added to the sandbox's fault plan for one test, and removed after it."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self.rules: list[FaultRule] = []

    def add(self, spec: str) -> list[FaultRule]:
        rules = self.plan.add(spec)
        self.rules += rules
        return rules

    def remove(self) -> None:
        self.plan.rules[:] = [rule for rule in self.plan.rules if rule not in self.rules]
        self.rules.clear()


def fired(rules: Iterable[FaultRule]) -> list[int]:
    return [rule.fired for rule in rules]


class OperatorLog:
    """What an operator process logged after this mark."""

    def __init__(self, process: OperatorProcess) -> None:
        assert process.log_path is not None
        self.path = process.log_path
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def text(self) -> str:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace")


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


async def write_failures(port: int) -> dict[str, float]:
    """``keyward_api_write_failures_total`` by code, from the operator's metrics endpoint."""
    text = await asyncio.to_thread(_scrape, port)
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "keyward_api_write_failures":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["code"]] = sample.value
    return counts


def grown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {
        code: after[code] - before.get(code, 0.0) for code in after if after[code] > before.get(code, 0.0)
    }


class ReadyHistory:
    """Every distinct Ready condition (status, reason, message) the objects of a resource showed, in order,
    as a watch saw them."""

    def __init__(self, kube: Kube, resource: Resource, namespace: str | None) -> None:
        self.by_name: dict[str, list[tuple[str, str, str]]] = {}
        self._watch = asyncio.create_task(list_and_watch(kube, resource, namespace, self._record))

    async def _record(self, kind: str, obj: dict[str, Any]) -> None:
        ready = ready_condition(obj)
        if not ready:
            return
        seen = self.by_name.setdefault(obj["metadata"]["name"], [])
        shown = (str(ready.get("status")), str(ready.get("reason")), str(ready.get("message")))
        if not seen or seen[-1] != shown:
            seen.append(shown)

    def of(self, name: str) -> list[tuple[str, str, str]]:
        return self.by_name.get(name, [])

    def stop(self) -> None:
        self._watch.cancel()


class TcpProxy:
    """127.0.0.1:port → the API server, byte for byte (TLS passes through). ``stop`` makes the API
    unreachable: the listener closes (connections are refused) and every open connection is cut."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connected, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            self._pipes.discard(task)
            return
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            for end in (writer, up_writer):
                end.close()
            self._pipes.discard(task)


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    with contextlib.suppress(OSError, RuntimeError):
        sink.write_eof()
