"""Key provisioning (tcs.md): a CA key and certificate from a key manager, into the token, checked first.

The key manager answers a KeyProvisioning QuoteAttestation with a Secret: ``tls.key`` the base64 text of
the wrapped key (``WSWK || WKEY``, ``keyward.pki.keywrap``), ``tls.crt`` the base64 text of the PEM
certificate (as ``kubectl create secret generic --from-literal`` makes them in the seed's manual flow; a
PEM ``tls.crt`` as such is read too). ``provision_ca`` takes it into the token only when everything holds:
the certificate is a CA certificate, valid now, of a supported key (of the kind spec.privateKey asks for,
if it asks), the one the issuer already shows when it shows one (a replica fetching the issuer's key, a
token restored), and the key it carries unwraps with this issuer's wrapping key and belongs to the
certificate. Otherwise the issuer says why (``ProvisioningFailed``) and the token holds nothing new:
the wrapping key stays, so a key manager that sends a corrected Secret is heard.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from keyward.issuers.errors import IssuerNotReady
from keyward.issuers.objects import SecretView
from keyward.issuers.tcs.ca import KnownCa, TcsIssuerSpec
from keyward.keystore import (
    KeyExists,
    KeySpec,
    KeystoreClosed,
    KeystoreError,
    ModuleLoadError,
    TokenFull,
    TokenKeyStore,
    TokenNotFound,
    UnsupportedOperation,
    WrongPin,
)
from keyward.pki.issue import CLOCK_SKEW
from keyward.pki.keywrap import WrapMechanism, check_wrapped_size
from keyward.pki.pem import load_pem_chain

#: Token faults: they pass (the check retries with backoff), unlike a Secret the token cannot unwrap.
_TOKEN_FAULTS = (TokenNotFound, WrongPin, ModuleLoadError, KeystoreClosed, TokenFull)
_RSA_MODULUS_BYTES = 384  # the wrapping key is RSA-3072 (keystore.unwrap.WRAPPING_KEY_BITS)


class ProvisioningFailed(IssuerNotReady):
    """What the key manager sent cannot become this issuer's CA; the message says why and what to do."""


@dataclass(frozen=True)
class Delivery:
    """A key manager's answer: the wrapped CA key and the CA certificate, and where they came from."""

    wrapped: bytes
    certificate: x509.Certificate
    where: str

    def __repr__(self) -> str:
        return f"Delivery(from {self.where}, {len(self.wrapped)} wrapped bytes)"


