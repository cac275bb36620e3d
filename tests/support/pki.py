"""The one PKI kit of the tests: keys, names, CSRs, PEM/DER, self-signed CAs and in-memory CAs.

Certificates here are built with ``cryptography`` directly (as a peer or a company's PKI would build
them), except ``memory_ca``, which is keyward's own ``CertificateAuthority`` over an in-memory key (for
adapter tests without SoftHSM2: SOFTHSM2_CONF is process-wide and the keystore tests keep their store
open for the whole session, so these sign with in-memory keys; the subprocess tests sign in a token).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keyward.issuers.tcs.est_ca import TokenWorkers
from keyward.pki.issue import CertificateAuthority
from keyward.pki.issue import self_signed_ca as keyward_self_signed_ca

T = TypeVar("T")
PemOrDer = x509.Certificate | x509.CertificateSigningRequest


# --- keys, names, encodings -----------------------------------------------------------------------------


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def name(common_name: str | None) -> x509.Name:
    """CN=``common_name``; the empty name for None or ""."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else [])


def pem(certificate_or_csr: PemOrDer) -> bytes:
    return certificate_or_csr.public_bytes(serialization.Encoding.PEM)


def der(certificate_or_csr: PemOrDer) -> bytes:
    return certificate_or_csr.public_bytes(serialization.Encoding.DER)


def key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    """The private key as unencrypted PKCS#8 PEM (as a peer holds it)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def cacert(*certificates: x509.Certificate) -> str:
    """An EST issuer's spec.cacert: base64 of the PEM certificates."""
    return b64(b"".join(pem(c) for c in certificates))


# --- requests and certificates --------------------------------------------------------------------------


def make_csr(
    key: CertificateIssuerPrivateKeyTypes | None = None,
    common_name: str | None = "app.example",
    sans: Sequence[x509.GeneralName] = (),
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    subject: x509.Name | None = None,
) -> x509.CertificateSigningRequest:
    """A CSR for ``key`` (default: a new P-256 key); ``subject`` (any, bounds ignored) replaces the default
    of ``common_name``."""
    key = key or ec_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        subject if subject is not None else name(common_name)
    )
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


CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def self_signed_ca(
    key: CertificateIssuerPrivateKeyTypes,
    common_name: str = "keyward test CA",
    algorithm: hashes.HashAlgorithm | None = None,
    *,
    ca: bool | None = True,
    path_length: int | None = None,
    valid_for: timedelta = timedelta(days=1),
    valid_since: timedelta = timedelta(minutes=1),
    now: datetime | None = None,
    key_usage: bool = False,
    subject_key_id: bool = False,
) -> x509.Certificate:
    """A self-signed certificate built by cryptography, signed by ``key`` (in the token or not), valid
    from ``valid_since`` before ``now`` (default: the clock) until ``valid_for`` after it (negative:
    expired). BasicConstraints CA (critical) unless ``ca`` is False (a leaf) or None (no
    BasicConstraints at all); ``key_usage``: keyCertSign and cRLSign (critical); ``subject_key_id``."""
    subject = name(common_name)
    public_key: CertificatePublicKeyTypes = key.public_key()
    moment = now or datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - valid_since)
        .not_valid_after(moment + valid_for)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    if key_usage:
        builder = builder.add_extension(CA_KEY_USAGE, critical=True)
    if subject_key_id:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    return builder.sign(key, algorithm or hashes.SHA256())


@dataclass
class Issuer:
    """A CA in memory, built without keyward, that issues leaf certificates (a peer's or a test's CA)."""

    certificate: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes

    @classmethod
    def self_signed(cls, common_name: str) -> Issuer:
        key = ec_key()
        certificate = self_signed_ca(
            key,
            common_name,
            valid_since=timedelta(hours=1),
            valid_for=timedelta(days=30),
            key_usage=True,
            subject_key_id=True,
        )
        return cls(certificate, key)

    def issue(
        self,
        subject: x509.Name,
        public_key: Any,
        sans: Sequence[x509.GeneralName] = (),
        *,
        usages: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
        lifetime: timedelta = timedelta(days=1),
        not_before: datetime | None = None,
    ) -> x509.Certificate:
        start = not_before or datetime.now(UTC) - timedelta(minutes=5)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.certificate.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def tls_identity(self, common_name: str, sans: Sequence[x509.GeneralName]) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) of a TLS server certificate for a new P-256 key."""
        key = ec_key()
        usages = (ExtendedKeyUsageOID.SERVER_AUTH,)
        certificate = self.issue(name(common_name), key.public_key(), sans, usages=usages)
        return pem(certificate), key_pem(key)


# --- keyward's CertificateAuthority in memory -----------------------------------------------------------


def memory_ca(
    key: CertificateIssuerPrivateKeyTypes | None = None, common_name: str = "Memory CA"
) -> CertificateAuthority:
    key = key or ec_key()
    return CertificateAuthority(keyward_self_signed_ca(key, name(common_name), timedelta(days=365)), key)


def rsa_ca(bits: int = 2048) -> CertificateAuthority:
    return memory_ca(rsa_key(bits), "Memory RSA CA")


class ThreadWorkers:
    """Runs issuance jobs on a thread like TokenKeyStore.run_signing; counts calls, can fail like a broken
    token."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.failure: Exception | None = None

    async def run_signing(self, fn: Callable[..., T], *args: Any) -> T:
        self.calls.append(fn.__name__)
        if self.failure is not None:
            raise self.failure
        return await asyncio.to_thread(fn, *args)

    run = run_signing  # TokenKeyStore.run: the same threads when the store has no signing processes

    async def get(self) -> TokenWorkers:
        return self
