"""When a Certificate needs (re)issuance, and whether an in-flight request still fits its spec.

Pure functions over plain API objects, in the order cert-manager's trigger policies run: the first
problem found is the reason reported in the Issuing condition (and, for problems that make the current
certificate unusable, in the Ready condition too).

Like cert-manager, the identity is compared against the CertificateRequest the current certificate was
issued from when it still exists (an issuer may legitimately adjust the certificate it signs), and against
the certificate itself otherwise.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from keyward.kube.objects import decode_bytes
from keyward.sandbox.certmanager.conditions import format_time
from keyward.sandbox.certmanager.keys import (
    PrivateKey,
    SpecError,
    certifies,
    key_mismatches,
    key_spec,
    load_chain,
    load_private_key,
)
from keyward.sandbox.certmanager.request import (
    check_names,
    identity_from_spec,
    identity_mismatches,
    identity_of,
)

DEFAULT_DURATION = timedelta(hours=2160)
ANNOTATION_PREFIX = "cert-manager.io/"
ISSUER_NAME = "cert-manager.io/issuer-name"
ISSUER_KIND = "cert-manager.io/issuer-kind"
ISSUER_GROUP = "cert-manager.io/issuer-group"


@dataclass(frozen=True)
class Trigger:
    """Why a Certificate must be issued again; ``unready`` when the current certificate is not usable."""

    reason: str
    message: str
    unready: bool = True


@dataclass(frozen=True)
class Issued:
    """The usable content of a Certificate's Secret."""

    certificate: x509.Certificate
    key: PrivateKey


_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1,
    "m": 60,
    "h": 3600,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(text: str) -> timedelta:
    """Go's ``time.ParseDuration`` for the non-negative durations of a Certificate (``2160h``, ``1h30m``)."""
    body = text.strip().lstrip("+")
    if body == "0":
        return timedelta(0)
    parts = _DURATION_PART.findall(body)
    if not body or "".join(number + unit for number, unit in parts) != body:
        raise ValueError(
            f'invalid duration "{text}": expected a Go duration such as "2160h", "1h30m" or "90m"'
        )
    return timedelta(seconds=sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts))


def secret_bytes(secret: Mapping[str, Any] | None, field: str) -> bytes:
    """A decoded ``data`` entry of a Secret (empty when absent or not base64)."""
    return decode_bytes(((secret or {}).get("data") or {}).get(field)) or b""


def spec_duration(spec: Mapping[str, Any], field: str) -> timedelta | None:
    """spec.duration / spec.renewBefore as a timedelta (None when unset); ``SpecError`` when malformed."""
    text = spec.get(field)
    if not text:
        return None
    try:
        return parse_duration(str(text))
    except ValueError as exc:
        raise SpecError(f"spec.{field}: {exc}") from None


def check_spec(spec: Mapping[str, Any]) -> None:
    """Everything about a Certificate spec that cert-manager's webhook would refuse; ``SpecError``."""
    if not spec.get("secretName"):
        raise SpecError("spec.secretName is empty; name the Secret that should receive the certificate")
    if not (spec.get("issuerRef") or {}).get("name"):
        raise SpecError("spec.issuerRef.name is empty; name the issuer that should sign")
    key_spec(spec)
    check_names(spec)
    duration = spec_duration(spec, "duration")
    if duration is not None and duration <= timedelta(0):
        raise SpecError("spec.duration must be positive, e.g. 2160h")


def renewal_time(certificate: x509.Certificate, spec: Mapping[str, Any]) -> datetime:
    """notAfter - renewBefore; renewBefore defaults to, and is capped at, a third of the actual lifetime."""
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    renew_before = spec_duration(spec, "renewBefore")
    if renew_before is None or renew_before >= lifetime:
        renew_before = lifetime / 3
    return certificate.not_valid_after_utc - renew_before


def load_request_csr(request: Mapping[str, Any]) -> x509.CertificateSigningRequest | None:
    """The CSR of a CertificateRequest (spec.request is base64 of the PEM), None when unreadable."""
    try:
        return x509.load_pem_x509_csr(base64.b64decode((request.get("spec") or {}).get("request") or ""))
    except (binascii.Error, ValueError, x509.InvalidVersion):
        return None


def _issuer_ref(ref: Mapping[str, Any] | None) -> tuple[str, str, str]:
    ref = ref or {}
    return (
        str(ref.get("name") or ""),
        str(ref.get("kind") or "Issuer"),
        str(ref.get("group") or "cert-manager.io"),
    )