def read_delivery(secret: SecretView, where: str) -> Delivery:
    """The wrapped key and the certificate in a key manager's Secret; ``ProvisioningFailed`` when they
    are missing or malformed."""
    key_text = secret.data.get("tls.key")
    if not key_text:
        raise _failed(
            "SecretInvalid",
            f"{where} has no tls.key: the key manager puts the wrapped CA key there (the base64 text of "
            "WSWK || WKEY, as km-wrap or keyward provision-key make it)",
        )
    try:
        wrapped = base64.b64decode(b"".join(key_text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _failed(
            "SecretInvalid",
            f"tls.key of {where} is not base64 text of the wrapped key: put the base64 of WSWK || WKEY "
            "there (km-wrap prints it so)",
        ) from None
    problem = check_wrapped_size(wrapped, _RSA_MODULUS_BYTES)
    if problem:
        raise _failed("SecretInvalid", f"the wrapped key in tls.key of {where} is {problem}")
    certificate_data = secret.data.get("tls.crt") or b""
    if not certificate_data.lstrip().startswith(b"-----BEGIN"):
        try:
            certificate_data = base64.b64decode(b"".join(certificate_data.split()), validate=True)
        except (binascii.Error, ValueError):
            certificate_data = b""
    try:
        certificate = load_pem_chain(certificate_data)[0]
    except ValueError:
        raise _failed(
            "SecretInvalid",
            f"tls.crt of {where} is not a PEM CA certificate (or the base64 text of one): put the CA "
            "certificate that belongs to the wrapped key there",
        ) from None
    return Delivery(wrapped, certificate, where)


def check_certificate(
    certificate: x509.Certificate,
    where: str,
    spec: TcsIssuerSpec,
    known: Sequence[KnownCa] = (),
    now: datetime | None = None,
) -> KeySpec:
    """Refuse a certificate that cannot be this issuer's CA; returns the kind of key it certifies."""
    try:
        constraints = _extension(certificate, x509.BasicConstraints)
        usage = _extension(certificate, x509.KeyUsage)
    except ValueError as exc:
        raise _failed("NotACA", f"the certificate in {where} has unreadable extensions: {exc}") from None
    if constraints is None or not constraints.ca or (usage is not None and not usage.key_cert_sign):
        raise _failed(
            "NotACA",
            f"the certificate in {where} ({certificate.subject.rfc4514_string()}) is not a CA certificate "
            "(basicConstraints CA:TRUE and, if it has keyUsage, keyCertSign): send the CA's certificate",
        )
    moment = now or datetime.now(UTC)
    if certificate.not_valid_after_utc <= moment:
        raise _failed(
            "CAExpired",
            f"the CA certificate in {where} expired at {certificate.not_valid_after_utc}: send a CA "
            "that is valid now",
        )
    if certificate.not_valid_before_utc > moment + CLOCK_SKEW:
        raise _failed(
            "CANotYetValid",
            f"the CA certificate in {where} is valid only from {certificate.not_valid_before_utc}: send "
            "a CA that is valid now (or check the clocks)",
        )
    try:
        kind = KeySpec.of_public_key(certificate.public_key())
    except ValueError as exc:
        raise _failed("UnsupportedKey", f"the CA certificate in {where}: {exc}") from None
    if spec.key_given and kind != spec.key:
        raise _failed(
            "KeyChangeRefused",
            f"spec.privateKey asks for {spec.key} but the CA certificate in {where} has a {kind} key: "
            "send that kind of CA, or change spec.privateKey",
        )
    fingerprint = certificate.fingerprint(hashes.SHA256())
    if known and all(ca.fingerprint != fingerprint for ca in known):
        raise _failed(
            "CAMismatch",
            f"{known[0].where} this issuer's CA certificate, and the CA in {where} is another one; a CA "
            "is never replaced: send the issuer's own CA key and certificate (or delete the issuer and "
            "create it again to start over)",
        )
    return kind


def provision_ca(
    store: TokenKeyStore,
    label: str,
    delivery: Delivery,
    mechanism: WrapMechanism,
    spec: TcsIssuerSpec,
    *,
    known: Sequence[KnownCa] = (),
    now: datetime | None = None,
) -> None:
    """Check ``delivery`` and take it into the token as the CA labelled ``label``; the wrapping key is
    deleted once the CA is in. Blocking. ``ProvisioningFailed`` leaves the token as it was."""
    kind = check_certificate(delivery.certificate, delivery.where, spec, known, now)
    try:
        store.unwrap_ca_key(label, delivery.wrapped, mechanism, kind, certificate=delivery.certificate)
    except _TOKEN_FAULTS:
        raise
    except KeyExists:
        raise _failed(
            "KeyExists", f"the token already holds a key labelled {label}; it is never replaced"
        ) from None
    except UnsupportedOperation as exc:
        raise _failed("UnsupportedMechanism", f"{exc}; {_MECHANISM_HINT.format(mechanism)}") from None
    except KeystoreError as exc:
        raise _failed(
            "KeyProvisioningFailed",
            f"the key in {delivery.where} was not taken: {exc}; {_MECHANISM_HINT.format(mechanism)}",
        ) from None
    store.delete_wrapping_key(label)


_MECHANISM_HINT = (
    "keyward unwraps with {} (--key-wrap-mechanism): the key manager must wrap the CA key of its "
    "certificate (PKCS#8 DER) with that mechanism, for the publicKey of this issuer's QuoteAttestation"
)


E = TypeVar("E", bound=x509.ExtensionType)


def _extension(certificate: x509.Certificate, kind: type[E]) -> E | None:
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _failed(reason: str, message: str) -> ProvisioningFailed:
    return ProvisioningFailed(reason, message)
