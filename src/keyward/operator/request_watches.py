"""The signing requests — cert-manager CertificateRequests and Kubernetes CSRs — watched without kopf.

A cluster keeps every request it ever had, and an operator restarted among ten thousand finished ones
must not pay for them. kopf would keep state for each (a worker task and its memory, the body until the
worker idles out) and run its handler machinery for every event: at start, about half a millisecond and
tens of KiB per request. So requests are followed with ``kube.watching.list_and_watch`` (paged lists,
watches resumed where they stopped, a new list after 410 Gone) and each event goes to ``deliver``
(``OneAtATime``): one task per request at a time, a bounded number at once, with the newest event
waiting (an older one waiting is replaced: the controllers decide on the object as it is, never on the
event). A finished request costs a filter and a dictionary lookup.

CertificateRequests are watched only with ``--cert-manager-issuer`` (the default), in the operator's
namespaces (or all); CSRs are cluster-scoped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from keyward.kube.client import Kube
from keyward.kube.resources import CERTIFICATE_REQUESTS, CSRS, Resource
from keyward.kube.watching import list_and_watch

log = logging.getLogger("keyward.requests")

#: (the resource, "ADDED"/"MODIFIED"/"DELETED", the object): a request's event for its controller.
Deliver = Callable[[Resource, str, dict[str, Any]], Awaitable[None]]
Event = tuple[Resource, str, dict[str, Any]]


#: Requests handled at once (their signing queues behind the signing processes anyway), and requests
#: whose newest event may wait before the watch stops reading (it resumes where it stopped).
CONCURRENT = 32
BACKLOG = 512


class OneAtATime:
    """Runs ``deliver`` for each event, ``limit`` requests at a time and one task per request: a request
    being handled keeps its newest event waiting (an older one waiting is dropped), and so does a request
    that meets all ``limit`` busy. ``submit`` waits while ``backlog`` requests wait, so a burst holds a
    bounded number of bodies and the rest stays with the API server until the watch reads on."""

    def __init__(self, deliver: Deliver, *, limit: int = CONCURRENT, backlog: int = BACKLOG) -> None:
        self._deliver = deliver
        self._limit = limit
        self._backlog = backlog
        self._busy: set[str] = set()
        self._workers = 0
        self._queued: OrderedDict[str, Event] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()
        self._room.set()

    async def submit(self, key: str, event: Event) -> None:
        if key in self._busy or self._workers >= self._limit:
            self._queued[key] = event  # the newest; a key already waiting keeps its place
            while len(self._queued) >= self._backlog:
                self._room.clear()
                await self._room.wait()
            return
        self._busy.add(key)
        self._workers += 1
        task = asyncio.get_running_loop().create_task(self._work(key, event), name="request")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _work(self, key: str, event: Event) -> None:
        """Deliver, then take the next waiting request; end when every waiting one is being handled."""
        current: tuple[str, Event] | None = (key, event)
        try:
            while current is not None:
                key, (resource, event_type, body) = current
                try:
                    await self._deliver(resource, event_type, body)
                except asyncio.CancelledError:
                    raise
                except Exception:  # one request's bug must not stop the others
                    log.exception("handling the %s event of %s %s failed", event_type, resource.kind, key)
                finally:
                    self._busy.discard(key)
                current = self._next()
        finally:
            self._workers -= 1

    def _next(self) -> tuple[str, Event] | None:
        """The first waiting request that no task handles (at most ``limit`` are passed over)."""
        for key in self._queued:
            if key not in self._busy:
                event = self._queued.pop(key)
                self._busy.add(key)
                if len(self._queued) < self._backlog:
                    self._room.set()
                return key, event
        return None

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._queued.clear()
        self._room.set()


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
        if self._tasks:
            return  # watching already (a new leader's relist came first)
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
                await self._events.submit(str(uid), (resource, event_type, body))

        await list_and_watch(
            self._kube,
            resource,
            namespace,
            on_event,
            synced=lambda: self._synced.add((resource, namespace)),
        )
