"""cert-manager CertificateRequests for TCS issuers (issuerRef.group tcs.intel.com)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import kopf

from keyward.issuers import conditions
from keyward.issuers.contract import (
    Phase,
    certificate_request_phase,
    denial_message,
    from_certificate_request,
)
from keyward.issuers.signer_names import TCS_GROUP, IssuerRef, issuer_ref_from_request
from keyward.kube.resources import CERTIFICATE_REQUESTS
from keyward.operator.registry import registry
from keyward.operator.services import ReadyCa, Runtime
from keyward.pki.issue import IssuedCertificate


def _ready(body: Mapping[str, Any], ok: bool, reason: str, message: str) -> list[dict[str, Any]]:
    previous = (body.get("status") or {}).get("conditions")
    return conditions.replace(previous, conditions.make("Ready", ok, reason, message, previous=previous))


class CertificateRequestAdapter:
    resource = CERTIFICATE_REQUESTS
    noun = "CertificateRequest"  # for log lines (also of the EST owners that extend this adapter)

    def __init__(self, group: str = TCS_GROUP) -> None:
        self.group = group

    def phase(self, body: Mapping[str, Any]) -> Phase:
        return certificate_request_phase(body)

    def issuer(self, body: Mapping[str, Any]) -> IssuerRef | None:
        ref = issuer_ref_from_request(
            (body.get("spec") or {}).get("issuerRef") or {}, body["metadata"].get("namespace", "")
        )
        return ref if ref is not None and ref.group == self.group else None

    #: A function, not a method: the signing pipeline sends it to a signing process with the request.
    decode = staticmethod(from_certificate_request)

    def issued_status(
        self, body: Mapping[str, Any], issued: IssuedCertificate, ca: ReadyCa
    ) -> dict[str, Any]:
        return {
            "certificate": base64.b64encode(issued.chain_pem()).decode(),
            "ca": base64.b64encode(issued.ca_pem()).decode(),
            "conditions": _ready(body, True, "Issued", "Certificate fetched from issuer successfully"),
        }

    def failed_status(self, body: Mapping[str, Any], reason: str, message: str) -> dict[str, Any]:
        return {"conditions": _ready(body, False, reason, message), "failureTime": conditions.now_rfc3339()}

    def denied_status(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        return {
            "conditions": _ready(body, False, "Denied", denial_message(body)),
            "failureTime": conditions.now_rfc3339(),
        }

    def pending_status(self, body: Mapping[str, Any], message: str) -> dict[str, Any] | None:
        ready = conditions.find((body.get("status") or {}).get("conditions"), "Ready")
        if ready is not None and ready.get("reason") == "Pending" and ready.get("message") == message:
            return None  # already says so: no write, no event loop
        return {"conditions": _ready(body, False, "Pending", message)}


def is_tcs_request(spec: Mapping[str, Any], **_: Any) -> bool:
    return ((spec or {}).get("issuerRef") or {}).get("group") == TCS_GROUP


@kopf.on.event(
    CERTIFICATE_REQUESTS.group,
    CERTIFICATE_REQUESTS.version,
    CERTIFICATE_REQUESTS.plural,
    when=is_tcs_request,
    registry=registry,
)
async def certificate_request_event(
    type: str, body: Any, memo: Runtime, tcsissuer_states: Any, tcsclusterissuer_states: Any, **_: Any
) -> None:
    pipeline = memo.extras["tcs_certificate_requests"]
    pipeline.issuer_state.bind(tcsissuer_states, tcsclusterissuer_states)
    await pipeline.on_event(type or "ADDED", body)
