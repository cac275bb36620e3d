"""Keeping issuers' Ready condition honest: one checker task per issuer, for both issuer families.

A checker checks at once when its issuer appears, again when the spec changes (a new generation), when
woken (a Secret the issuer uses changed), and periodically: ``recheck_ready`` while it is ready or failing
for a reason a user must fix, with capped backoff while it fails for a passing reason (a token that
cannot be opened, a server that does not answer). The family's *check* (``issuers.tcs``,
``issuers.est``) decides; the checker writes the Ready condition through the status writer when it
changes and tells the family's controllers when an issuer turns ready or stops being ready. A standby
replica (``operator.leader``) checks too, without writing: its own token's CAs serve EST clients, and it
is ready to take over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from keyward.issuers import conditions
from keyward.issuers.signer_names import IssuerRef, issuer_ref_of
from keyward.kube.client import Kube
from keyward.kube.resources import Resource
from keyward.operator.leader import Leadership
from keyward.operator.status import StatusWriter

log = logging.getLogger("keyward.issuers")
R = TypeVar("R")


@dataclass(frozen=True)
class Verdict(Generic[R]):
    """What a check found: ready (with what the controllers need), or why not."""

    ready: R | None
    reason: str = "Reconcile"
    message: str = "Success"
    #: A passing fault: check again soon, with backoff (otherwise at the re-check interval, or when woken).
    transient: bool = False
    #: Check again after this many seconds instead (a write the API refused: the write policy's delay).
    retry_in: float | None = None
    #: More status fields to write beside the Ready condition (e.g. status.signerName).
    status: Mapping[str, Any] = field(default_factory=dict)
    #: More conditions beside Ready, by type: (status, reason, message), or None to remove the condition.
    conditions: Mapping[str, tuple[bool, str, str] | None] = field(default_factory=dict)


#: A family's check: (the issuer, its object, whether this replica leads) → verdict. A standby checks
#: without writing or creating anything.
Check = Callable[[IssuerRef, Mapping[str, Any], bool], Awaitable[Verdict[R]]]


@dataclass
class _Tracked:
    ref: IssuerRef
    resource: Resource
    body: Mapping[str, Any]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    checked_generation: Any = None
    state: tuple[str, str] = ("Unknown", "not checked yet")  # (status, message)


class IssuerChecks(Generic[R]):
    """The issuers of one family, each with its checker task."""

    def __init__(
        self,
        check: Check[R],
        *,
        writer: StatusWriter,
        resources: tuple[Resource, Resource],
        recheck_ready: float,
        recheck_failed: float,
        backoff_limit: float = 60.0,
        leadership: Leadership,
        on_ready: Callable[[IssuerRef, R], None] | None = None,
        on_unready: Callable[[IssuerRef], None] | None = None,
        annotations: tuple[str, ...] = (),
    ) -> None:
        self._check = check
        self._leadership = leadership
        leadership.listen(lambda: self.wake(lambda ref, body: True))  # the new leader writes what it finds
        self._writer = writer
        self._resources = {resource.kind: resource for resource in resources}
        self._recheck_ready = recheck_ready
        self._recheck_failed = recheck_failed
        self._backoff_limit = backoff_limit
        self._on_ready = on_ready
        self._on_unready = on_unready
        #: Annotations whose change is a request to check again (like a new generation of the spec).
        self._annotations = annotations
        self._tracked: dict[str, _Tracked] = {}
        self._ready: dict[str, R] = {}

    # ---- what the other controllers ask -------------------------------------------------------------
    @property
    def resources(self) -> tuple[Resource, ...]:
        """The issuer kinds of the family (namespaced, cluster)."""
        return tuple(self._resources.values())

    def ready(self, ref: IssuerRef) -> R | None:
        return self._ready.get(ref.signer_name)

    def describe(self, ref: IssuerRef) -> str | None:
        """Why requests for ``ref`` wait, for their Pending message; None while its first check is under
        way (a request that meets an operator just started waits for that, without a message)."""
        tracked = self._tracked.get(ref.signer_name)
        if tracked is None:
            return f"{ref} not found; waiting for it to exist"
        if tracked.state[0] == "Unknown":
            return None
        if tracked.state[0] == "True" and ref.signer_name in self._ready:
            return f"{ref} failed while signing and is being checked again"  # a token fault, say
        if tracked.state[0] == "True":
            return f"{ref} is ready once its Ready condition is written"
        return f"{ref} is not ready: {tracked.state[1]}"

    def states(self) -> list[tuple[IssuerRef, bool]]:
        """Every issuer of the family and whether it is ready now (for metrics)."""
        return [(tracked.ref, tracked.state[0] == "True") for tracked in self._tracked.values()]

    # ---- events -------------------------------------------------------------------------------------
    def observe(self, event_type: str, body: Mapping[str, Any]) -> None:
        resource = self._resources[str(body.get("kind"))]
        meta = body["metadata"]
        ref = issuer_ref_of(resource.group, resource.kind, meta["name"], meta.get("namespace"))
        key = ref.signer_name
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            self.forget(ref)
            return
        tracked = self._tracked.get(key)
        if tracked is None or tracked.body["metadata"].get("uid") != meta.get("uid"):
            if tracked is not None and tracked.task is not None:
                tracked.task.cancel()
            tracked = self._tracked[key] = _Tracked(ref, resource, body)
            tracked.task = asyncio.get_running_loop().create_task(self._run(tracked), name=f"check {ref}")
            return
        before = (tracked.body["metadata"].get("annotations") or {}, meta.get("annotations") or {})
        tracked.body = body
        asked = any(before[0].get(key) != before[1].get(key) for key in self._annotations)
        if asked or meta.get("generation") != tracked.checked_generation:
            tracked.wake.set()

    async def read_all(self, kube: Kube, namespaces: tuple[str, ...]) -> None:
        """Every issuer of the family the operator serves, read now as their events would bring them:
        each is known (and its first check started) before a request for it is looked at, so that an
        operator just started never tells a request that its issuer does not exist."""
        for resource in self.resources:
            for namespace in (namespaces or (None,)) if resource.namespaced else (None,):
                for body in await kube.list(resource, namespace):
                    self.observe("ADDED", {**body, "apiVersion": resource.api_version, "kind": resource.kind})

    def forget(self, ref: IssuerRef) -> None:
        """The issuer is being deleted or is gone: stop checking it, and it signs no more."""
        gone = self._tracked.pop(ref.signer_name, None)
        if gone is not None and gone.task is not None:
            gone.task.cancel()
        self._unready(ref)

    def recheck(self, ref: IssuerRef) -> None:
        """Check ``ref`` again now (it failed while signing: its next check says why)."""
        self.wake(lambda tracked, body: tracked.signer_name == ref.signer_name)

    def wake(self, wanted: Callable[[IssuerRef, Mapping[str, Any]], bool]) -> None:
        """Check again now the issuers ``wanted`` picks (e.g. those that use a Secret that changed)."""
        for tracked in self._tracked.values():
            if wanted(tracked.ref, tracked.body):
                log.info("re-checking %s", tracked.ref)
                tracked.wake.set()

    def close(self) -> None:
        for tracked in self._tracked.values():
            if tracked.task is not None:
                tracked.task.cancel()
        self._tracked.clear()

    # ---- the checker --------------------------------------------------------------------------------
    async def _run(self, tracked: _Tracked) -> None:
        failures = 0
        while True:
            tracked.wake.clear()
            try:
                verdict = await self._check_once(tracked)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or an API outage must not end the checker
                log.exception("checking %s failed", tracked.ref)
                tracked.state = ("False", f"checking it failed unexpectedly ({type(exc).__name__}); retrying")
                verdict = Verdict(None, transient=True)
            if verdict.ready is not None:
                failures, delay = 0, self._recheck_ready
            elif verdict.retry_in is not None:
                failures, delay = 0, min(verdict.retry_in, self._recheck_failed)
            elif verdict.transient:
                failures += 1
                delay = min(self._backoff_limit, self._recheck_failed, float(2 ** min(failures - 1, 6)))
            else:
                failures, delay = 0, self._recheck_failed
            try:
                async with asyncio.timeout(delay):
                    await tracked.wake.wait()
            except TimeoutError:
                pass

    async def _check_once(self, tracked: _Tracked) -> Verdict[R]:
        ref, body = tracked.ref, tracked.body
        tracked.checked_generation = body["metadata"].get("generation")
        leading = self._leadership.leading
        verdict = await self._check(ref, body, leading)
        if self._tracked.get(ref.signer_name) is not tracked:
            return verdict  # deleted or replaced while we checked
        state = ("True" if verdict.ready is not None else "False", verdict.message)
        if verdict.ready is None:
            if self._unready(ref) or tracked.state != state:  # each new reason is logged once
                log.warning("%s is not ready: %s", ref, verdict.message)
        elif tracked.state[0] != "True":
            log.info("%s is ready", ref)
        tracked.state = state
        if leading:
            await self._write(tracked, verdict)
        if verdict.ready is not None:
            self._ready[ref.signer_name] = verdict.ready
            if self._on_ready is not None:
                self._on_ready(ref, verdict.ready)
        return verdict

    def _unready(self, ref: IssuerRef) -> bool:
        was_ready = self._ready.pop(ref.signer_name, None) is not None
        if self._on_unready is not None:
            self._on_unready(ref)
        return was_ready

    async def _write(self, tracked: _Tracked, verdict: Verdict[R]) -> None:
        ok = verdict.ready is not None
        body = tracked.body
        meta = body["metadata"]
        generation = meta.get("generation")
        status = body.get("status") or {}
        previous = status.get("conditions")
        wanted = [
            conditions.make(
                "Ready", ok, verdict.reason, verdict.message, previous=previous, generation=generation
            )
        ]
        removed = {type_ for type_, extra in verdict.conditions.items() if extra is None}
        wanted += [
            conditions.make(type_, *extra, previous=previous, generation=generation)
            for type_, extra in verdict.conditions.items()
            if extra is not None
        ]
        unchanged = all(_same_condition(conditions.find(previous, c["type"]), c) for c in wanted) and not any(
            conditions.find(previous, type_) for type_ in removed
        )
        if unchanged and all(status.get(k) == v for k, v in verdict.status.items()):
            return
        written_conditions = [dict(c) for c in previous or () if c.get("type") not in removed]
        for condition in wanted:
            written_conditions = conditions.replace(written_conditions, condition)
        patch = {**verdict.status, "conditions": written_conditions}
        written = await self._writer.write(tracked.resource, body, patch, precondition=False)
        if written is not None and self._tracked.get(tracked.ref.signer_name) is tracked:
            tracked.body = written


def _same_condition(current: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    return current is not None and all(
        current.get(k) == wanted.get(k) for k in ("status", "reason", "message", "observedGeneration")
    )
