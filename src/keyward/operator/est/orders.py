"""EstOrders: perform the enrollment at the EST server and write the result to the owning request.

One attempt at a time per order (in this process), and across processes the order's own status is the
lock: an attempt starts with a write of ``Enrolling`` carrying the order's resourceVersion, so of two
operators racing only one gets to enroll; the order's ``nextAttemptTime`` while Enrolling is the lease after
which an abandoned attempt (the process died) is taken over. The certificate goes to the request in one
status write with the request's resourceVersion (keyward.operator.est.owners), and only then is the
order marked Issued; an order found Enrolling whose request already has a certificate is marked Issued
without enrolling again. Issued and Failed orders are never acted on again.

Timing lives in memory (a timer per order, from ``nextAttemptTime``); an operator restart rebuilds it
from the orders' status, so a 202 Retry-After or a 401 delay survives restarts.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from keyward.est.client import ClientCertificate, EstError, Pending
from keyward.issuers.contract import Phase
from keyward.issuers.errors import IssuerNotReady
from keyward.issuers.est.issuer import load_credentials
from keyward.issuers.est.orders import (
    RENEWAL_SECRET_ANNOTATION,
    Accepted,
    Enrolled,
    IssuerUnavailable,
    OrderProgress,
    OrderState,
    Outcome,
    Refused,
    Unauthorized,
    Unavailable,
    after_attempt,
    classify,
    finish,
    issued_parts,
    order_issuer,
    order_owner,
    renewal_identity,
    start_attempt,
    wait_for_issuer,
)
from keyward.issuers.signer_names import IssuerRef
from keyward.kube.client import ApiError
from keyward.kube.resources import EST_ORDERS, SECRETS
from keyward.operator.est.issuers import ReadyEstIssuer
from keyward.operator.est.services import EstRuntime, est_runtime
from keyward.operator.registry import registry
from keyward.operator.services import Runtime
from keyward.pki.csr import decode_request_field, load_csr
from keyward.pki.errors import RequestError

log = logging.getLogger("keyward.est.orders")
Key = tuple[str, str]
RETRY_AFTER_FAULT = 10.0  # seconds, after an unexpected error (an API outage, say)


def _now() -> datetime:
    return datetime.now(UTC)


def _key(body: Mapping[str, Any]) -> Key:
    meta = body["metadata"]
    return str(meta.get("namespace") or ""), str(meta["name"])


class EstOrders:
    def __init__(self, runtime: EstRuntime) -> None:
        self._runtime = runtime
        self._known: dict[Key, Mapping[str, Any]] = {}
        self._inflight: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        #: Orders a Ready issuer wakes: waiting for the issuer, or for fixed credentials after a 401.
        self._woken_by: dict[Key, str] = {}

    # ---- what the request controller asks ----------------------------------------------------------
    def exists(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self._known

    def remember(self, body: Mapping[str, Any]) -> None:
        self._known.setdefault(_key(body), body)

    def kick(self, signer_name: str) -> None:
        for key, signer in list(self._woken_by.items()):
            if signer == signer_name and key not in self._inflight:
                del self._woken_by[key]
                self._start_in(key, 0.0)

    # ---- events -------------------------------------------------------------------------------------
    async def on_event(self, event_type: str, body: Mapping[str, Any]) -> None:
        key = _key(body)
        if event_type == "DELETED":
            self._known.pop(key, None)
            self._cancel(key)
            self._woken_by.pop(key, None)
            if not OrderProgress.from_status(body.get("status")).finished:
                await self._runtime.requests.order_deleted(body)
            return
        self._known[key] = body
        if key not in self._inflight:
            self._schedule(body)

    def _schedule(self, body: Mapping[str, Any]) -> None:
        key = _key(body)
        self._cancel(key)
        progress = OrderProgress.from_status(body.get("status"))
        if progress.finished:
            self._woken_by.pop(key, None)
            return
        due = progress.due()
        ref = order_issuer(body)
        if due is None:
            if ref is not None and self._runtime.issuers.ready(ref) is not None:
                self._start_in(key, 0.0)  # the issuer turned ready before we saw this order
            elif ref is not None:
                self._woken_by[key] = ref.signer_name
            return
        self._start_in(key, max(0.0, (due - _now()).total_seconds()))

    def _start_in(self, key: Key, delay: float) -> None:
        self._cancel(key)
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, lambda: self._runtime.spawn(self._attempt(key)))

    def _cancel(self, key: Key) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    # ---- one attempt --------------------------------------------------------------------------------
    async def _attempt(self, key: Key) -> None:
        self._timers.pop(key, None)
        body = self._known.get(key)
        if body is None or key in self._inflight:
            return
        self._inflight.add(key)
        latest: Mapping[str, Any] | None = None
        try:
            latest = await self._run(body)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("EstOrder %s/%s: the attempt failed unexpectedly; retrying", *key)
            self._inflight.discard(key)
            self._start_in(key, RETRY_AFTER_FAULT)
            return
        finally:
            self._inflight.discard(key)
        if latest is not None and key in self._known:
            self._known[key] = latest
            self._schedule(latest)

    async def _run(self, order: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Returns the order as last written (None when someone else changed it: its next event decides)."""
        runtime = self._runtime
        owners = runtime.requests.owners
        progress = OrderProgress.from_status(order.get("status"))
        if progress.finished:
            return order
        reference = order_owner(order)
        owner = owners.for_kind(str((reference or {}).get("kind")))
        ref = order_issuer(order)
        if reference is None or owner is None or ref is None:
            log.warning("EstOrder %s/%s names no request or issuer of ours; ignored", *_key(order))
            return None
        namespace = order["metadata"].get("namespace") if owner.resource.namespaced else None
        request = await owners.fetch(owner, str(reference["name"]), namespace)
        if request is None or request["metadata"].get("uid") != reference.get("uid"):
            return None  # the request is gone: garbage collection removes the order
        phase = owner.phase(request)
        if phase is Phase.FINISHED:
            # Our certificate was written and the process stopped before marking the order, or the
            # request was finished by other means: never enroll again.
            done = bool((request.get("status") or {}).get("certificate"))
            state = OrderState.ISSUED if done else OrderState.FAILED
            return await self._write(order, finish(progress, state, "the request was already finished"))
        if phase is not Phase.APPROVED:
            return None  # not approved (yet): nothing to do until the request changes
        issuer = runtime.issuers.ready(ref)
        if issuer is None:
            message = runtime.issuers.describe(ref)
            await owners.write(owner, request, owner.pending_status(request, message))
            return await self._write(order, wait_for_issuer(progress, message))
        attempt = start_attempt(progress, _now(), runtime.policy)
        started = await self._write(order, attempt)
        if started is None:
            return None
        outcome = await self._enroll(started, issuer, ref)
        result = after_attempt(attempt, outcome, _now(), runtime.policy)
        result = await self._report(owner, request, ref, issuer, outcome, result)
        if isinstance(outcome, Unauthorized | IssuerUnavailable):
            self._woken_by[_key(order)] = ref.signer_name
        return await self._write(started, result)

    async def _report(
        self,
        owner: Any,
        request: Mapping[str, Any],
        ref: IssuerRef,
        issuer: ReadyEstIssuer,
        outcome: Outcome,
        result: OrderProgress,
    ) -> OrderProgress:
        """Tell the request: its certificate, its failure, or why it still waits."""
        owners = self._runtime.requests.owners
        if isinstance(outcome, Enrolled):
            chain, ca = issued_parts(list(outcome.chain), issuer.ca_certificates)
            leaf = chain[0]
            written = await owners.finish(
                owner,
                request,
                lambda current: owner.enrolled_status(current, chain, ca, str(ref)),
                event=(
                    "Issued",
                    f"certificate issued by the EST server of {ref}, serial {leaf.serial_number:x}, "
                    f"not after {leaf.not_valid_after_utc.isoformat()}",
                ),
            )
            if not written:
                return finish(result, OrderState.FAILED, "the request was finished or removed meanwhile")
            log.info("%s %s issued by %s", owner.noun, request["metadata"]["name"], ref)
            return result
        if result.state is OrderState.FAILED:
            message = f"EST enrollment failed: {result.message}"
            await owners.finish(
                owner,
                request,
                lambda current: owner.failed_status(current, "Failed", message),
                event=("Failed", message),
                warning=True,
            )
            log.warning("%s %s failed: %s", owner.noun, request["metadata"]["name"], result.message)
            return result
        await owners.write(owner, request, owner.pending_status(request, result.message))
        return result

    async def _enroll(self, order: Mapping[str, Any], issuer: ReadyEstIssuer, ref: IssuerRef) -> Outcome:
        runtime = self._runtime
        spec = order.get("spec") or {}
        try:
            csr = load_csr(decode_request_field(str(spec.get("request") or "")))
        except RequestError as exc:
            return Refused(f"spec.request: {exc}")
        namespace = issuer.secret_namespace
        try:
            credentials = await load_credentials(issuer.spec, runtime.secrets.lookup(namespace), namespace)
        except IssuerNotReady as exc:
            return IssuerUnavailable(f"{ref}: {exc.message}")
        identity = await self._renewal_identity(order, issuer) if spec.get("renewal") else None
        url = issuer.spec.endpoint.url("simplereenroll" if identity else "simpleenroll")
        try:
            async with runtime.client(issuer.spec.endpoint, credentials) as client:
                async with asyncio.timeout(runtime.attempt_deadline):
                    if identity is not None:
                        result = await client.simplereenroll(csr, current=identity)
                    else:
                        result = await client.simpleenroll(csr)
        except EstError as exc:
            return classify(exc)
        except TimeoutError:
            return Unavailable(
                f"EST enrollment at {url}: no complete answer within {runtime.attempt_deadline:g} s; "
                "the server is overloaded or unreachable"
            )
        if isinstance(result, Pending):
            return Accepted(result.retry_after)
        return Enrolled(tuple(result))

    async def _renewal_identity(
        self, order: Mapping[str, Any], issuer: ReadyEstIssuer
    ) -> ClientCertificate | None:
        meta = order["metadata"]
        secret_name = (meta.get("annotations") or {}).get(RENEWAL_SECRET_ANNOTATION)
        secret = (
            await self._runtime.api.find(SECRETS, str(secret_name), meta.get("namespace"))
            if secret_name
            else None
        )
        identity = renewal_identity(secret, issuer.ca_certificates)
        if identity is None:
            log.info(
                "EstOrder %s/%s: the certificate to renew is gone or no longer current; enrolling anew",
                meta.get("namespace"),
                meta["name"],
            )
        return identity

    async def _write(self, order: Mapping[str, Any], progress: OrderProgress) -> Mapping[str, Any] | None:
        """The order's status, with its resourceVersion as precondition; None when it moved on."""
        meta = order["metadata"]
        patch = {
            "metadata": {"resourceVersion": meta["resourceVersion"]},
            "status": progress.to_status(_now()),
        }
        try:
            written = await self._runtime.api.patch(
                EST_ORDERS, meta["name"], patch, meta.get("namespace"), subresource="status"
            )
        except ApiError as exc:
            if exc.conflict or exc.not_found:
                return None
            raise
        return written


def _plain(body: Any) -> dict[str, Any]:
    return copy.deepcopy(dict(body))


@kopf.on.event(EST_ORDERS.group, EST_ORDERS.version, EST_ORDERS.plural, registry=registry)
async def est_order_event(type: str, body: Any, memo: Runtime, **_: Any) -> None:
    await est_runtime(memo).orders.on_event(type or "ADDED", _plain(body))
