"""Leader election through a coordination.k8s.io Lease, as client-go's leaderelection package does it.

With ``--leader-elect`` several replicas run and one leads: it checks issuers with writes (creates CAs,
writes Secrets and status), signs requests and enrolls at EST servers. The others are hot standbys: they
check issuers read-only (so their own token's CAs serve EST clients), and take over when the Lease
expires. The Lease is the usual record (``holderIdentity``, ``leaseDurationSeconds``, ``acquireTime``,
``renewTime``, ``leaseTransitions``), written with the resourceVersion precondition; expiry is judged on
this process's own clock from when the record last changed (never on the other replica's timestamps),
so clock skew between nodes does not matter. A leader that cannot renew within the renew deadline stops
leading at once and the process exits, to be restarted as a standby: no two replicas ever act as leader
for longer than a lease. Without ``--leader-elect`` the one process always leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from keyward.host import cancel
from keyward.kube.client import ApiError, Body, Kube
from keyward.kube.resources import LEASES

log = logging.getLogger("keyward.leader")
LEASE_NAME = "keyward-leader"


@dataclass(frozen=True)
class LeasePolicy:
    """client-go's defaults (seconds): a 15 s lease, renewed every 2 s, given up after 10 s without."""

    duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    @classmethod
    def lasting(cls, duration: float) -> LeasePolicy:
        """The same proportions for another lease duration."""
        return cls(duration, renew_deadline=duration * 2 / 3, retry_period=duration * 2 / 15)


def identity() -> str:
    """This replica's name in the Lease: the pod name (the hostname in a pod) and a random suffix, so a
    restarted process never mistakes its predecessor's lease for its own."""
    host = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{host}_{uuid.uuid4().hex[:8]}"


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Leadership:
    """Whether this process leads; listeners hear when it starts leading."""

    def __init__(self) -> None:
        self._leading = False
        self._listeners: list[Callable[[], None]] = []

    @property
    def leading(self) -> bool:
        return self._leading

    def listen(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def lead(self) -> None:
        if self._leading:
            return
        self._leading = True
        for listener in self._listeners:
            listener()

    def stop_leading(self) -> None:
        self._leading = False


class LeaderElector:
    """Acquires and renews the Lease; calls ``lost()`` when it can no longer renew it."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        leadership: Leadership,
        *,
        lost: Callable[[], None],
        name: str = LEASE_NAME,
        holder: str | None = None,
        policy: LeasePolicy | None = None,
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._leadership = leadership
        self._lost = lost
        self._name = name
        self.holder = holder or identity()
        self._policy = policy or LeasePolicy()
        #: Whether the first attempt is over: this replica knows whether it leads or stands by.
        self.decided = False
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="leader election")

    async def stop(self) -> None:
        """Stop, and give the lease up if held, so a standby takes over at once (ReleaseOnCancel)."""
        task, self._task = self._task, None
        await cancel(task)
        if self._leadership.leading:
            self._leadership.stop_leading()
            with contextlib.suppress(ApiError):
                await self._release()

    async def _run(self) -> None:
        log.info("%s: waiting to lead (Lease %s/%s)", self.holder, self._namespace, self._name)
        while not self._leadership.leading:
            acquired = await self._try()
            self.decided = True
            if acquired:
                log.info("%s: leading (Lease %s/%s)", self.holder, self._namespace, self._name)
                self._leadership.lead()
                break
            await asyncio.sleep(self._policy.retry_period)
        last_renewal = time.monotonic()
        while True:
            await asyncio.sleep(self._policy.retry_period)
            if await self._try():
                last_renewal = time.monotonic()
            elif time.monotonic() - last_renewal > self._policy.renew_deadline:
                self._leadership.stop_leading()
                log.error(
                    "%s: could not renew Lease %s/%s within %.0fs; leadership lost, stopping",
                    self.holder,
                    self._namespace,
                    self._name,
                    self._policy.renew_deadline,
                )
                self._lost()
                return

    async def _try(self) -> bool:
        """One tryAcquireOrRenew; False on any failure (retried on the next period)."""
        try:
            return await self._acquire_or_renew()
        except ApiError as exc:
            log.warning("%s: Lease %s/%s: %s", self.holder, self._namespace, self._name, exc)
            return False

    async def _acquire_or_renew(self) -> bool:
        now = _now_text()
        lease = await self._kube.find(LEASES, self._name, self._namespace)
        if lease is None:
            spec = self._spec(now, now, transitions=0)
            try:
                await self._kube.create(
                    LEASES, {"metadata": {"name": self._name}, "spec": spec}, self._namespace
                )
            except ApiError as exc:
                if exc.conflict:
                    return False  # another replica created it first
                raise
            return True
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseDurationSeconds"))
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or self._policy.duration)
        held_by_other = holder and holder != self.holder
        if held_by_other and time.monotonic() < self._observed_at + duration:
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        acquire_time = spec.get("acquireTime") if holder == self.holder else now
        if holder != self.holder:
            transitions += 1
        replacement = {
            **lease,
            "spec": self._spec(str(acquire_time or now), now, transitions=transitions),
        }
        try:
            await self._kube.replace(LEASES, replacement)
        except ApiError as exc:
            if exc.conflict:
                return False
            raise
        return True

    def _spec(self, acquire_time: str, renew_time: str, *, transitions: int) -> Body:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": int(self._policy.duration),
            "acquireTime": acquire_time,
            "renewTime": renew_time,
            "leaseTransitions": transitions,
        }

    async def _release(self) -> None:
        lease = await self._kube.find(LEASES, self._name, self._namespace)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.holder:
            return
        spec = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": _now_text()}
        await self._kube.replace(LEASES, {**lease, "spec": spec})
        log.info("%s: released Lease %s/%s", self.holder, self._namespace, self._name)
