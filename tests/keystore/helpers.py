"""Certificates and wrapped keys built the way keyward's peers build them, for the keystore tests."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from keyward.pki.keywrap import WrapMechanism, wrap_private_key

CAPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def self_signed_ca(
    key: CAPrivateKey,
    common_name: str = "keyward test CA",
    algorithm: hashes.HashAlgorithm | None = None,
    *,
    ca: bool = True,
    valid_for: datetime.timedelta = datetime.timedelta(days=1),
    valid_since: datetime.timedelta = datetime.timedelta(minutes=1),
) -> x509.Certificate:
    """A self-signed CA certificate built by cryptography, signed by ``key`` (in the token or not), valid
    from ``valid_since`` ago for ``valid_for`` from now (negative: expired); ``ca`` false for a leaf."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - valid_since)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, algorithm or hashes.SHA256())
    )


def wrap_for_token(
    ca_key: CAPrivateKey, wrapping_public_key: rsa.RSAPublicKey, mechanism: WrapMechanism = "aes_key_wrap_pad"
) -> bytes:
    """WSWK || WKEY as a key manager (km-wrap) sends it: OAEP-SHA1 AES-256 key, then the wrapped PKCS#8."""
    return wrap_private_key(ca_key, wrapping_public_key, mechanism)
