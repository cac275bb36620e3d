"""CertificateRequests (issuerRef.group est.mitre.org) and CSRs (EST signer names) → one EstOrder each.

The issuer contract of issuers.contract decides first: nothing before approval, the denial recorded, a
finished request left alone, an unusable request failed at once. An approved request waits (Pending,
woken when the issuer turns ready) until its issuer is ready; then it gets its EstOrder, whose controller
(operator.est.orders) enrolls and writes the result back. The order's name is derived from the request,
so a repeated event finds the order instead of creating a second one; an order deleted before it
finished is created again. A request whose EstOrder the EST seed made (``<request>-order``) keeps that
order: it is taken over, never doubled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from keyward.issuers.contract import Phase
from keyward.issuers.est.orders import order_manifest, order_name, renewal_identity, upstream_order_name
from keyward.issuers.objects import OrderView, OwnerReference, RequestFields, SecretView
from keyward.issuers.signer_names import IssuerRef
from keyward.kube.client import ApiError, Kube
from keyward.kube.objects import name_of
from keyward.kube.resources import CERTIFICATE_REQUESTS, CERTIFICATES, CSRS, EST_GROUP, EST_ORDERS, SECRETS
from keyward.operator import metrics
from keyward.operator.est.issuers import EstIssuers, ReadyEstIssuer
from keyward.operator.references import DENIED_REFERENCE, SignerReferences
from keyward.operator.requests import CertificateRequests, Csrs, RequestKind
from keyward.operator.status import StatusWriter
from keyward.operator.waiting import Waiting
from keyward.pki.csr import decode_request_field
from keyward.pki.errors import RequestError

if TYPE_CHECKING:
    from keyward.operator.est.orders import EstOrders

log = logging.getLogger("keyward.est.requests")
CERTIFICATE_NAME_ANNOTATION = "cert-manager.io/certificate-name"


class EstRequestKinds:
    """Both request kinds for EST issuers."""

    def __init__(self, *, csr_full_chain: bool) -> None:
        self.certificate_requests = CertificateRequests(EST_GROUP)
        self.csrs = Csrs(EST_GROUP, full_chain=csr_full_chain)

    def for_kind(self, kind: str) -> CertificateRequests | Csrs | None:
        if kind == CERTIFICATE_REQUESTS.kind:
            return self.certificate_requests
        if kind == CSRS.kind:
            return self.csrs
        return None


def _wants(kind: RequestKind) -> Any:
    return lambda body: kind.phase(body) is Phase.APPROVED


class EstRequests:
    def __init__(
        self,
        *,
        kube: Kube,
        writer: StatusWriter,
        issuers: EstIssuers,
        operator_namespace: str,
        csr_full_chain: bool,
        references: SignerReferences | None = None,
    ) -> None:
        self._kube = kube
        #: The reference check of CSRs (may the requester use the namespaced issuer it names?).
        self._references = references
        self._writer = writer
        self._issuers = issuers
        self._operator_namespace = operator_namespace
        self.kinds = EstRequestKinds(csr_full_chain=csr_full_chain)
        self.orders: EstOrders | None = None  # set by the wiring (the two controllers know each other)
        #: Approved requests whose issuer is missing or not ready (or whose order could not be made).
        self.waiting: Waiting[str, tuple[RequestKind, Mapping[str, Any]]] = Waiting(
            self._retry, name="EST requests"
        )

    async def on_event(self, kind: RequestKind, event_type: str, body: Mapping[str, Any]) -> None:
        uid = str(body["metadata"]["uid"])
        if event_type == "DELETED":
            self.waiting.release(uid)
            return
        self.waiting.update(uid, (kind, body))
        await self._handle(kind, body)

    def wake(self, signer_name: str) -> None:
        """The issuer behind ``signer_name`` turned ready: go on with the requests that wait for it."""
        self.waiting.wake(signer_name)

    def close(self) -> None:
        self.waiting.close()

    async def order_deleted(self, order: Mapping[str, Any]) -> None:
        """An unfinished order was deleted: create it again if its request still needs it."""
        view = OrderView.from_body(order)
        reference = view.owner
        kind = self.kinds.for_kind(reference.kind) if reference is not None else None
        if reference is None or kind is None:
            return
        namespace = view.meta.namespace if kind.resource.namespaced else None
        body = await self._kube.find(kind.resource, reference.name, namespace)
        if body is not None and body["metadata"].get("uid") == reference.uid:
            log.info("EstOrder %s was deleted before it finished: creating it again", view.meta.name)
            await self._handle(kind, body)

    async def _retry(self, item: tuple[RequestKind, Mapping[str, Any]]) -> None:
        await self._handle(*item)

    async def _handle(self, kind: RequestKind, body: Mapping[str, Any]) -> None:
        """Decide; an unexpected failure (the API, say) parks the request for a retry with backoff, or
        until its issuer's next check succeeds."""
        try:
            await self._decide(kind, body)
        except Exception as exc:
            ref = kind.issuer(body)
            log.warning("%s %s: %s; retrying later", kind.noun, name_of(body), exc)
            self.waiting.park(str(body["metadata"]["uid"]), (kind, body), ref.signer_name if ref else None)

    # ---- the decision ---------------------------------------------------------------------------------
    async def _decide(self, kind: RequestKind, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        uid = str(meta["uid"])
        phase = kind.phase(body)
        if phase is Phase.FINISHED:
            self.waiting.release(uid)
            return
        if phase is Phase.AWAITING_APPROVAL:
            return
        if phase is Phase.DENIED:
            status = kind.denied_status(body)
            ref = kind.issuer(body)
            if status is not None and await self._writer.write(
                kind.resource, body, status, event=("Denied", "the request was denied; not enrolled")
            ):
                metrics.DENIED.labels(ref.kind if ref else "", kind.resource.kind).inc()
            return
        ref = kind.issuer(body)
        if ref is None:
            return
        assert self.orders is not None, "wired by EstControllers"
        namespace = meta.get("namespace") or self._operator_namespace
        name = order_name(meta["name"], uid)
        if self.orders.for_request(uid):
            self.orders.request_changed(uid)
            return
        if self.orders.exists(namespace, name):
            return
        if kind.resource is CERTIFICATE_REQUESTS and await self._seed_order(meta):
            return
        try:
            fields = RequestFields.from_body(body)
            kind.decode(fields)  # checks the CSR: an unusable request fails now, without an order
            request_pem = decode_request_field(fields.request)
        except RequestError as exc:
            problem = str(exc)
            await self._fail(kind, body, ref, "Failed", problem, f"request rejected: {problem}")
            return
        issuer = self._issuers.ready(ref)
        if issuer is None:
            message = self._issuers.describe(ref)
            reason = "issuer_missing" if message and "not found" in message else "issuer_not_ready"
            self.waiting.park(uid, (kind, body), ref.signer_name, reason=reason)
            if message is None:  # its first check is under way: its outcome wakes this, or a retry tells
                return
            status = kind.pending_status(body, message)
            written = await self._writer.write(kind.resource, body, status) if status else None
            if written is not None:
                self.waiting.update(uid, (kind, written))
            return
        if kind.resource is CSRS and self._references is not None:
            denial = await self._references.denial(body, ref)  # no answer: retried (see _handle)
            if denial is not None:
                await self._fail(kind, body, ref, DENIED_REFERENCE, denial, denial)
                return
        self.waiting.release(uid)
        renewal_secret = await self._renewal_secret(kind, body, issuer)
        manifest = order_manifest(
            name=name,
            namespace=namespace,
            owner=OwnerReference(kind.resource.api_version, kind.resource.kind, meta["name"], uid),
            issuer=ref,
            request_pem=request_pem,
            renewal_secret=renewal_secret,
        )
        try:
            created = await self._kube.create(EST_ORDERS, manifest, namespace)
        except ApiError as exc:
            if exc.status == 409:
                return  # made by an earlier event (or another replica): it is in charge
            message = f"cannot create EstOrder {namespace}/{name} ({exc}); retrying"
            status = kind.pending_status(body, message)
            if status:
                await self._writer.write(kind.resource, body, status)
            raise
        self.orders.remember(created)
        how = "re-enrolling (simplereenroll)" if renewal_secret else "enrolling"
        log.info("%s %s: %s at %s, EstOrder %s/%s", kind.noun, name_of(body), how, ref, namespace, name)
        status = kind.pending_status(body, f"{how} at the EST server of {ref} (EstOrder {name})")
        if status:
            await self._writer.write(kind.resource, body, status)

    async def _fail(
        self,
        kind: RequestKind,
        body: Mapping[str, Any],
        ref: IssuerRef,
        reason: str,
        problem: str,
        event: str,
    ) -> None:
        """The request fails for good, without an order: ``problem`` in its status, once."""
        self.waiting.release(str(body["metadata"]["uid"]))
        if await self._writer.finish(
            kind.resource,
            body,
            lambda current: kind.failed_status(current, reason, problem),
            wanted=_wants(kind),
            event=(reason, event),
            warning=True,
        ):
            metrics.FAILED.labels(ref.kind, kind.resource.kind).inc()

    async def _seed_order(self, meta: Mapping[str, Any]) -> bool:
        """Whether the EST seed made this request's EstOrder (then the order controller takes it over)."""
        order = await self._kube.find(EST_ORDERS, upstream_order_name(meta["name"]), meta["namespace"])
        reference = OrderView.from_body(order).owner if order is not None else None
        if order is None or reference is None or reference.uid != meta["uid"]:
            return False
        assert self.orders is not None
        self.orders.remember(order)
        log.info(
            "CertificateRequest %s: EstOrder %s made by the EST operator is taken over",
            name_of({"metadata": meta}),
            order["metadata"]["name"],
        )
        return True

    async def _renewal_secret(
        self, kind: RequestKind, body: Mapping[str, Any], issuer: ReadyEstIssuer
    ) -> str | None:
        """The Certificate's Secret, when it already holds a certificate from this issuer (a renewal)."""
        if kind.resource is not CERTIFICATE_REQUESTS:
            return None
        meta = body["metadata"]
        name = (meta.get("annotations") or {}).get(CERTIFICATE_NAME_ANNOTATION) or next(
            (r.get("name") for r in meta.get("ownerReferences") or [] if r.get("kind") == CERTIFICATES.kind),
            None,
        )
        if not name:
            return None
        certificate = await self._kube.find(CERTIFICATES, str(name), meta["namespace"])
        secret_name = ((certificate or {}).get("spec") or {}).get("secretName")
        if not secret_name:
            return None
        secret = await self._kube.find(SECRETS, str(secret_name), meta["namespace"])
        view = SecretView.from_body(secret) if secret is not None else None
        if renewal_identity(view, issuer.ca_certificates) is None:
            return None
        return str(secret_name)
