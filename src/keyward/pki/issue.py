"""Building and signing certificates with any ``cryptography`` private key.

The CA key is only ever asked to ``sign()``: in production it is a token-backed key whose signature is
computed inside the PKCS#11 token, in tests an in-memory key. Nothing here reads key material.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from keyward.pki import pickling as _pickling  # noqa: F401 (certificates pickle as DER)
from keyward.pki.errors import IssuerError, RequestError
from keyward.pki.keys import check_ca_key, check_request_algorithms, random_serial_number, signature_hash
from keyward.pki.names import subject_from_spec
from keyward.pki.pem import load_pem_chain, pem_chain
from keyward.pki.policy import check_server_names, check_subject, comparable_name, requested_names
from keyward.pki.profile import IssuerPolicy, RequestProfile, check_profile

__all__ = [
    "CLOCK_SKEW",
    "CertificateAuthority",
    "IssuedCertificate",
    "certificate_matches_key",
    "issue_certificate",
    "load_pem_chain",
    "pem_chain",
    "self_signed_ca",
    "signature_hash",
    "subject_from_spec",
]

#: notBefore is set this far in the past, so that clients with a slow clock accept a fresh certificate.
CLOCK_SKEW = timedelta(minutes=5)

#: Public keys a CA certificate can carry to sign certificates with (those cert-manager's issuers use).
_ISSUER_PUBLIC_KEYS = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
)


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate and the key that signs for it (possibly living in a token).

    Consistent by construction: a certificate that does not match the key is an ``IssuerError`` here,
    once, rather than a check in every issuance. What every issuance needs from the CA certificate
    (its public key, key identifier, path length, validity) is read from it once, too.
    """

    certificate: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes  # signs; may live in a token
    chain: tuple[x509.Certificate, ...] = ()  # intermediates above certificate, if any

    def __post_init__(self) -> None:
        if not certificate_matches_key(self.certificate, self.key.public_key()):
            raise IssuerError(
                "the CA certificate does not match the CA key; the issuer's key material is inconsistent"
            )
        check_ca_key(self.certificate.public_key())

    @cached_property
    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        """The CA's public key, parsed once: every issued certificate is verified with it."""
        key = self.certificate.public_key()
        if not isinstance(key, _ISSUER_PUBLIC_KEYS):
            raise IssuerError(f"the CA certificate's {type(key).__name__} cannot sign certificates")
        return key

    @cached_property
    def signature_hash(self) -> hashes.HashAlgorithm | None:
        """The hash the CA key signs with (see ``signature_hash``)."""
        return signature_hash(self.key)

    @cached_property
    def authority_key_identifier(self) -> x509.Extension[x509.AuthorityKeyIdentifier]:
        """The AKI of every certificate this CA issues: its own subjectKeyIdentifier, so chains link even
        if the CA used another method to derive it."""
        try:
            ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        except x509.ExtensionNotFound:
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(self.public_key)
        return x509.Extension(aki.oid, False, aki)

    @cached_property
    def path_length(self) -> int | None:
        """The CA certificate's pathLenConstraint, None for no limit."""
        try:
            constraints = self.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            return None
        return constraints.value.path_length

    @cached_property
    def subjects(self) -> frozenset[tuple[tuple[tuple[str, str], ...], ...]]:
        """The subjects of the CA certificate and of those above it, as names compare
        (``policy.comparable_name``): no certificate it issues may carry one of them."""
        return frozenset(
            comparable_name(certificate.subject) for certificate in (self.certificate, *self.chain)
        )

    @cached_property
    def validity(self) -> tuple[datetime, datetime]:
        """The CA certificate's notBefore and notAfter: what it issues must lie within them."""
        return self.certificate.not_valid_before_utc, self.certificate.not_valid_after_utc

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _authority, (self.certificate, self.key, self.chain)

    def verify_issued(self, certificate: x509.Certificate) -> None:
        """Check that this CA's key really signed ``certificate``: a faulty token is caught here, before
        anyone sees the certificate. ``IssuerError`` if it did not."""
        try:
            _verify_signature(self.public_key, certificate)
        except (InvalidSignature, ValueError, TypeError) as exc:
            raise IssuerError(
                f"the CA key produced a certificate that does not verify against the CA "
                f"certificate ({type(exc).__name__}); check the key store"
            ) from None


