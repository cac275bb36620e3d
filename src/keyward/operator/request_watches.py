"""The signing requests — cert-manager CertificateRequests and Kubernetes CSRs — watched without kopf.

A cluster keeps every request it ever had, and an operator restarted among ten thousand finished ones
must not pay for them. kopf would keep state for each (a worker task and its memory, the body until the
worker idles out) and run its handler machinery for every event: at start, about half a millisecond and
tens of KiB per request. So requests are followed with ``kube.watching.list_and_watch`` (paged lists,
watches resumed where they stopped, a new list after 410 Gone) and each event goes to ``deliver``: one
task per request at a time, with the newest event waiting behind it (an older one waiting is replaced:
the controllers decide on the object as it is, never on the event). A finished request costs a filter
and a dictionary lookup.

CertificateRequests are watched only with ``--cert-manager-issuer`` (the default), in the operator's
namespaces (or all); CSRs are cluster-scoped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from keyward.kube.client import Kube
from keyward.kube.resources import CERTIFICATE_REQUESTS, CSRS, Resource
from keyward.kube.watching import list_and_watch

log = logging.getLogger("keyward.requests")

#: (the resource, "ADDED"/"MODIFIED"/"DELETED", the object): a request's event for its controller.
Deliver = Callable[[Resource, str, dict[str, Any]], Awaitable[None]]
Event = tuple[Resource, str, dict[str, Any]]


class OneAtATime:
    """Runs ``deliver`` for each event in a task of its object's own; while one runs, the newest event
    for that object waits (an older one waiting is dropped)."""

    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._running: dict[str, asyncio.Task[None]] = {}
        self._waiting: dict[str, Event] = {}

    def __len__(self) -> int:
        return len(self._running)

    def submit(self, key: str, event: Event) -> None:
        if key in self._running:
            self._waiting[key] = event
            return
        self._running[key] = asyncio.get_running_loop().create_task(self._run(key, event), name="request")

    async def _run(self, key: str, event: Event) -> None:
        try:
            next_event: Event | None = event
            while next_event is not None:
                resource, event_type, body = next_event
                try:
                    await self._deliver(resource, event_type, body)
                except asyncio.CancelledError:
                    raise
                except Exception:  # one request's bug must not stop the others
                    log.exception("handling the %s event of %s %s failed", event_type, resource.kind, key)
                next_event = self._waiting.pop(key, None)
        finally:
            self._running.pop(key, None)

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._waiting.clear()


class RequestWatches:
    """The watches of both request kinds; ``relist`` reports every request again (a new leader)."""

    def __init__(
        self,
        kube: Kube,
        deliver: Deliver,
        *,
        namespaces: tuple[str, ...],
        certificate_requests: bool,
    ) -> None:
        self._kube = kube
        self._events = OneAtATime(deliver)
        spaces: tuple[str | None, ...] = namespaces or (None,)
        self._watched: list[tuple[Resource, str | None]] = [(CSRS, None)]
        if certificate_requests:
            self._watched += [(CERTIFICATE_REQUESTS, namespace) for namespace in spaces]
        self._tasks: list[asyncio.Task[None]] = []
        self._synced: set[tuple[Resource, str | None]] = set()

    @property
    def synced(self) -> bool:
        """Every watch has listed once."""
        return len(self._synced) == len(self._watched)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._follow(resource, namespace), name=f"watch {resource}")
            for resource, namespace in self._watched
        ]

    async def relist(self) -> None:
        """List every request again and hand each to its controller (the watches start over)."""
        await self._stop_watches()
        self.start()

    async def close(self) -> None:
        await self._stop_watches()
        await self._events.close()

    async def _stop_watches(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _follow(self, resource: Resource, namespace: str | None) -> None:
        async def on_event(event_type: str, body: dict[str, Any]) -> None:
            uid = (body.get("metadata") or {}).get("uid")
            if uid:
                self._events.submit(str(uid), (resource, event_type, body))

        await list_and_watch(
            self._kube,
            resource,
            namespace,
            on_event,
            synced=lambda: self._synced.add((resource, namespace)),
        )
