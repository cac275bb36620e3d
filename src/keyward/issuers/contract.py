"""What to do with a signing request: cert-manager's issuer contract in one place.

The controllers feed request objects (plain dicts as the API returns them) through these pure
functions and act on the answer; every rule of the contract is here and unit-tested without a cluster.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography import x509

from keyward.issuers import conditions
from keyward.kube.resources import REQUEST_DURATION_ANNOTATION, REQUEST_IS_CA_ANNOTATION
from keyward.pki.csr import decode_request_field, load_csr
from keyward.pki.durations import parse_duration
from keyward.pki.errors import RequestError
from keyward.pki.profile import RequestProfile


class Phase(enum.Enum):
    FINISHED = "finished"  # leave it alone
    DENIED = "denied"  # record the denial (CertificateRequests only), never sign
    AWAITING_APPROVAL = "awaiting-approval"  # do nothing yet
    APPROVED = "approved"  # sign, if the issuer is ready


def certificate_request_phase(obj: Mapping[str, Any]) -> Phase:
    """Contract points 2-4 for a cert-manager CertificateRequest."""
    status = obj.get("status") or {}
    conds = status.get("conditions") or []
    ready = conditions.find(conds, "Ready")
    if status.get("certificate"):
        return Phase.FINISHED
    if ready is not None and (ready.get("status") == "True" or ready.get("reason") in ("Failed", "Denied")):
        return Phase.FINISHED
    if conditions.is_true(conds, "InvalidRequest"):
        return Phase.FINISHED
    if conditions.is_true(conds, "Denied"):
        return Phase.DENIED
    if not conditions.is_true(conds, "Approved"):
        return Phase.AWAITING_APPROVAL
    return Phase.APPROVED


def csr_phase(obj: Mapping[str, Any]) -> Phase:
    """A Kubernetes CSR: sign only approved, not denied, not failed, not yet signed requests."""
    status = obj.get("status") or {}
    conds = status.get("conditions") or []
    if status.get("certificate") or conditions.is_true(conds, "Failed"):
        return Phase.FINISHED
    if conditions.is_true(conds, "Denied"):
        return Phase.FINISHED  # the API server keeps the denial; a signer writes nothing
    if not conditions.is_true(conds, "Approved"):
        return Phase.AWAITING_APPROVAL
    return Phase.APPROVED


def denial_message(obj: Mapping[str, Any]) -> str:
    denied = conditions.find((obj.get("status") or {}).get("conditions"), "Denied") or {}
    return str(denied.get("message") or denied.get("reason") or "The CertificateRequest was denied")


@dataclass(frozen=True)
class SigningRequest:
    """A decoded, checked request: the CSR (signature verified) and what the requester asked for."""

    csr: x509.CertificateSigningRequest
    profile: RequestProfile


def request_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a request object that ``from_certificate_request`` and ``from_csr`` read (its spec and
    annotations): what is sent to a signing process instead of the whole object."""
    annotations = (obj.get("metadata") or {}).get("annotations")
    return {"spec": dict(obj.get("spec") or {}), "metadata": {"annotations": dict(annotations or {})}}


def from_certificate_request(obj: Mapping[str, Any]) -> SigningRequest:
    """Decode a CertificateRequest's spec; RequestError when the request itself is unusable."""
    spec = obj.get("spec") or {}
    csr = load_csr(decode_request_field(spec.get("request") or ""))
    duration = _duration(spec.get("duration"), "spec.duration")
    return SigningRequest(
        csr,
        RequestProfile(
            duration=duration, usages=tuple(spec.get("usages") or ()), is_ca=bool(spec.get("isCA"))
        ),
    )


def from_csr(obj: Mapping[str, Any]) -> SigningRequest:
    """Decode a Kubernetes CSR (spec.request is base64 of PEM in JSON)."""
    spec = obj.get("spec") or {}
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    try:
        pem = base64.b64decode(spec.get("request") or "", validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("spec.request is not base64") from None
    csr = load_csr(pem)
    duration: timedelta | None = None
    if spec.get("expirationSeconds") is not None:
        duration = timedelta(seconds=int(spec["expirationSeconds"]))
    elif annotations.get(REQUEST_DURATION_ANNOTATION):
        duration = _duration(annotations[REQUEST_DURATION_ANNOTATION], REQUEST_DURATION_ANNOTATION)
    is_ca = str(annotations.get(REQUEST_IS_CA_ANNOTATION, "")).lower() == "true"
    return SigningRequest(
        csr, RequestProfile(duration=duration, usages=tuple(spec.get("usages") or ()), is_ca=is_ca)
    )


def _duration(value: Any, field: str) -> timedelta | None:
    if value in (None, ""):
        return None
    try:
        return parse_duration(str(value))
    except ValueError as exc:
        raise RequestError(f"{field}: {exc}") from None
