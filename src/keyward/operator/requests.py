"""The two kinds of signing request keyward serves, and how each reads and is written.

cert-manager's CertificateRequest and Kubernetes' CertificateSigningRequest differ in where things are
(issuerRef vs signerName, conditions, where the chain goes) but follow one contract
(``keyward.issuers.contract``). A ``RequestKind`` hides the difference from the controllers of both
issuer families: the token-backed signing pipeline and the EST enrollment.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from cryptography import x509

from keyward.issuers import conditions
from keyward.issuers.contract import (
    Phase,
    SigningRequest,
    certificate_request_phase,
    csr_phase,
    denial_message,
    from_certificate_request,
    from_csr,
)
from keyward.issuers.objects import RequestFields, RequestObject
from keyward.issuers.signer_names import (
    IssuerRef,
    MalformedSignerName,
    issuer_ref_from_request,
    parse_signer_name,
)
from keyward.kube.resources import CERTIFICATE_REQUESTS, CSRS, Resource
from keyward.pki.pem import pem_chain

log = logging.getLogger("keyward.requests")
Status = dict[str, Any]


class RequestKind(Protocol):
    """How one kind of request (CertificateRequest, CSR) reads and is written, for one issuer group.

    ``issued_status`` takes cert-manager's split (``keyward.pki.pem.split_chain``): ``chain`` is the leaf
    and its intermediates, never a self-signed root; ``ca`` the certificates above (the root).
    """

    resource: Resource
    noun: str
    group: str

    @property
    def decode(self) -> Callable[[RequestFields], SigningRequest]:
        """A module-level function: the signing pipeline sends it to a signing process with the request's
        fields (``RequestFields``)."""
        ...

    def wants(self, spec: Mapping[str, Any]) -> bool: ...
    def phase(self, body: Mapping[str, Any]) -> Phase: ...
    def issuer(self, body: Mapping[str, Any]) -> IssuerRef | None: ...
    def issued_status(
        self,
        body: Mapping[str, Any],
        chain: Sequence[x509.Certificate],
        ca: Sequence[x509.Certificate],
        message: str,
    ) -> Status: ...
    def failed_status(self, body: Mapping[str, Any], reason: str, message: str) -> Status:
        """The request failed for good; ``reason`` ("Failed", "AttestationFailed") as the kind can say it."""
        ...

    def denied_status(self, body: Mapping[str, Any]) -> Status | None: ...
    def pending_status(self, body: Mapping[str, Any], message: str) -> Status | None: ...


def _ready(body: Mapping[str, Any], ok: bool, reason: str, message: str) -> list[conditions.Condition]:
    previous = (body.get("status") or {}).get("conditions")
    return conditions.replace(previous, conditions.make("Ready", ok, reason, message, previous=previous))


def _b64(certificates: Sequence[x509.Certificate]) -> str:
    return base64.b64encode(pem_chain(certificates)).decode()


class CertificateRequests:
    """cert-manager CertificateRequests whose issuerRef names an issuer of ``group``."""

    resource = CERTIFICATE_REQUESTS
    noun = "CertificateRequest"
    decode = staticmethod(from_certificate_request)

    def __init__(self, group: str) -> None:
        self.group = group

    def wants(self, spec: Mapping[str, Any]) -> bool:
        """A filter on the event body alone (no API call): does the issuerRef name our group?"""
        return ((spec or {}).get("issuerRef") or {}).get("group") == self.group

    def phase(self, body: Mapping[str, Any]) -> Phase:
        return certificate_request_phase(RequestObject.from_body(body))

    def issuer(self, body: Mapping[str, Any]) -> IssuerRef | None:
        request = RequestObject.from_body(body)
        ref = issuer_ref_from_request(request.issuer, request.meta.namespace)
        return ref if ref is not None and ref.group == self.group else None

    def issued_status(
        self,
        body: Mapping[str, Any],
        chain: Sequence[x509.Certificate],
        ca: Sequence[x509.Certificate],
        message: str,
    ) -> Status:
        return {
            "certificate": _b64(chain),
            "ca": _b64(ca),
            "conditions": _ready(body, True, "Issued", message),
        }

    def failed_status(self, body: Mapping[str, Any], reason: str, message: str) -> Status:
        """Ready=False with reason Failed whatever ``reason`` says: the reason cert-manager reads as final."""
        return {"conditions": _ready(body, False, "Failed", message), "failureTime": conditions.now_rfc3339()}

    def denied_status(self, body: Mapping[str, Any]) -> Status | None:
        return {
            "conditions": _ready(body, False, "Denied", denial_message(RequestObject.from_body(body))),
            "failureTime": conditions.now_rfc3339(),
        }

    def pending_status(self, body: Mapping[str, Any], message: str) -> Status | None:
        ready = RequestObject.from_body(body).condition("Ready")
        if ready is not None and ready.reason == "Pending" and ready.message == message:
            return None  # already says so: no write, no event loop
        return {"conditions": _ready(body, False, "Pending", message)}


class Csrs:
    """Kubernetes CertificateSigningRequests whose signerName names an issuer of ``group``."""

    resource = CSRS
    noun = "CertificateSigningRequest"
    decode = staticmethod(from_csr)

    def __init__(self, group: str, *, full_chain: bool = False) -> None:
        self.group = group
        #: The leaf and the CA certificates above it (Istio), instead of the leaf alone.
        self.full_chain = full_chain

    def wants(self, spec: Mapping[str, Any]) -> bool:
        """A filter on the event body alone; a malformed name in our group is logged and ignored."""
        name = (spec or {}).get("signerName", "")
        try:
            return parse_signer_name(name, group=self.group) is not None
        except MalformedSignerName as exc:
            log.warning("ignoring CertificateSigningRequest: %s", exc)
            return False

    def phase(self, body: Mapping[str, Any]) -> Phase:
        return csr_phase(RequestObject.from_body(body))

    def issuer(self, body: Mapping[str, Any]) -> IssuerRef | None:
        try:
            return parse_signer_name(RequestObject.from_body(body).signer_name, group=self.group)
        except MalformedSignerName:
            return None

    def issued_status(
        self,
        body: Mapping[str, Any],
        chain: Sequence[x509.Certificate],
        ca: Sequence[x509.Certificate],
        message: str,
    ) -> Status:
        """The leaf alone (what Kubernetes' own signers give), or with --csr-full-cert-chain the leaf,
        its intermediates and the root they lead to (Istio 1.12+ expects the root in the chain)."""
        if not self.full_chain:
            return {"certificate": _b64(chain[:1])}
        root = [c for c in ca if c.subject == chain[-1].issuer and c not in chain][:1]
        return {"certificate": _b64([*chain, *root])}

    def failed_status(self, body: Mapping[str, Any], reason: str, message: str) -> Status:
        previous = (body.get("status") or {}).get("conditions")
        now = conditions.now_rfc3339()
        failed = {
            "type": "Failed",
            "status": "True",
            "reason": "SigningFailed" if reason == "Failed" else reason,
            "message": message,
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        }
        return {"conditions": conditions.replace(previous, failed)}

    def denied_status(self, body: Mapping[str, Any]) -> Status | None:
        return None  # the API server keeps the denial; a signer writes nothing

    def pending_status(self, body: Mapping[str, Any], message: str) -> Status | None:
        return None  # a CSR has no Pending condition; waiting shows as Approved without a certificate
