"""Builders shared by the pki tests: keys, CSRs and CAs made in memory, and openssl as a peer."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from keyward.pki.issue import CertificateAuthority, issue_certificate
from keyward.pki.profile import IssuerPolicy, RequestProfile

ExtensionT = TypeVar("ExtensionT", bound=x509.ExtensionType)

NOW = datetime(2030, 1, 15, 12, 0, 0, tzinfo=UTC)


def name(common_name: str | None) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else [])


def make_csr(
    key: CertificateIssuerPrivateKeyTypes,
    common_name: str | None = "app.example",
    sans: Sequence[x509.GeneralName] = (),
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    subject: x509.Name | None = None,
) -> x509.CertificateSigningRequest:
    """A CSR for ``key``; ``subject`` (any, bounds ignored) replaces the default of ``common_name``."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject or name(common_name))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    algorithm = (
        hashes.SHA256()
        if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | dsa.DSAPrivateKey)
        else None
    )
    return builder.sign(key, algorithm)


def pem(csr_or_cert: x509.CertificateSigningRequest | x509.Certificate) -> bytes:
    return csr_or_cert.public_bytes(Encoding.PEM)


def der(csr_or_cert: x509.CertificateSigningRequest | x509.Certificate) -> bytes:
    return csr_or_cert.public_bytes(Encoding.DER)


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
    """A CA certificate made without keyward, for cases keyward's own self_signed_ca never produces."""
    public_key: CertificatePublicKeyTypes = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(common_name))
        .issuer_name(name(common_name))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
    )
    if with_ski:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    return builder.sign(key, hashes.SHA256())


def openssl(*args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run openssl; the result is returned whatever the exit status, for the test to judge."""
    return subprocess.run(
        ["openssl", *map(str, args)],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
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
