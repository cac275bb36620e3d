"""The one status writer, and Events.

Every decision of a controller ends in one JSON merge patch of the object's ``/status`` that carries the
``metadata.resourceVersion`` the decision was made on: the API server answers 409 when anything else
wrote the object meanwhile (another replica, our own earlier write), and the decision is dropped unseen —
the object's next event decides again. That precondition is what makes issuance exactly-once.

A write that fails for any other reason is never dropped: real clusters fail writes (cert-manager's
webhook restarting answers 500, API priority and fairness 429 with Retry-After, a timeout, an API server
away for a while). It is retried with capped exponential backoff, honouring Retry-After, with the same
precondition, until it succeeds, the object changes (409) or is gone (404) — so a certificate waiting
to be written is the one written, never a second one. A 403 (a permission the operator lacks) or a 400/422
(the API refuses the content) is a configuration problem: logged as an error naming what was refused (for
a 403, the permission), reported as an Event, and retried slowly, so a fixed ClusterRole heals it without
a restart. (The API client counts every failed write: ``keyward_api_write_failures_total``.)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from keyward.kube.client import ApiError, Body, Kube
from keyward.kube.objects import name_of, object_reference
from keyward.kube.resources import EVENTS, Resource

log = logging.getLogger("keyward.status")
T = TypeVar("T")

#: Where Events about cluster-scoped objects are stored (kube-apiserver's rule for ``kubectl describe``).
CLUSTER_EVENTS_NAMESPACE = "default"
COMPONENT = "keyward"


@dataclass(frozen=True)
class WritePolicy:
    """How failed writes are retried (seconds)."""

    first: float = 0.5
    limit: float = 30.0
    #: A refused write (403, 400, 422) waits this long before the next try.
    refused: float = 60.0
    #: The longest Retry-After honoured as given.
    retry_after_limit: float = 120.0

    def delay(self, error: ApiError, attempt: int) -> float:
        if error.transient:
            backoff = min(self.first * 2.0 ** min(attempt, 30), self.limit)
            if error.retry_after is not None:
                return min(max(error.retry_after, self.first), self.retry_after_limit)
            return backoff
        return self.refused


def refused(error: ApiError) -> bool:
    """A write the API will refuse again until someone fixes something: a permission or the content."""
    return error.status in (400, 403, 422)


def configuration_problem(error: ApiError) -> str:
    """What a refused call means for whoever runs the operator: for a 403, the permission it lacks."""
    if error.status == 403 and " cannot " in error.message:  # RBAC's denial: User "u" cannot patch ...
        lacking = error.permission or "the permission the message names"
        return f"the operator lacks the permission {lacking}; grant it in the operator's ClusterRole"
    if error.status == 403:  # admission (CSR signing needs sign on signers): the message names it
        return "an admission check wants a permission the message names; grant it in the operator's role"
    return "the API refuses what the operator wrote"


#: client-go's event recorder tries an Event this often (maxTriesPerEvent) before dropping it.
EVENT_TRIES = 12
#: A refused Event (e.g. no permission to create Events) is logged at most this often (seconds).
REFUSED_EVENT_LOG_INTERVAL = 60.0


class Events:
    """Kubernetes Events about the objects keyward acts on, posted in the background: an Event is a
    courtesy, never a reason to hold up or fail the work it reports. A failed post is tried again
    (transient failures, with the write policy's backoff, up to ``attempts`` times) or dropped (refused:
    logged as a configuration problem, at most once a minute)."""

    def __init__(self, kube: Kube, *, attempts: int = EVENT_TRIES, policy: WritePolicy | None = None) -> None:
        self._kube = kube
        self._attempts = attempts
        self._policy = policy or WritePolicy()
        self._tasks: set[asyncio.Task[None]] = set()
        self._serial = itertools.count()
        self._host = os.uname().nodename
        self._refusal_logged: dict[int, float] = {}

    def post(self, body: Mapping[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
        task = asyncio.get_running_loop().create_task(self._post(body, reason, message, warning))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the Events under way (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def event(self, body: Mapping[str, Any], reason: str, message: str, warning: bool) -> Body:
        reference = object_reference(body)
        namespace = reference.get("namespace") or CLUSTER_EVENTS_NAMESPACE
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "metadata": {
                "name": f"{reference.get('name', 'object')}.{now.timestamp():.6f}.{next(self._serial)}"[:253],
                "namespace": namespace,
            },
            "involvedObject": reference,
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT, "host": self._host},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._host,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }

    async def _post(self, body: Mapping[str, Any], reason: str, message: str, warning: bool) -> None:
        event = self.event(body, reason, message, warning)
        for attempt in range(self._attempts):
            try:
                await self._kube.create(EVENTS, event, event["metadata"]["namespace"])
                return
            except ApiError as exc:
                if refused(exc):
                    self._log_refusal(exc, reason, body)
                    return
                if not exc.transient or attempt + 1 == self._attempts:
                    log.warning(
                        "could not post the %s Event about %s (%s); dropped after %d tries",
                        reason,
                        name_of(body),
                        exc,
                        attempt + 1,
                    )
                    return
                await asyncio.sleep(self._policy.delay(exc, attempt))

    def _log_refusal(self, error: ApiError, reason: str, body: Mapping[str, Any]) -> None:
        now = time.monotonic()
        last = self._refusal_logged.get(error.status)
        if last is not None and now - last < REFUSED_EVENT_LOG_INTERVAL:
            log.debug("the %s Event about %s was refused: %s", reason, name_of(body), error)
            return
        self._refusal_logged[error.status] = now
        log.error(
            "the API refused the %s Event about %s (%s): %s; Events are dropped until that is fixed",
            reason,
            name_of(body),
            error,
            configuration_problem(error),
        )


class StatusWriter:
    """Writes ``/status``: one merge patch per decision, with the resourceVersion precondition."""

    def __init__(self, kube: Kube, events: Events, *, policy: WritePolicy | None = None) -> None:
        self._kube = kube
        self.events = events
        self.policy = policy or WritePolicy()
        self._background: set[asyncio.Task[Body | None]] = set()

    async def write(
        self,
        resource: Resource,
        body: Mapping[str, Any],
        status: Mapping[str, Any],
        *,
        event: tuple[str, str] | None = None,
        warning: bool = False,
        precondition: bool = True,
    ) -> Body | None:
        """Write ``status`` to the object as ``body`` shows it. Returns the object as written, or None when
        it changed meanwhile (409: its next event decides) or is gone (404). Other failures are retried
        (see the module's docstring), so this may take long while the API refuses."""
        meta = body["metadata"]
        patch: Body = {"status": dict(status)}
        if precondition:
            patch["metadata"] = {"resourceVersion": meta["resourceVersion"]}
        try:
            written = await self.retrying(
                resource,
                body,
                f"write the status of {resource.kind} {name_of(body)}",
                lambda: self._kube.patch(
                    resource, meta["name"], patch, meta.get("namespace"), subresource="status"
                ),
            )
        except ApiError as exc:
            if exc.conflict or exc.not_found:
                log.debug("%s %s changed before our write (%s)", resource.kind, name_of(body), exc)
                return None
            raise
        if event is not None:
            self.events.post(body, event[0], event[1], warning=warning)
        return written

    def write_soon(self, resource: Resource, body: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        """``write`` in the background, for a courtesy that nothing waits for (a refused write, retried
        slowly, then holds up no decision)."""
        task = asyncio.get_running_loop().create_task(self.write(resource, body, status))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def close(self) -> None:
        """Stop the background writes (shutdown)."""
        for task in self._background:
            task.cancel()

    async def finish(
        self,
        resource: Resource,
        body: Mapping[str, Any],
        status_for: Callable[[Mapping[str, Any]], Mapping[str, Any]],
        *,
        wanted: Callable[[Mapping[str, Any]], bool],
        event: tuple[str, str] | None = None,
        warning: bool = False,
    ) -> Body | None:
        """Write a final result (a certificate, a failure) that must not be lost.

        When the object changed meanwhile (409), it is read again and, if it still ``wanted`` the result
        (approved, unfinished), the same result is written to the new version: a certificate already
        signed is the one written, never signed again. None when the object no longer wants it."""
        current: Mapping[str, Any] | None = body
        while current is not None and wanted(current):
            written = await self.write(resource, current, status_for(current), event=event, warning=warning)
            if written is not None:
                return written
            meta = current["metadata"]
            current = await self.retrying(
                resource,
                current,
                f"read {resource.kind} {name_of(current)}",
                lambda meta=meta: self._kube.find(resource, meta["name"], meta.get("namespace")),  # type: ignore[misc]
            )
        return None

    async def retrying(
        self,
        resource: Resource,
        body: Mapping[str, Any],
        doing: str,
        call: Callable[[], Awaitable[T]],
    ) -> T:
        """``call()``, again and again while it fails for a reason other than 409/404 (those are raised).
        Each new kind of failure is logged (a repeated one every tenth time); each refusal is also told in
        an Event on the object, once per status code."""
        told: set[int] = set()
        last: tuple[int, str] | None = None
        for attempt in itertools.count():
            try:
                return await call()
            except ApiError as exc:
                if exc.conflict or exc.not_found:
                    raise
                delay = self.policy.delay(exc, attempt)
                new = (exc.status, exc.reason) != last
                last = (exc.status, exc.reason)
                if refused(exc):
                    problem = configuration_problem(exc)
                    log.error("the API refused to %s (%s): %s; retrying in %.0fs", doing, exc, problem, delay)
                    if exc.status not in told:
                        told.add(exc.status)
                        reason = "WriteForbidden" if exc.status == 403 else "WriteRefused"
                        message = f"keyward could not {doing}: {exc}; {problem}"
                        self.events.post(body, reason, message, warning=True)
                elif new or attempt % 10 == 0:
                    log.warning("could not %s (%s); retrying in %.1fs", doing, exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover
