"""Keys are generated once per session: RSA generation is the slow part of these tests."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from keyward.pki.issue import CertificateAuthority, self_signed_ca
from tests.support.pki import name

from .helpers import NOW


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def leaf_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(params=["rsa", "ec"])
def ca(
    request: pytest.FixtureRequest, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> CertificateAuthority:
    """A self-signed CA valid for ten years from NOW, with an RSA-2048 and with a P-256 key."""
    key: CertificateIssuerPrivateKeyTypes = rsa_key if request.param == "rsa" else ec_key
    certificate = self_signed_ca(key, name(f"{request.param} test CA"), timedelta(days=3650), now=NOW)
    return CertificateAuthority(certificate=certificate, key=key)
