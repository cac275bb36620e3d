"""The sandbox the end-to-end benchmarks run in: API emulation, stand-in and a real operator process.

The API server, the cert-manager stand-in and the benchmark's client share this process's event loop;
the operator is a separate process (``keyward operator``), as in a cluster, so its memory and its share
of the cores are its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyward.bench.observe import CountingApi
from keyward.errors import UserError
from keyward.kube.client import Kube
from keyward.kube.resources import TCS_ISSUERS, Resource
from keyward.kube.watching import list_and_watch
from keyward.sandbox.runner import Sandbox, SandboxOptions

NAMESPACE = "keyward-bench"
ISSUER = "bench-ca"
ISSUER_READY_TIMEOUT = 120.0


@dataclass
class BenchSandbox:
    sandbox: Sandbox
    client: Kube  # the benchmark's own client: every call it makes is counted in ``counted``
    counted: CountingApi
    namespace: str = NAMESPACE
    issuer: str = ISSUER

    @property
    def signer_name(self) -> str:
        return f"tcsissuer.tcs.intel.com/{self.namespace}.{self.issuer}"

    @property
    def operator_pid(self) -> int:
        operator = self.sandbox.operator
        if operator is None or operator.pid is None:
            raise RuntimeError("the sandbox has no operator process")
        return operator.pid

    def operator_log(self) -> Path:
        return self.sandbox.state_dir / "operator.log"


async def wait_for_object(
    kube: Kube,
    resource: Resource,
    namespace: str | None,
    name: str,
    done: Callable[[Mapping[str, Any]], bool],
    *,
    timeout: float,
) -> None:
    """Watch object ``name`` (alone: a field selector) until it satisfies ``done``; ``TimeoutError`` after
    ``timeout`` seconds."""
    reached = asyncio.Event()

    async def on_event(_kind: str, obj: dict[str, Any]) -> None:
        if obj.get("metadata", {}).get("name") == name and done(obj):
            reached.set()

    watcher = asyncio.create_task(
        list_and_watch(kube, resource, namespace, on_event, field_selector=f"metadata.name={name}")
    )
    try:
        await asyncio.wait_for(reached.wait(), timeout)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


def condition_true(obj: Mapping[str, Any], kind: str) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


@asynccontextmanager
async def bench_sandbox(state_dir: Path) -> AsyncIterator[BenchSandbox]:
    """A started sandbox with a Ready TCSIssuer (RSA-3072, the default key) in ``keyward-bench``."""
    sandbox = Sandbox(SandboxOptions(state_dir=state_dir, run_operator=True))
    try:
        await sandbox.start()
        assert sandbox.kube is not None
        counted = CountingApi(sandbox.kube.raw)
        bench = BenchSandbox(sandbox, Kube(counted), counted)
        await sandbox.ensure_namespace(NAMESPACE)
        await bench.client.create(
            TCS_ISSUERS, {"metadata": {"name": ISSUER, "namespace": NAMESPACE}, "spec": {}}, NAMESPACE
        )
        try:
            await wait_for_object(
                bench.client,
                TCS_ISSUERS,
                NAMESPACE,
                ISSUER,
                lambda obj: condition_true(obj, "Ready"),
                timeout=ISSUER_READY_TIMEOUT,
            )
        except TimeoutError:
            raise UserError(
                f"the benchmark's TCSIssuer did not become Ready within {ISSUER_READY_TIMEOUT:.0f}s",
                f"see the operator log {bench.operator_log()}",
            ) from None
        yield bench
    finally:
        await sandbox.stop()