def _usage_set(values: Any) -> frozenset[str]:
    return frozenset(values or ("digital signature", "key encipherment"))


def request_mismatches(spec: Mapping[str, Any], request: Mapping[str, Any]) -> list[str]:
    """The spec fields a CertificateRequest no longer reflects (empty: it still asks for the right thing)."""
    request_spec = request.get("spec") or {}
    csr = load_request_csr(request)
    if csr is None:
        return ["spec.request"]
    fields = identity_mismatches(identity_from_spec(spec), identity_of(csr))
    fields += key_mismatches(csr.public_key(), key_spec(spec))
    if bool(request_spec.get("isCA")) != bool(spec.get("isCA")) and "spec.isCA" not in fields:
        fields.append("spec.isCA")
    if _usage_set(request_spec.get("usages")) != _usage_set(spec.get("usages")):
        fields.append("spec.usages")
    if spec_duration(request_spec, "duration") != spec_duration(spec, "duration"):
        fields.append("spec.duration")
    if _issuer_ref(request_spec.get("issuerRef")) != _issuer_ref(spec.get("issuerRef")):
        fields.append("spec.issuerRef")
    return fields


def read_issued(secret: Mapping[str, Any] | None) -> Issued | Trigger:
    """The certificate and key a Secret holds, or why they cannot be used."""
    if secret is None:
        return Trigger("DoesNotExist", "Issuing certificate as Secret does not exist")
    certificate_pem, key_pem = secret_bytes(secret, "tls.crt"), secret_bytes(secret, "tls.key")
    if not certificate_pem:
        return Trigger("MissingData", "Issuing certificate as Secret does not contain a certificate")
    if not key_pem:
        return Trigger("MissingData", "Issuing certificate as Secret does not contain a private key")
    try:
        certificate = load_chain(certificate_pem)[0]
    except ValueError:
        return Trigger("InvalidCertificate", "Issuing certificate as Secret contains an invalid certificate")
    key = load_private_key(key_pem)
    if key is None:
        return Trigger("InvalidKeyPair", "Issuing certificate as Secret contains an invalid private key")
    if not certifies(certificate, key.public_key()):
        return Trigger(
            "InvalidKeyPair",
            "Issuing certificate as Secret contains a private key that does not match the certificate",
        )
    return Issued(certificate, key)


def issuance_trigger(
    certificate: Mapping[str, Any],
    secret: Mapping[str, Any] | None,
    current_request: Mapping[str, Any] | None,
    now: datetime,
) -> Trigger | None:
    """Why ``certificate`` needs a new issuance now, or None when its Secret is up to date.

    ``current_request`` is the CertificateRequest of the current revision, when it still exists.
    ``SpecError`` when the spec itself cannot be honoured.
    """
    spec = certificate.get("spec") or {}
    issued = read_issued(secret)
    if isinstance(issued, Trigger):
        return issued
    wrong_key = key_mismatches(issued.key.public_key(), key_spec(spec))
    if wrong_key:
        return Trigger(
            "SecretMismatch", f"Existing private key is not up to date for spec: [{', '.join(wrong_key)}]"
        )
    annotations = (secret or {}).get("metadata", {}).get("annotations") or {}
    if ISSUER_NAME in annotations:
        previous = _issuer_ref(
            {
                "name": annotations.get(ISSUER_NAME),
                "kind": annotations.get(ISSUER_KIND),
                "group": annotations.get(ISSUER_GROUP),
            }
        )
        if previous != _issuer_ref(spec.get("issuerRef")):
            name, kind, group = previous
            return Trigger(
                "IncorrectIssuer",
                f'Issuing certificate as Secret was previously issued by "{kind}.{group}/{name}"',
            )
    if current_request is not None and load_request_csr(current_request) is not None:
        changed = request_mismatches(spec, current_request)
        if changed:
            return Trigger(
                "RequestChanged",
                f"Fields on existing CertificateRequest resource not up to date: [{', '.join(changed)}]",
            )
    else:
        changed = identity_mismatches(identity_from_spec(spec), identity_of(issued.certificate))
        if changed:
            return Trigger(
                "SecretMismatch", f"Existing issued Secret is not up to date for spec: [{', '.join(changed)}]"
            )
    not_after = issued.certificate.not_valid_after_utc
    if now >= not_after:
        return Trigger("Expired", f"Certificate expired on {format_time(not_after)}")
    renew_at = renewal_time(issued.certificate, spec)
    if now >= renew_at:
        return Trigger(
            "Renewing",
            f"Renewing certificate as renewal was scheduled at {format_time(renew_at)}",
            unready=False,
        )
    return None
