"""EstOrders: perform the enrollment at the EST server and write the result to the owning request.

One attempt at a time per order (in this process), and across processes the order's own status is the
lock: an attempt starts with a write of ``Enrolling`` carrying the order's resourceVersion, so of two
operators racing only one gets to enroll; the order's ``nextAttemptTime`` while Enrolling is the lease after
which an abandoned attempt (the process died) is taken over. An issued chain is recorded on the order
before it goes to the request (in one status write with the request's resourceVersion), and only then
is the order marked Issued: a failed write or a crash in between leads to writing the recorded chain,
never to enrolling again. An order whose request already has a certificate is marked Issued without
enrolling. Issued and Failed orders are never acted on again.

Timing lives in memory (``operator.waiting``, from ``nextAttemptTime``); an operator restart rebuilds it
from the orders' status, so a 202 Retry-After or a 401 delay survives restarts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import kopf
from cryptography import x509

from keyward.est.client import ClientCertificate, EstError, Pending
from keyward.issuers.contract import Phase
from keyward.issuers.errors import IssuerNotReady
from keyward.issuers.est.issuer import SecretLookup, load_credentials
from keyward.issuers.est.orders import (
    Accepted,
    Enrolled,
    IssuerUnavailable,
    OrderProgress,
    OrderState,
    Outcome,
    Refused,
    RetryPolicy,
    Unauthorized,
    Unavailable,
    after_attempt,
    classify,
    finish,
    issued_parts,
    order_issuer,
    parse_time,
    record,
    renewal_identity,
    start_attempt,
    wait_for_issuer,
)
from keyward.issuers.objects import ObjectMeta, OrderView, RequestObject, SecretView
from keyward.issuers.signer_names import IssuerRef
from keyward.kube.client import Kube
from keyward.kube.objects import plain
from keyward.kube.resources import EST_ORDERS, SECRETS
from keyward.operator import metrics
from keyward.operator.est.issuers import ClientFactory, EstIssuers, ReadyEstIssuer
from keyward.operator.est.requests import EstRequestKinds
from keyward.operator.registry import registry
from keyward.operator.requests import RequestKind
from keyward.operator.services import Services
from keyward.operator.status import StatusWriter
from keyward.operator.waiting import Waiting
from keyward.pki.csr import decode_request_field, load_csr
from keyward.pki.errors import RequestError

log = logging.getLogger("keyward.est.orders")
Key = tuple[str, str]
RETRY_AFTER_FAULT = 10.0  # seconds, after an unexpected error (a bug, say)


def _now() -> datetime:
    return datetime.now(UTC)


def _key(body: Mapping[str, Any]) -> Key:
    meta = body["metadata"]
    return str(meta.get("namespace") or ""), str(meta["name"])


class EstOrders:
    def __init__(
        self,
        *,
        kube: Kube,
        writer: StatusWriter,
        issuers: EstIssuers,
        kinds: EstRequestKinds,
        client: ClientFactory,
        secrets: Callable[[str], SecretLookup],
        policy: RetryPolicy,
        attempt_deadline: float,
        recreate: Callable[[Mapping[str, Any]], Awaitable[None]],
    ) -> None:
        self._kube = kube
        self._writer = writer
        self._issuers = issuers
        self._kinds = kinds
        self._client = client
        self._secrets = secrets
        self._policy = policy
        self._attempt_deadline = attempt_deadline
        self._recreate = recreate
        self._known: dict[Key, Mapping[str, Any]] = {}
        #: The request (uid) each known order is for: one order per request, whoever named it.
        self._requests: dict[str, Key] = {}
        self._inflight: set[Key] = set()
        #: Orders waiting for their next attempt: a time, or their issuer (after a 401: fixed credentials).
        self.waiting: Waiting[Key, Key] = Waiting(self._attempt, name="EST orders")
        #: Orders that a ready issuer wakes early: waiting for it, or for credentials fixed after a 401.
        self._woken_by_issuer: set[Key] = set()

    # ---- what the request controller asks ----------------------------------------------------------
    def exists(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self._known

    def for_request(self, uid: str) -> bool:
        """Whether an order for the request with ``uid`` is known (keyward's, or one the EST seed made)."""
        return uid in self._requests

    def request_changed(self, uid: str) -> None:
        """The request with ``uid`` changed (approved, say): its order decides again, unless it is busy.
        (An order the EST seed made exists before approval; keyward's own only after it.)"""
        key = self._requests.get(uid)
        body = self._known.get(key) if key is not None else None
        if body is not None and key not in self._inflight:
            self._schedule(body)

    def remember(self, body: Mapping[str, Any]) -> None:
        self._known.setdefault(_key(body), body)
        self._index(body)

    def _index(self, body: Mapping[str, Any]) -> None:
        reference = OrderView.from_body(body).owner
        if reference is not None:
            self._requests[reference.uid] = _key(body)

    def wake(self, signer_name: str) -> None:
        self.waiting.wake(signer_name)

    def close(self) -> None:
        self.waiting.close()

    # ---- events -------------------------------------------------------------------------------------
    async def on_event(self, event_type: str, body: Mapping[str, Any]) -> None:
        key = _key(body)
        if event_type == "DELETED":
            self._known.pop(key, None)
            view = OrderView.from_body(body)
            if view.owner is not None and self._requests.get(view.owner.uid) == key:
                del self._requests[view.owner.uid]
            self.waiting.release(key)
            self._woken_by_issuer.discard(key)
            if not OrderProgress.of(view).finished:
                await self._recreate(body)
            return
        self._known[key] = body
        self._index(body)
        if key not in self._inflight:
            self._schedule(body)

    def _schedule(self, body: Mapping[str, Any]) -> None:
        key = _key(body)
        view = OrderView.from_body(body)
        progress = OrderProgress.of(view)
        if progress.finished:
            self.waiting.release(key)
            self._woken_by_issuer.discard(key)
            return
        due = progress.due()
        ref = order_issuer(view)
        woken = ref is not None and (due is None or key in self._woken_by_issuer)
        label = ref.signer_name if ref is not None and woken else None
        if due is None:
            if ref is not None and self._issuers.ready(ref) is not None:
                self.waiting.park(key, key, label, delay=0.0)  # the issuer turned ready before we saw it
            else:
                self.waiting.park(
                    key, key, label, delay=self._policy.backoff_limit, reason="issuer_not_ready"
                )
            return
        delay = max(0.0, (due - _now()).total_seconds())
        self.waiting.park(
            key, key, label, delay=delay, reason="est_retry" if progress.attempts else "waiting"
        )

    # ---- one attempt --------------------------------------------------------------------------------
    async def _attempt(self, key: Key) -> None:
        body = self._known.get(key)
        if body is None or key in self._inflight:
            return
        self._woken_by_issuer.discard(key)
        self._inflight.add(key)
        latest: Mapping[str, Any] | None = None
        try:
            latest = await self._run(body)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("EstOrder %s/%s: the attempt failed unexpectedly; retrying", *key)
            self.waiting.park(key, key, delay=RETRY_AFTER_FAULT)
            return
        finally:
            self._inflight.discard(key)
        if latest is not None and key in self._known:
            self._known[key] = latest
            self._schedule(latest)

    async def _run(self, order: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Returns the order as last written (None when someone else changed it: its next event decides)."""
        view = OrderView.from_body(order)
        progress = OrderProgress.of(view)
        if progress.finished:
            return order
        reference = view.owner
        kind = self._kinds.for_kind(reference.kind) if reference is not None else None
        ref = order_issuer(view)
        if reference is None or kind is None or ref is None:
            log.warning("EstOrder %s/%s names no request or issuer of ours; ignored", *_key(order))
            return None
        namespace = view.meta.namespace if kind.resource.namespaced else None
        request = await self._kube.find(kind.resource, reference.name, namespace)
        if request is None or request["metadata"].get("uid") != reference.uid:
            return None  # the request is gone: garbage collection removes the order
        phase = kind.phase(request)
        if phase is Phase.FINISHED:
            # Our certificate was written and the process stopped before marking the order, or the
            # request was finished by other means: never enroll again.
            done = RequestObject.from_body(request).has_certificate
            state = OrderState.ISSUED if done else OrderState.FAILED
            return await self._write(order, finish(progress, state, "the request was already finished"))
        if phase is not Phase.APPROVED:
            return None  # not approved (yet): nothing to do until the request changes
        issuer = self._issuers.ready(ref)
        if issuer is None:
            message = self._issuers.describe(ref) or f"{ref} is being checked"
            status = kind.pending_status(request, message)
            if status:
                await self._writer.write(kind.resource, request, status)
            return await self._write(order, wait_for_issuer(progress, message))
        recorded = progress.enrolled()
        if recorded is not None:  # enrolled before, not yet written to the request: write that chain
            return await self._deliver(order, progress, kind, request, ref, issuer, recorded)
        attempt = start_attempt(progress, _now(), self._policy)
        started = await self._write(order, attempt)
        if started is None:
            return None
        outcome = await self._enroll(started, issuer, ref)
        if isinstance(outcome, Enrolled):
            kept = await self._write(started, record(attempt, outcome.chain))
            return await self._deliver(kept or started, attempt, kind, request, ref, issuer, outcome.chain)
        result = after_attempt(attempt, outcome, _now(), self._policy)
        await self._report(kind, request, result)
        if isinstance(outcome, Unauthorized | IssuerUnavailable):
            self._woken_by_issuer.add(_key(order))
        return await self._write(started, result)

    async def _deliver(
        self,
        order: Mapping[str, Any],
        progress: OrderProgress,
        kind: RequestKind,
        request: Mapping[str, Any],
        ref: IssuerRef,
        issuer: ReadyEstIssuer,
        enrolled: Sequence[x509.Certificate],
    ) -> Mapping[str, Any] | None:
        """Write an issued chain to the request (exactly once), then mark the order Issued."""
        chain, ca = issued_parts(list(enrolled), issuer.ca_certificates)
        leaf = chain[0]
        written = await self._writer.finish(
            kind.resource,
            request,
            lambda current: kind.issued_status(
                current, chain, ca, f"Certificate fetched from {ref} successfully"
            ),
            wanted=lambda current: kind.phase(current) is Phase.APPROVED,
            event=(
                "Issued",
                f"certificate issued by the EST server of {ref}, serial {leaf.serial_number:x}, "
                f"not after {leaf.not_valid_after_utc.isoformat()}",
            ),
        )
        if written is None:
            # Finished meanwhile: by our own earlier write (a retry after a crash), or by other means.
            current = await self._kube.find(
                kind.resource, request["metadata"]["name"], request["metadata"].get("namespace")
            )
            done = current is not None and RequestObject.from_body(current).has_certificate
            state = OrderState.ISSUED if done else OrderState.FAILED
            result = finish(progress, state, "the request was finished or removed meanwhile")
        else:
            log.info("%s %s issued by %s", kind.noun, request["metadata"]["name"], ref)
            result = after_attempt(progress, Enrolled(tuple(enrolled)), _now(), self._policy)
            metrics.ISSUED.labels(ref.kind, kind.resource.kind).inc()
            created = parse_time(ObjectMeta.from_body(order).created)
            if created is not None:
                metrics.EST_ENROLLMENT.labels(ref.kind).observe(max(0.0, (_now() - created).total_seconds()))
        return await self._write(order, result)

    async def _report(self, kind: RequestKind, request: Mapping[str, Any], result: OrderProgress) -> None:
        """Tell the request its failure, or why it still waits."""
        if result.state is OrderState.FAILED:
            message = f"EST enrollment failed: {result.message}"
            if await self._writer.finish(
                kind.resource,
                request,
                lambda current: kind.failed_status(current, "Failed", message),
                wanted=lambda current: kind.phase(current) is Phase.APPROVED,
                event=("Failed", message),
                warning=True,
            ):
                ref = kind.issuer(request)
                metrics.FAILED.labels(ref.kind if ref else "", kind.resource.kind).inc()
            log.warning("%s %s failed: %s", kind.noun, request["metadata"]["name"], result.message)
            return
        status = kind.pending_status(request, result.message)
        if status:
            await self._writer.write(kind.resource, request, status)

    async def _enroll(self, order: Mapping[str, Any], issuer: ReadyEstIssuer, ref: IssuerRef) -> Outcome:
        view = OrderView.from_body(order)
        try:
            csr = load_csr(decode_request_field(view.request))
        except RequestError as exc:
            return Refused(f"spec.request: {exc}")
        namespace = issuer.secret_namespace
        try:
            credentials = await load_credentials(issuer.spec, self._secrets(namespace), namespace)
        except IssuerNotReady as exc:
            return IssuerUnavailable(f"{ref}: {exc.message}")
        identity = await self._renewal_identity(view, issuer) if view.renewal else None
        url = issuer.spec.endpoint.url("simplereenroll" if identity else "simpleenroll")
        try:
            async with self._client(issuer.spec.endpoint, credentials) as client:
                async with asyncio.timeout(self._attempt_deadline):
                    if identity is not None:
                        result = await client.simplereenroll(csr, current=identity)
                    else:
                        result = await client.simpleenroll(csr)
        except EstError as exc:
            return classify(exc)
        except TimeoutError:
            return Unavailable(
                f"EST enrollment at {url}: no complete answer within {self._attempt_deadline:g} s; "
                "the server is overloaded or unreachable"
            )
        if isinstance(result, Pending):
            return Accepted(result.retry_after)
        return Enrolled(tuple(result))

    async def _renewal_identity(self, order: OrderView, issuer: ReadyEstIssuer) -> ClientCertificate | None:
        meta, name = order.meta, order.renewal_secret
        secret = await self._kube.find(SECRETS, name, meta.namespace) if name else None
        view = SecretView.from_body(secret) if secret is not None else None
        identity = renewal_identity(view, issuer.ca_certificates)
        if identity is None:
            log.info(
                "EstOrder %s/%s: the certificate to renew is gone or no longer current; enrolling anew",
                meta.namespace,
                meta.name,
            )
        return identity

    async def _write(self, order: Mapping[str, Any], progress: OrderProgress) -> Mapping[str, Any] | None:
        """The order's status, with its resourceVersion as precondition; None when it moved on."""
        return await self._writer.write(EST_ORDERS, order, progress.to_status(_now()))


@kopf.on.event(*EST_ORDERS.handler_args, registry=registry)
async def est_order_event(type: str, body: Any, memo: Services, **_: Any) -> None:
    if memo.leadership.leading:
        await memo.est.orders.on_event(type or "ADDED", plain(body))
