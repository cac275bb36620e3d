"""Who is the client: HTTP Basic credentials and the TLS client certificate, checked per CA.

The TLS handshake already verified a presented client certificate against the union of all CAs' anchors
(``ssl.CERT_OPTIONAL``). Python's ``ssl`` only hands over the leaf, so whether it chains to *this* CA's
anchors is checked again here, with cryptography's path validation.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)


@dataclass(frozen=True)
class BasicCredentials:
    username: str
    password: str

    def __repr__(self) -> str:
        return f"BasicCredentials(username={self.username!r}, password=<hidden>)"


class MalformedAuthorization(ValueError):
    """The Authorization header is not ``Basic <base64 of user:password>``."""


#: Registered HTTP authentication schemes (IANA), named back to a client that uses one; anything else
#: in front of the credentials is never quoted: it may be a password sent without a scheme.
_KNOWN_SCHEMES = {
    name.lower(): name
    for name in (
        "Bearer", "Concealed", "Digest", "DPoP", "GNAP", "HOBA", "Mutual", "Negotiate", "NTLM", "OAuth",
        "PrivateToken", "SCRAM-SHA-1", "SCRAM-SHA-256", "vapid",
    )
}  # fmt: skip


def parse_basic(header: str | None) -> BasicCredentials | None:
    """Credentials from an Authorization header; ``None`` when there is no header at all.

    Error messages (sent to the client and logged) never quote any part of the header.
    """
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        known = _KNOWN_SCHEMES.get(scheme.lower())
        used = (
            f"the {known} authorization scheme"
            if known
            else "an Authorization header without the Basic scheme"
        )
        raise MalformedAuthorization(f"{used} is not supported; send 'Basic' and base64 of user:password")
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise MalformedAuthorization(
            "the Basic credentials are not base64 of UTF-8 'user:password'"
        ) from None
    username, colon, password = decoded.partition(":")
    if not colon:
        raise MalformedAuthorization("the Basic credentials lack the ':' between user and password")
    return BasicCredentials(username, password)


def load_peer_certificate(der: bytes | None) -> x509.Certificate | None:
    if not der:
        return None
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None


def chains_to(
    leaf: x509.Certificate, anchors: Sequence[x509.Certificate], now: datetime | None = None
) -> bool:
    """Whether ``leaf`` is valid now and chains to one of ``anchors`` (each anchor a trust anchor).

    Extension policies are relaxed to what OpenSSL's handshake check accepts (anchors and CAs need only
    be CAs): the point is *which* anchor, not a second opinion on the certificate profile.
    """
    if not anchors:
        return False
    try:
        verifier = (
            PolicyBuilder()
            .store(Store(list(anchors)))
            .time(now or datetime.now(UTC))
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=ExtensionPolicy.permit_all())
            .build_client_verifier()
        )
        verifier.verify(leaf, [])
    except (VerificationError, ValueError, UnsupportedAlgorithm):
        return False
    return True


def issued_by_any(
    leaf: x509.Certificate, issuers: Sequence[x509.Certificate], now: datetime | None = None
) -> bool:
    """Whether ``leaf`` is valid now and signed directly by one of ``issuers`` (RFC 7030 §4.2.2 renewal)."""
    moment = now or datetime.now(UTC)
    if not leaf.not_valid_before_utc <= moment <= leaf.not_valid_after_utc:
        return False
    for issuer in issuers:
        try:
            leaf.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        return True
    return False


def _require_ca(_policy: Policy, _certificate: x509.Certificate, constraints: x509.BasicConstraints) -> None:
    if not constraints.ca:
        raise ValueError("basicConstraints does not allow this certificate to be a CA")


_CA_POLICY = ExtensionPolicy.permit_all().require_present(
    x509.BasicConstraints, Criticality.AGNOSTIC, _require_ca
)


def same_subject_and_sans(csr: x509.CertificateSigningRequest, certificate: x509.Certificate) -> bool:
    """RFC 7030 §4.2.2: a renewal's Subject and SubjectAltName must equal the certificate's."""
    return csr.subject == certificate.subject and _sans(csr.extensions) == _sans(certificate.extensions)


def _sans(extensions: x509.Extensions) -> frozenset[x509.GeneralName]:
    try:
        return frozenset(extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return frozenset()
