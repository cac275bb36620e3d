"""Which keys we accept in requests, and which hash a CA key signs with.

In FIPS mode (``keyward.fips``) only approved algorithms pass: RSA keys of at least 2048 bits and ECDSA
P-256/P-384, and requests signed with SHA-256, SHA-384 or SHA-512; a refusal is the policy rule
``fips-algorithms`` and names FIPS.
"""

from __future__ import annotations

from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
    CertificatePublicKeyTypes,
)

from keyward import fips
from keyward.pki.errors import IssuerError, PolicyViolation, RequestError

SigningKey: TypeAlias = CertificateIssuerPrivateKeyTypes | CertificateIssuerPublicKeyTypes

MIN_RSA_BITS = 2048
#: NIST SP 800-56B (section 6.2.1) and FIPS 186-5: an odd public exponent with 2**16 < e < 2**256. Keys
#: made by openssl, cryptography, Go and cert-manager use 65537.
MIN_RSA_EXPONENT = 65537
MAX_RSA_EXPONENT = 2**256
RSA_EXPONENT = "rsa-exponent"  # the policy rule (see keyward.pki.policy)
ALLOWED_CURVES: tuple[type[ec.EllipticCurve], ...] = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_ALLOWED = "RSA of at least 2048 bits, ECDSA P-256/P-384/P-521 or Ed25519"
FIPS_ALGORITHMS = "fips-algorithms"  # the policy rule of FIPS mode
#: A serial number's random bits: 159 (20 octets, positive; RFC 5280 section 4.1.2.2), as cryptography's.
_SERIAL_BYTES = 20


def describe_key(public_key: CertificatePublicKeyTypes) -> str:
    """A short human name for a key, for messages: "RSA-2048", "ECDSA secp256r1", "Ed25519"."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA-{public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"ECDSA {public_key.curve.name}"
    if isinstance(public_key, dsa.DSAPublicKey):
        return f"DSA-{public_key.key_size}"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(public_key, ed448.Ed448PublicKey):
        return "Ed448"
    return type(public_key).__name__


def fips_key_problem(public_key: CertificatePublicKeyTypes) -> str | None:
    """In FIPS mode, why ``public_key`` may not be certified or sign ("the key is ..."); else None."""
    if not fips.enabled():
        return None
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size >= fips.MIN_RSA_BITS:
        return None
    if isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name in fips.APPROVED_CURVES:
        return None
    return fips.refusal(f"the key is {describe_key(public_key)}", fips.APPROVED_KEYS)


def check_request_algorithms(csr: x509.CertificateSigningRequest) -> None:
    """The request's key (``check_request_key``) and, in FIPS mode, the hash it is signed with: checked
    before its signature is verified, so that a refusal names the algorithm rather than a failed check."""
    check_request_key(csr.public_key())
    if not fips.enabled():
        return
    try:
        algorithm = csr.signature_hash_algorithm
        name = algorithm.name if algorithm is not None else "no hash"
    except UnsupportedAlgorithm:
        name = "an unknown algorithm"
    if name not in fips.APPROVED_SIGNATURE_HASHES:
        raise PolicyViolation(
            FIPS_ALGORITHMS,
            fips.refusal(
                f"the request is signed with {name.upper() if name.startswith('sha') else name}",
                "a request signed with SHA-256, SHA-384 or SHA-512",
            ),
        )


def check_ca_key(public_key: CertificatePublicKeyTypes) -> None:
    """In FIPS mode, an ``IssuerError`` for a CA key that is not approved (the issuer cannot sign)."""
    problem = fips_key_problem(public_key)
    if problem:
        raise IssuerError(f"the CA cannot sign in FIPS mode: {problem}; create the issuer with such a key")


def random_serial_number() -> int:
    """A positive random serial number of 159 bits; in FIPS mode from the FIPS provider's DRBG."""
    return int.from_bytes(fips.random_bytes(_SERIAL_BYTES), "big") >> 1


def check_request_key(public_key: CertificatePublicKeyTypes) -> None:
    """Refuse keys too weak or too exotic to certify, with a ``RequestError`` naming the key."""
    problem = fips_key_problem(public_key)
    if problem:
        raise PolicyViolation(FIPS_ALGORITHMS, f"the request's key: {problem}")
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size >= MIN_RSA_BITS:
        exponent = public_key.public_numbers().e
        if exponent % 2 == 0 or not MIN_RSA_EXPONENT <= exponent < MAX_RSA_EXPONENT:
            shown = exponent if exponent < 2**64 else "over 2**64"
            raise PolicyViolation(
                RSA_EXPONENT,
                f"the request's RSA key has the public exponent {shown}; this issuer certifies RSA keys "
                "with an odd exponent of at least 65537 (NIST SP 800-56B): generate the key again with "
                "the usual exponent 65537",
            )
        return
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ALLOWED_CURVES):
        return
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return
    raise RequestError(
        f"the request's key is {describe_key(public_key)}, which this issuer does not certify; use {_ALLOWED}"
    )


def signature_hash(key: SigningKey) -> hashes.HashAlgorithm | None:
    """The hash a CA key signs with, following cert-manager: RSA below 3072 bits SHA-256, below 4096
    SHA-384, else SHA-512; ECDSA by curve size (P-256 SHA-256, P-384 SHA-384, P-521 SHA-512); Ed25519 and
    Ed448 None (they hash internally). Accepts the private or the public key.
    """
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size < 3072:
            return hashes.SHA256()
        return hashes.SHA384() if key.key_size < 4096 else hashes.SHA512()
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.key_size <= 256:
            return hashes.SHA256()
        return hashes.SHA384() if key.curve.key_size <= 384 else hashes.SHA512()
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return None
    if isinstance(key, ed448.Ed448PrivateKey | ed448.Ed448PublicKey):
        return None
    raise TypeError(f"cannot sign certificates with a {type(key).__name__}; use an RSA, ECDSA or EdDSA key")
