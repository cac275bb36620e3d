"""EstIssuer and EstClusterIssuer: keep their Ready condition honest.

Each issuer has one checker task in this process: it checks at once when the issuer appears, again when
its spec changes (a new generation) or a Secret it uses changes (fed by the Secret watch), and every
``recheck_interval`` (10 minutes by default) — sooner, with backoff, while the server is unreachable. A
check reads the credential Secrets, fetches /cacerts through the explicit trust anchors and compares the
bundle with them (keyward.issuers.est.issuer). Ready issuers are kept in memory for the request and order
controllers; when an issuer turns ready, whatever waits for it is woken.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from cryptography import x509

from keyward.issuers import conditions
from keyward.issuers.errors import IssuerNotReady
from keyward.issuers.est.issuer import EstIssuerSpec, check_est_issuer
from keyward.issuers.signer_names import EST_GROUP, IssuerRef
from keyward.kube.client import ApiError
from keyward.kube.resources import EST_CLUSTER_ISSUERS, EST_ISSUERS, Resource
from keyward.operator.est.services import EstRuntime, est_runtime
from keyward.operator.registry import registry
from keyward.operator.services import Runtime

log = logging.getLogger("keyward.est.issuers")


@dataclass(frozen=True)
class ReadyEstIssuer:
    """An issuer that can enroll now: where its server is, and the CA bundle the server distributes."""

    ref: IssuerRef
    spec: EstIssuerSpec
    ca_certificates: tuple[x509.Certificate, ...]
    secret_namespace: str


@dataclass
class _Tracked:
    ref: IssuerRef
    resource: Resource
    body: Mapping[str, Any]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    checked_generation: Any = None
    state: tuple[str, str] = ("Unknown", "not checked yet")  # (status, message)


def issuer_ref(body: Mapping[str, Any]) -> IssuerRef:
    meta = body["metadata"]
    if body.get("kind") == EST_CLUSTER_ISSUERS.kind:
        return IssuerRef(EST_GROUP, EST_CLUSTER_ISSUERS.kind, meta["name"])
    return IssuerRef(EST_GROUP, EST_ISSUERS.kind, meta["name"], meta.get("namespace"))


class EstIssuers:
    def __init__(self, runtime: EstRuntime) -> None:
        self._runtime = runtime
        self._tracked: dict[str, _Tracked] = {}
        self._ready: dict[str, ReadyEstIssuer] = {}

    # ---- what the other controllers ask -------------------------------------------------------------
    def ready(self, ref: IssuerRef) -> ReadyEstIssuer | None:
        return self._ready.get(ref.signer_name)

    def describe(self, ref: IssuerRef) -> str:
        """Why requests for ``ref`` wait, for their Pending message."""
        tracked = self._tracked.get(ref.signer_name)
        if tracked is None:
            return f"{ref} not found; waiting for it to exist"
        return f"{ref} is not ready: {tracked.state[1]}"

    # ---- events -------------------------------------------------------------------------------------
    def observe(self, event_type: str, body: Mapping[str, Any]) -> None:
        ref = issuer_ref(body)
        key = ref.signer_name
        if event_type == "DELETED" or body["metadata"].get("deletionTimestamp"):
            gone = self._tracked.pop(key, None)
            self._ready.pop(key, None)
            if gone is not None and gone.task is not None:
                gone.task.cancel()
            return
        tracked = self._tracked.get(key)
        if tracked is None or tracked.body["metadata"].get("uid") != body["metadata"].get("uid"):
            if tracked is not None and tracked.task is not None:
                tracked.task.cancel()
            resource = EST_ISSUERS if ref.namespaced else EST_CLUSTER_ISSUERS
            tracked = self._tracked[key] = _Tracked(ref, resource, body)
            tracked.task = asyncio.get_running_loop().create_task(self._run(tracked), name=f"check {ref}")
            return
        tracked.body = body
        if body["metadata"].get("generation") != tracked.checked_generation:
            tracked.wake.set()

    def secret_changed(self, namespace: str, name: str) -> None:
        for tracked in self._tracked.values():
            spec = tracked.body.get("spec") or {}
            names = {spec.get("secretName"), spec.get("clientCertSecretName")}
            if name in names and self._runtime.secret_namespace(tracked.ref.namespace) == namespace:
                log.info("Secret %s/%s changed: re-checking %s", namespace, name, tracked.ref)
                tracked.wake.set()

    # ---- the checker --------------------------------------------------------------------------------
    async def _run(self, tracked: _Tracked) -> None:
        failures = 0
        interval = self._runtime.settings.recheck_interval
        while True:
            tracked.wake.clear()
            try:
                ok, permanent = await self._check(tracked)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug or an API outage must not end the checker
                log.exception("checking %s failed", tracked.ref)
                ok, permanent = False, False
            failures = 0 if ok else failures + 1
            delay = interval if ok or permanent else min(interval, float(2 ** min(failures - 1, 6)))
            try:
                async with asyncio.timeout(delay):
                    await tracked.wake.wait()
            except TimeoutError:
                pass

    async def _check(self, tracked: _Tracked) -> tuple[bool, bool]:
        """(ready, the failure needs a user's fix)."""
        runtime, ref, body = self._runtime, tracked.ref, tracked.body
        key = ref.signer_name
        generation = body["metadata"].get("generation")
        tracked.checked_generation = generation
        namespace = runtime.secret_namespace(ref.namespace)
        try:
            spec = EstIssuerSpec.parse(body.get("spec") or {})
            async with runtime.client(spec.endpoint) as client:
                checked = await check_est_issuer(spec, runtime.secrets.lookup(namespace), namespace, client)
        except IssuerNotReady as exc:
            if self._ready.pop(key, None) is not None or tracked.state[0] != "False":
                log.warning("%s is not ready: %s", ref, exc.message)
            await self._set_ready(tracked, False, exc.reason, exc.message)
            return False, exc.permanent
        if self._tracked.get(key) is not tracked:
            return False, True  # deleted or replaced while we checked
        self._ready[key] = ReadyEstIssuer(ref, spec, checked.ca_certificates, namespace)
        if tracked.state[0] != "True":
            log.info("%s is ready: EST server %s", ref, spec.endpoint.url("cacerts"))
        await self._set_ready(tracked, True, "Reconcile", "Success")
        runtime.requests.kick(key)
        runtime.orders.kick(key)
        return True, False

    async def _set_ready(self, tracked: _Tracked, ok: bool, reason: str, message: str) -> None:
        tracked.state = ("True" if ok else "False", message)
        body = tracked.body
        meta = body["metadata"]
        generation = meta.get("generation")
        previous = (body.get("status") or {}).get("conditions")
        current = conditions.find(previous, "Ready") or {}
        wanted = conditions.make("Ready", ok, reason, message, previous=previous, generation=generation)
        if all(
            current.get(k) == wanted.get(k) for k in ("status", "reason", "message", "observedGeneration")
        ):
            return
        patch = {"status": {"conditions": conditions.replace(previous, wanted)}}
        try:
            written = await self._runtime.api.patch(
                tracked.resource, meta["name"], patch, meta.get("namespace"), subresource="status"
            )
        except ApiError as exc:
            if exc.not_found:
                return
            raise
        if self._tracked.get(tracked.ref.signer_name) is tracked:
            tracked.body = written


def _plain(body: Any) -> dict[str, Any]:
    return copy.deepcopy(dict(body))


for _resource in (EST_ISSUERS, EST_CLUSTER_ISSUERS):

    @kopf.on.event(_resource.group, _resource.version, _resource.plural, registry=registry)
    async def est_issuer_event(type: str, body: Any, memo: Runtime, **_: Any) -> None:
        est_runtime(memo).issuers.observe(type or "ADDED", _plain(body))


def _tracked_secret(body: Any, memo: Runtime, **_: Any) -> bool:
    meta = body.get("metadata") or {}
    return est_runtime(memo).secrets.tracks(meta.get("namespace") or "", meta.get("name") or "")


@kopf.on.event("", "v1", "secrets", when=_tracked_secret, registry=registry)
async def est_secret_event(type: str, body: Any, memo: Runtime, **_: Any) -> None:
    """A Secret an EST issuer uses changed: refresh the cache, and re-check the issuers that use it."""
    runtime = est_runtime(memo)
    meta = body.get("metadata") or {}
    if runtime.secrets.update(type or "ADDED", _plain(body)):
        runtime.issuers.secret_changed(meta.get("namespace") or "", meta.get("name") or "")
