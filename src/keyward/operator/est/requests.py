"""CertificateRequests (issuerRef.group est.mitre.org) and CSRs (EST signer names) → one EstOrder each.

The issuer contract of issuers.requests decides first: nothing before approval, the denial recorded, a
finished request left alone, an unusable request failed at once. An approved request waits (Pending,
woken when the issuer turns ready) until its issuer is ready; then it gets its EstOrder, whose controller
(est_orders) enrolls and writes the result back. The order's name is derived from the request, so a
repeated event finds the order instead of creating a second one; an order deleted before it finished is
created again.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from keyward.issuers.contract import Phase
from keyward.issuers.est.orders import order_manifest, order_name, order_owner, renewal_identity
from keyward.issuers.signer_names import EST_GROUP, MalformedSignerName, parse_signer_name
from keyward.kube.client import ApiError
from keyward.kube.resources import CERTIFICATE_REQUESTS, CERTIFICATES, CSRS, EST_ORDERS, SECRETS
from keyward.operator.est.issuers import ReadyEstIssuer
from keyward.operator.est.owners import EstCertificateRequests, Owner, Owners
from keyward.operator.est.services import EstRuntime, est_runtime
from keyward.operator.registry import registry
from keyward.operator.services import Runtime
from keyward.pki.csr import decode_request_field
from keyward.pki.errors import RequestError

log = logging.getLogger("keyward.est.requests")
CERTIFICATE_NAME_ANNOTATION = "cert-manager.io/certificate-name"


class EstRequests:
    def __init__(self, runtime: EstRuntime) -> None:
        self._runtime = runtime
        self.owners = Owners(runtime.api, csr_full_chain=runtime.memo.settings.csr_full_cert_chain)
        #: Approved requests whose issuer is missing or not ready, by uid: (adapter, body, signer name).
        self._parked: dict[str, tuple[Owner, Mapping[str, Any], str]] = {}

    async def on_event(self, owner: Owner, event_type: str, body: Mapping[str, Any]) -> None:
        uid = str(body["metadata"]["uid"])
        if event_type == "DELETED":
            self._parked.pop(uid, None)
            return
        await self._handle(owner, body)

    async def _handle(self, owner: Owner, body: Mapping[str, Any]) -> None:
        """Decide; an unexpected failure (the API, say) parks the request until its issuer's next check."""
        try:
            await self._decide(owner, body)
        except Exception as exc:
            ref = owner.issuer(body)
            log.warning(
                "%s %s: %s; retrying after the next check of its issuer", owner.noun, _name(body), exc
            )
            if ref is not None:
                self._parked[str(body["metadata"]["uid"])] = (owner, body, ref.signer_name)

    def kick(self, signer_name: str) -> None:
        """The issuer behind ``signer_name`` turned ready: go on with the requests that wait for it."""
        for uid, (owner, body, signer) in list(self._parked.items()):
            if signer == signer_name:
                del self._parked[uid]
                self._runtime.spawn(self._handle(owner, body))

    async def order_deleted(self, order: Mapping[str, Any]) -> None:
        """An unfinished order was deleted: create it again if its request still needs it."""
        reference = order_owner(order)
        owner = self.owners.for_kind(str((reference or {}).get("kind")))
        if reference is None or owner is None:
            return
        namespace = order["metadata"].get("namespace") if owner.resource.namespaced else None
        body = await self.owners.fetch(owner, str(reference["name"]), namespace)
        if body is not None and body["metadata"].get("uid") == reference.get("uid"):
            log.info(
                "EstOrder %s was deleted before it finished: creating it again", order["metadata"]["name"]
            )
            await self._handle(owner, body)

    # ---- the decision ---------------------------------------------------------------------------------
    async def _decide(self, owner: Owner, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        uid = str(meta["uid"])
        phase = owner.phase(body)
        if phase is Phase.FINISHED:
            self._parked.pop(uid, None)
            return
        if phase is Phase.AWAITING_APPROVAL:
            return
        if phase is Phase.DENIED:
            await self.owners.write(
                owner,
                body,
                owner.denied_status(body),
                event=("Denied", "the request was denied; not enrolled"),
            )
            return
        ref = owner.issuer(body)
        if ref is None:
            return
        namespace = meta.get("namespace") or self._runtime.memo.settings.operator_namespace
        name = order_name(meta["name"], uid)
        if self._runtime.orders.exists(namespace, name):
            return
        try:
            owner.decode(body)  # checks the CSR: an unusable request fails now, without an order
            request_pem = decode_request_field(owner.request_field(body))
        except RequestError as exc:
            problem = str(exc)
            self._parked.pop(uid, None)
            await self.owners.finish(
                owner,
                body,
                lambda current: owner.failed_status(current, "Failed", problem),
                event=("Failed", f"request rejected: {problem}"),
                warning=True,
            )
            return
        issuer = self._runtime.issuers.ready(ref)
        if issuer is None:
            self._parked[uid] = (owner, body, ref.signer_name)
            written = await self.owners.write(
                owner, body, owner.pending_status(body, self._runtime.issuers.describe(ref))
            )
            if written is not None and uid in self._parked:
                self._parked[uid] = (owner, written, ref.signer_name)
            return
        self._parked.pop(uid, None)
        renewal_secret = await self._renewal_secret(owner, body, issuer)
        manifest = order_manifest(
            name=name,
            namespace=namespace,
            owner={**body, "apiVersion": owner.resource.api_version, "kind": owner.resource.kind},
            issuer=ref,
            request_pem=request_pem,
            renewal_secret=renewal_secret,
        )
        try:
            created = await self._runtime.api.create(EST_ORDERS, manifest, namespace)
        except ApiError as exc:
            if exc.status == 409:
                return  # made by an earlier event (or another replica): it is in charge
            message = f"cannot create EstOrder {namespace}/{name} ({exc}); retrying"
            await self.owners.write(owner, body, owner.pending_status(body, message))
            raise
        self._runtime.orders.remember(created)
        how = "re-enrolling (simplereenroll)" if renewal_secret else "enrolling"
        log.info("%s %s: %s at %s, EstOrder %s/%s", owner.noun, _name(body), how, ref, namespace, name)
        await self.owners.write(
            owner, body, owner.pending_status(body, f"{how} at the EST server of {ref} (EstOrder {name})")
        )

    async def _renewal_secret(
        self, owner: Owner, body: Mapping[str, Any], issuer: ReadyEstIssuer
    ) -> str | None:
        """The Certificate's Secret, when it already holds a certificate from this issuer (a renewal)."""
        if not isinstance(owner, EstCertificateRequests):
            return None
        meta = body["metadata"]
        name = (meta.get("annotations") or {}).get(CERTIFICATE_NAME_ANNOTATION) or next(
            (r.get("name") for r in meta.get("ownerReferences") or [] if r.get("kind") == CERTIFICATES.kind),
            None,
        )
        if not name:
            return None
        certificate = await self._runtime.api.find(CERTIFICATES, str(name), meta["namespace"])
        secret_name = ((certificate or {}).get("spec") or {}).get("secretName")
        if not secret_name:
            return None
        secret = await self._runtime.api.find(SECRETS, str(secret_name), meta["namespace"])
        if renewal_identity(secret, issuer.ca_certificates) is None:
            return None
        return str(secret_name)


def _name(body: Mapping[str, Any]) -> str:
    meta = body["metadata"]
    return f"{meta.get('namespace') + '/' if meta.get('namespace') else ''}{meta['name']}"


def _plain(body: Any) -> dict[str, Any]:
    return copy.deepcopy(dict(body))


def is_est_request(spec: Any, **_: Any) -> bool:
    return ((spec or {}).get("issuerRef") or {}).get("group") == EST_GROUP


def is_est_signer(spec: Any, **_: Any) -> bool:
    """Filter without any API call; a malformed name in the EST group is logged and ignored."""
    try:
        return parse_signer_name((spec or {}).get("signerName", ""), group=EST_GROUP) is not None
    except MalformedSignerName as exc:
        log.warning("ignoring CertificateSigningRequest: %s", exc)
        return False


@kopf.on.event(
    CERTIFICATE_REQUESTS.group,
    CERTIFICATE_REQUESTS.version,
    CERTIFICATE_REQUESTS.plural,
    when=is_est_request,
    registry=registry,
)
async def est_certificate_request_event(type: str, body: Any, memo: Runtime, **_: Any) -> None:
    requests = est_runtime(memo).requests
    await requests.on_event(requests.owners.certificate_requests, type or "ADDED", _plain(body))


@kopf.on.event(CSRS.group, CSRS.version, CSRS.plural, when=is_est_signer, registry=registry)
async def est_csr_event(type: str, body: Any, memo: Runtime, **_: Any) -> None:
    requests = est_runtime(memo).requests
    await requests.on_event(requests.owners.csrs, type or "ADDED", _plain(body))
