"""What the pki tests share beyond tests.support.pki: a fixed NOW, a CA certificate at NOW, issuing at
NOW, extensions and validity of a certificate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
)

from keyward.pki.issue import CertificateAuthority, issue_certificate
from keyward.pki.profile import IssuerPolicy, RequestProfile
from tests.support.pki import self_signed_ca

ExtensionT = TypeVar("ExtensionT", bound=x509.ExtensionType)

NOW = datetime(2030, 1, 15, 12, 0, 0, tzinfo=UTC)


def extension(certificate: x509.Certificate, kind: type[ExtensionT]) -> x509.Extension[ExtensionT]:
    return certificate.extensions.get_extension_for_class(kind)


def validity(certificate: x509.Certificate) -> tuple[datetime, datetime]:
    return certificate.not_valid_before_utc, certificate.not_valid_after_utc


def plain_ca(
    key: CertificateIssuerPrivateKeyTypes,
    common_name: str,
    *,
    path_length: int | None = None,
    lifetime: timedelta = timedelta(days=3650),
    with_ski: bool = True,
) -> x509.Certificate:
    """A CA certificate made without keyward (from a day before NOW), for cases keyward's own
    self_signed_ca never produces."""
    return self_signed_ca(
        key,
        common_name,
        path_length=path_length,
        now=NOW,
        valid_since=timedelta(days=1),
        valid_for=lifetime,
        subject_key_id=with_ski,
    )


def issue(
    csr: x509.CertificateSigningRequest,
    ca: CertificateAuthority,
    profile: RequestProfile | None = None,
    policy: IssuerPolicy | None = None,
) -> x509.Certificate:
    """The certificate ``ca`` issues for ``csr`` at NOW."""
    return issue_certificate(
        csr, profile or RequestProfile(), ca, policy or IssuerPolicy(), now=NOW
    ).certificate
