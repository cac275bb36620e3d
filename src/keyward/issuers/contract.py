"""What to do with a signing request: cert-manager's issuer contract in one place.

The controllers feed request objects (``issuers.objects.RequestObject``, made from the objects the API
returns) through these pure functions and act on the answer; every rule of the contract is here and
unit-tested without a cluster.
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass
from datetime import timedelta

from cryptography import x509

from keyward.issuers.objects import RequestFields, RequestObject
from keyward.kube.resources import REQUEST_DURATION_ANNOTATION
from keyward.pki.csr import decode_request_field, load_csr
from keyward.pki.durations import parse_duration
from keyward.pki.errors import RequestError
from keyward.pki.profile import RequestProfile


class Phase(enum.Enum):
    FINISHED = "finished"  # leave it alone
    DENIED = "denied"  # record the denial (CertificateRequests only), never sign
    AWAITING_APPROVAL = "awaiting-approval"  # do nothing yet
    APPROVED = "approved"  # sign, if the issuer is ready


def certificate_request_phase(request: RequestObject) -> Phase:
    """Contract points 2-4 for a cert-manager CertificateRequest."""
    ready = request.condition("Ready")
    if request.has_certificate:
        return Phase.FINISHED
    if ready is not None and (ready.true or ready.reason in ("Failed", "Denied")):
        return Phase.FINISHED
    if request.is_true("InvalidRequest"):
        return Phase.FINISHED
    if request.is_true("Denied"):
        return Phase.DENIED
    if not request.is_true("Approved"):
        return Phase.AWAITING_APPROVAL
    return Phase.APPROVED


def csr_phase(request: RequestObject) -> Phase:
    """A Kubernetes CSR: sign only approved, not denied, not failed, not yet signed requests."""
    if request.has_certificate or request.is_true("Failed"):
        return Phase.FINISHED
    if request.is_true("Denied"):
        return Phase.FINISHED  # the API server keeps the denial; a signer writes nothing
    if not request.is_true("Approved"):
        return Phase.AWAITING_APPROVAL
    return Phase.APPROVED


def denial_message(request: RequestObject) -> str:
    denied, fallback = request.condition("Denied"), "The CertificateRequest was denied"
    return denied.said(fallback) if denied is not None else fallback


@dataclass(frozen=True)
class SigningRequest:
    """A decoded, checked request: the CSR (signature verified) and what the requester asked for."""

    csr: x509.CertificateSigningRequest
    profile: RequestProfile


def from_certificate_request(fields: RequestFields) -> SigningRequest:
    """Decode a CertificateRequest's spec; RequestError when the request itself is unusable."""
    _refuse_problems(fields, "spec.request", "spec.duration", "spec.usages", "spec.isCA")
    csr = load_csr(decode_request_field(fields.request))
    duration = _duration(fields.duration, "spec.duration")
    return SigningRequest(csr, RequestProfile(duration=duration, usages=fields.usages, is_ca=fields.is_ca))


def from_csr(fields: RequestFields) -> SigningRequest:
    """Decode a Kubernetes CSR (spec.request is base64 of PEM in JSON)."""
    _refuse_problems(fields, "spec.request", "spec.expirationSeconds", "spec.usages")
    try:
        pem = base64.b64decode(fields.request, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("spec.request is not base64") from None
    csr = load_csr(pem)
    duration: timedelta | None = None
    if fields.expiration_seconds is not None:
        duration = timedelta(seconds=fields.expiration_seconds)
    elif fields.duration_annotation:
        duration = _duration(fields.duration_annotation, REQUEST_DURATION_ANNOTATION)
    is_ca = fields.is_ca_annotation.lower() == "true"
    return SigningRequest(csr, RequestProfile(duration=duration, usages=fields.usages, is_ca=is_ca))


def _refuse_problems(fields: RequestFields, *names: str) -> None:
    problem = fields.problem(*names)
    if problem is not None:
        raise RequestError(problem)


def _duration(value: str, field: str) -> timedelta | None:
    if not value:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise RequestError(f"{field}: {exc}") from None
