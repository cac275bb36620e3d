"""Kubernetes CertificateSigningRequests for TCS signer names."""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from keyward.issuers import conditions
from keyward.issuers.contract import Phase, csr_phase, from_csr
from keyward.issuers.signer_names import TCS_GROUP, IssuerRef, MalformedSignerName, parse_signer_name
from keyward.kube.resources import CSRS
from keyward.operator.registry import registry
from keyward.operator.services import ReadyCa, Runtime
from keyward.pki.issue import IssuedCertificate

log = logging.getLogger("keyward.csr")


class CsrAdapter:
    resource = CSRS
    noun = "CertificateSigningRequest"

    def __init__(self, group: str = TCS_GROUP, *, full_chain: bool = False) -> None:
        self.group = group
        self.full_chain = full_chain

    def phase(self, body: Mapping[str, Any]) -> Phase:
        return csr_phase(body)

    def issuer(self, body: Mapping[str, Any]) -> IssuerRef | None:
        try:
            return parse_signer_name((body.get("spec") or {}).get("signerName", ""), group=self.group)
        except MalformedSignerName:
            return None

    #: A function, not a method: the signing pipeline sends it to a signing process with the request.
    decode = staticmethod(from_csr)

    def issued_status(
        self, body: Mapping[str, Any], issued: IssuedCertificate, ca: ReadyCa
    ) -> dict[str, Any]:
        pem = issued.chain_pem() if self.full_chain else issued.leaf_pem()
        return {"certificate": base64.b64encode(pem).decode()}

    def failed_status(self, body: Mapping[str, Any], reason: str, message: str) -> dict[str, Any]:
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

    def denied_status(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        return None

    def pending_status(self, body: Mapping[str, Any], message: str) -> dict[str, Any] | None:
        return None  # a CSR has no Pending condition; waiting shows as Approved without a certificate


def is_our_signer(spec: Mapping[str, Any], **_: Any) -> bool:
    """Filter without any API call; a malformed name in our group is logged and ignored."""
    name = (spec or {}).get("signerName", "")
    try:
        return parse_signer_name(name, group=TCS_GROUP) is not None
    except MalformedSignerName as exc:
        log.warning("ignoring CertificateSigningRequest: %s", exc)
        return False


@kopf.on.event(CSRS.group, CSRS.version, CSRS.plural, when=is_our_signer, registry=registry)
async def csr_event(
    type: str, body: Any, memo: Runtime, tcsissuer_states: Any, tcsclusterissuer_states: Any, **_: Any
) -> None:
    pipeline = memo.extras["tcs_csrs"]
    pipeline.issuer_state.bind(tcsissuer_states, tcsclusterissuer_states)
    await pipeline.on_event(type or "ADDED", body)