@functools.lru_cache(maxsize=32)
def _authority(
    certificate: x509.Certificate, key: CertificateIssuerPrivateKeyTypes, chain: tuple[x509.Certificate, ...]
) -> CertificateAuthority:
    """Unpickle a CA: the same object for the same certificate and key, so what it read from its
    certificate stays read (every issuance sent to a signing process brings its CA along; a token key
    arrives as the same object each time, see ``keystore.keys``)."""
    return CertificateAuthority(certificate, key, chain)


@dataclass(frozen=True)
class IssuedCertificate:
    """A freshly issued certificate with the CA certificates above it."""

    certificate: x509.Certificate
    ca_certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    def leaf_pem(self) -> bytes:
        """The issued certificate alone."""
        return self.certificate.public_bytes(Encoding.PEM)

    def chain_pem(self) -> bytes:
        """Leaf, then the issuing CA, then any certificates above it: cert-manager's status.certificate."""
        return pem_chain((self.certificate, self.ca_certificate, *self.chain))

    def ca_pem(self) -> bytes:
        """The top-most CA certificate we know (the issuing CA when it has no chain): status.ca."""
        return (self.chain[-1] if self.chain else self.ca_certificate).public_bytes(Encoding.PEM)


def _utc_now(now: datetime | None) -> datetime:
    """``now`` in UTC, whole seconds (X.509 times have no fractions); naive datetimes are taken as UTC."""
    moment = datetime.now(UTC) if now is None else now
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def _naive(moment: datetime) -> datetime:
    """A UTC time as the builder stores it (its setters convert the same way)."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def certificate_matches_key(certificate: x509.Certificate, public_key: CertificatePublicKeyTypes) -> bool:
    """Whether ``certificate`` certifies ``public_key`` (compared as SubjectPublicKeyInfo)."""
    return _spki(certificate.public_key()) == _spki(public_key)


def _basic_constraints(is_ca: bool, ca: CertificateAuthority) -> x509.Extension[x509.BasicConstraints]:
    """CA:false, or for an allowed sub-CA CA:true with a path length that keeps the chain valid."""
    if not is_ca:
        return _NOT_A_CA
    limit = ca.path_length
    if limit == 0:
        raise RequestError(
            "the request asks for a CA certificate (isCA) but the issuing CA's path length "
            "constraint is 0, so no certificate it signs can be a CA; drop isCA"
        )
    constraints = x509.BasicConstraints(ca=True, path_length=None if limit is None else limit - 1)
    return x509.Extension(constraints.oid, True, constraints)


_NOT_A_CA = x509.Extension(x509.BasicConstraints.oid, True, x509.BasicConstraints(ca=False, path_length=None))


def _validity(
    now: datetime, duration: timedelta, ca: CertificateAuthority, policy: IssuerPolicy
) -> tuple[datetime, datetime]:
    """notBefore = now - CLOCK_SKEW (never before the CA's); notAfter = now + duration, capped at the CA's."""
    ca_not_before, ca_not_after = ca.validity
    if ca_not_after - now < policy.min_duration:
        raise IssuerError(
            f"the CA certificate expires at {ca_not_after:%Y-%m-%dT%H:%M:%SZ}, too soon to "
            "issue certificates; rotate the CA (create a new issuer)"
        )
    return max(now - CLOCK_SKEW, ca_not_before), min(now + duration, ca_not_after)


def _sign(
    builder: x509.CertificateBuilder,
    key: CertificateIssuerPrivateKeyTypes,
    algorithm: hashes.HashAlgorithm | None,
) -> x509.Certificate:
    """Sign with ``algorithm``, the hash ``signature_hash`` chose for the key (None for EdDSA)."""
    if isinstance(algorithm, hashes.SHA256 | hashes.SHA384 | hashes.SHA512):
        return builder.sign(key, algorithm)
    return builder.sign(key, None)


def _verify_signature(public_key: CertificateIssuerPublicKeyTypes, certificate: x509.Certificate) -> None:
    """``InvalidSignature`` unless ``public_key`` made the certificate's signature (PKCS#1 v1.5, ECDSA or
    EdDSA, the schemes ``_sign`` produces); the already parsed key saves parsing the CA certificate's."""
    signature, tbs, algorithm = (
        certificate.signature,
        certificate.tbs_certificate_bytes,
        certificate.signature_hash_algorithm,
    )
    if isinstance(public_key, rsa.RSAPublicKey) and algorithm is not None:
        public_key.verify(signature, tbs, padding.PKCS1v15(), algorithm)
    elif isinstance(public_key, ec.EllipticCurvePublicKey) and algorithm is not None:
        public_key.verify(signature, tbs, ec.ECDSA(algorithm))
    elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        public_key.verify(signature, tbs)
    else:
        raise TypeError(f"cannot verify a {type(public_key).__name__} signature without a hash")


