"""Private keys as cert-manager makes them from a Certificate's ``spec.privateKey``.

cert-manager generates the key itself and never sends it anywhere: only the CSR built from it goes to the
issuer. The defaults follow cert-manager: RSA 2048, ECDSA P-256, PKCS#1 encoding (which for ECDSA means
SEC 1, "EC PRIVATE KEY"), and rotationPolicy Always (cert-manager's default since v1.18).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey: TypeAlias = CertificatePublicKeyTypes

RSA_DEFAULT_BITS = 2048
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 8192
ECDSA_DEFAULT_BITS = 256
_CURVES: dict[int, ec.EllipticCurve] = {256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1()}
ALGORITHMS = ("RSA", "ECDSA", "Ed25519")
ENCODINGS = ("PKCS1", "PKCS8")
ROTATION_POLICIES = ("Never", "Always")


class SpecError(ValueError):
    """The Certificate's spec cannot be honoured; the message names the field and the fix."""


@dataclass(frozen=True)
class KeySpec:
    """What ``spec.privateKey`` asks for, defaults applied."""

    algorithm: str = "RSA"
    size: int = RSA_DEFAULT_BITS  # 0 for Ed25519, which has one size
    encoding: str = "PKCS1"
    rotation_policy: str = "Always"

    @property
    def reuses_key(self) -> bool:
        return self.rotation_policy == "Never"


def _choice(value: Any, field: str, allowed: tuple[str, ...], default: str) -> str:
    if value in (None, ""):
        return default
    if value not in allowed:
        choices = ", ".join(allowed)
        raise SpecError(f'spec.privateKey.{field} "{value}" is not supported; use one of {choices}')
    return str(value)


def key_spec(spec: Mapping[str, Any]) -> KeySpec:
    """Read ``spec.privateKey`` of a Certificate spec; ``SpecError`` for values cert-manager rejects."""
    raw = spec.get("privateKey") or {}
    algorithm = _choice(raw.get("algorithm"), "algorithm", ALGORITHMS, "RSA")
    encoding = _choice(raw.get("encoding"), "encoding", ENCODINGS, "PKCS1")
    rotation = _choice(raw.get("rotationPolicy"), "rotationPolicy", ROTATION_POLICIES, "Always")
    size = raw.get("size") or 0
    if not isinstance(size, int) or isinstance(size, bool):
        raise SpecError(f"spec.privateKey.size must be an integer, got {size!r}")
    if algorithm == "RSA":
        size = size or RSA_DEFAULT_BITS
        if not RSA_MIN_BITS <= size <= RSA_MAX_BITS:
            raise SpecError(
                f"spec.privateKey.size {size} is out of range for RSA; use {RSA_MIN_BITS} to {RSA_MAX_BITS}"
            )
    elif algorithm == "ECDSA":
        size = size or ECDSA_DEFAULT_BITS
        if size not in _CURVES:
            raise SpecError(f"spec.privateKey.size {size} is not an ECDSA curve size; use 256, 384 or 521")
    else:
        size = 0
    return KeySpec(algorithm=algorithm, size=size, encoding=encoding, rotation_policy=rotation)


def generate_private_key(spec: KeySpec) -> PrivateKey:
    """A fresh key as ``spec`` asks (RSA generation takes a moment: call it off the event loop)."""
    if spec.algorithm == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=spec.size)
    if spec.algorithm == "ECDSA":
        return ec.generate_private_key(_CURVES[spec.size])
    return ed25519.Ed25519PrivateKey.generate()


def key_mismatches(public_key: PublicKey, spec: KeySpec) -> list[str]:
    """The spec.privateKey fields an existing key does not satisfy (empty: the key may be kept)."""
    if spec.algorithm == "RSA" and isinstance(public_key, rsa.RSAPublicKey):
        return [] if public_key.key_size == spec.size else ["spec.privateKey.size"]
    if spec.algorithm == "ECDSA" and isinstance(public_key, ec.EllipticCurvePublicKey):
        return [] if public_key.curve.key_size == spec.size else ["spec.privateKey.size"]
    if spec.algorithm == "Ed25519" and isinstance(public_key, ed25519.Ed25519PublicKey):
        return []
    return ["spec.privateKey.algorithm"]


def encode_private_key(key: PrivateKey, encoding: str) -> bytes:
    """PEM for tls.key: PKCS#1/SEC 1 ("RSA PRIVATE KEY", "EC PRIVATE KEY") or PKCS#8 ("PRIVATE KEY").

    Ed25519 has no PKCS#1 form, so it is always PKCS#8, as cert-manager writes it.
    """
    traditional = encoding == "PKCS1" and not isinstance(key, ed25519.Ed25519PrivateKey)
    fmt = PrivateFormat.TraditionalOpenSSL if traditional else PrivateFormat.PKCS8
    return key.private_bytes(Encoding.PEM, fmt, NoEncryption())


def signing_hash(key: PrivateKey) -> hashes.HashAlgorithm | None:
    """The hash cert-manager signs a CSR with: by RSA size or curve; None for Ed25519."""
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 3072:
            return hashes.SHA256()
        return hashes.SHA384() if key.key_size < 4096 else hashes.SHA512()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size <= 256:
            return hashes.SHA256()
        return hashes.SHA384() if key.curve.key_size <= 384 else hashes.SHA512()
    return None


def certifies(certificate: x509.Certificate, public_key: PublicKey) -> bool:
    """Whether ``certificate`` is for ``public_key`` (compared as SubjectPublicKeyInfo)."""
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return certificate.public_key().public_bytes(*spki) == public_key.public_bytes(*spki)


def load_chain(pem: bytes) -> list[x509.Certificate]:
    """The PEM CERTIFICATE blocks of ``pem``, leaf first; ``ValueError`` when none or one is malformed."""
    return x509.load_pem_x509_certificates(pem)


def load_private_key(pem: bytes) -> PrivateKey | None:
    """The key in a tls.key PEM, or None when it is missing, malformed, encrypted or of another kind.

    Never raises with the key's content in the message: callers treat None as "no usable key".
    """
    if not pem.strip():
        return None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        return key
    return None