def issue_certificate(
    csr: x509.CertificateSigningRequest,
    profile: RequestProfile,
    ca: CertificateAuthority,
    policy: IssuerPolicy,
    *,
    now: datetime | None = None,
    signature_checked: bool = False,
    issuer_extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
) -> IssuedCertificate:
    """Sign a certificate for a checked CSR (see ``load_csr``) as ``profile`` asks, within ``policy``;
    ``issuer_extensions`` are the issuer's own additions (never taken from the CSR).

    The CSR's signature (proof of possession) is verified here unless ``signature_checked`` says the
    caller did so already (``load_csr`` does; verifying twice costs a public-key operation per issuance).

    Every issuance passes the issuance policy (``keyward.pki.policy``): the usages granted, the names
    and the subject. Only the subject and the subjectAltNames of kinds DNS, IP, URI and email are taken
    from the CSR; every other extension it requests (basicConstraints, keyUsage, ...) is ignored, because
    what the certificate may do is decided by the profile and the issuer, not by whoever wrote the CSR.
    The subjectAltName is critical when the subject is empty (RFC 5280 §4.2.1.6).

    ``RequestError`` (a ``PolicyViolation`` for a policy rule): the request cannot be honoured.
    ``IssuerError``: the CA cannot issue (expiring, or the key produced a signature that does not
    verify).
    """
    moment = _utc_now(now)
    public_key = csr.public_key()
    duration, usages = check_profile(profile, policy, public_key)
    check_request_algorithms(csr)
    if not signature_checked and not csr.is_signature_valid:
        raise RequestError(
            "the request's signature does not verify (no proof of possession of the private key)"
        )
    names = requested_names(csr, policy)
    subject = csr.subject
    if len(subject) == 0 and not names:
        raise RequestError(
            "the request has neither a subject nor subject alternative names (DNS, IP, URI or "
            "email); add a commonName or dnsNames to the request"
        )
    check_subject(subject, ca.subjects, policy)
    check_server_names(names, subject, usages.extended, policy)
    not_before, not_after = _validity(moment, duration, ca, policy)
    extensions = [_basic_constraints(profile.is_ca, ca), *usages.extensions]
    if names:
        alt_names = x509.SubjectAlternativeName(names)
        extensions.append(x509.Extension(alt_names.oid, len(subject) == 0, alt_names))
    key_identifier = x509.SubjectKeyIdentifier.from_public_key(public_key)
    extensions += (x509.Extension(key_identifier.oid, False, key_identifier), ca.authority_key_identifier)
    extensions += issuer_extensions
    # The builder's constructor rather than its one-setter-per-copy chain: every value here is built by
    # this function, so the setters' checks would only repeat themselves (a fifth of pki's own time).
    builder = x509.CertificateBuilder(
        issuer_name=ca.certificate.subject,
        subject_name=subject,
        public_key=public_key,
        serial_number=random_serial_number(),
        not_valid_before=_naive(not_before),
        not_valid_after=_naive(not_after),
        extensions=extensions,
    )
    certificate = _sign(builder, ca.key, ca.signature_hash)
    ca.verify_issued(certificate)
    return IssuedCertificate(certificate=certificate, ca_certificate=ca.certificate, chain=ca.chain)


def self_signed_ca(
    key: CertificateIssuerPrivateKeyTypes,
    subject: x509.Name,
    duration: timedelta,
    *,
    now: datetime | None = None,
) -> x509.Certificate:
    """A self-signed root CA certificate for ``key``, valid from now - CLOCK_SKEW to now + duration."""
    if duration <= timedelta(0):
        raise ValueError("the CA duration must be positive")
    moment = _utc_now(now)
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(random_serial_number())
        .not_valid_before(moment - CLOCK_SKEW)
        .not_valid_after(moment + duration)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
    )
    return _sign(builder, key, signature_hash(key))
