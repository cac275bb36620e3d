"""The self-signed CA certificate, its subject from spec.subject, and the hash each CA key signs with."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from keyward.pki.issue import CertificateAuthority, self_signed_ca, signature_hash, subject_from_spec
from tests.support.pki import name

from .helpers import NOW, extension, validity


def test_self_signed_ca_extensions_and_validity(ca: CertificateAuthority) -> None:
    certificate = ca.certificate
    assert certificate.issuer == certificate.subject
    assert validity(certificate) == (NOW - timedelta(minutes=5), NOW + timedelta(days=3650))
    basic = extension(certificate, x509.BasicConstraints)
    assert basic.critical and basic.value.ca is True
    key_usage = extension(certificate, x509.KeyUsage)
    assert key_usage.critical
    assert key_usage.value.key_cert_sign and key_usage.value.crl_sign and key_usage.value.digital_signature
    assert not key_usage.value.key_encipherment
    ski = extension(certificate, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca.key.public_key())
    assert extension(certificate, x509.AuthorityKeyIdentifier).value.key_identifier == ski.digest
    assert certificate.serial_number > 0 and certificate.serial_number.bit_length() >= 64
    certificate.verify_directly_issued_by(certificate)


def test_self_signed_ca_needs_a_positive_duration(ec_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        self_signed_ca(ec_key, name("CA"), timedelta(0), now=NOW)


def test_self_signed_ca_defaults_to_the_current_time(ec_key: ec.EllipticCurvePrivateKey) -> None:
    certificate = self_signed_ca(ec_key, name("CA"), timedelta(hours=1))
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc == timedelta(hours=1, minutes=5)


def test_subject_defaults_to_the_issuer_name() -> None:
    assert subject_from_spec({}, default_cn="my-ca") == name("my-ca")
    assert subject_from_spec({"commonName": ""}, default_cn="my-ca") == name("my-ca")


def test_subject_takes_every_field_in_go_order() -> None:
    spec = {
        "commonName": "Example Root",
        "organizations": ["Example Inc", "Example Labs"],
        "organizationalUnits": ["PKI"],
        "countries": ["US"],
        "localities": ["Portland"],
        "provinces": ["Oregon"],
    }
    subject = subject_from_spec(spec, default_cn="ignored")
    assert subject.rfc4514_string() == (
        "CN=Example Root,ST=Oregon,L=Portland,OU=PKI,O=Example Labs,O=Example Inc,C=US"
    )
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Example Root"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"countries": ["USA"]}, 'countries "USA"'),
        ({"organizations": "Example"}, "organizations must be a list of strings"),
        ({"organizations": [1]}, "organizations must be a list of strings"),
        ({"commonName": "x" * 65}, 'commonName "x'),
        ({"commonname": "typo"}, "unknown field"),
    ],
)
def test_subject_errors_name_the_field(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        subject_from_spec(spec, default_cn="my-ca")


def test_long_issuer_name_needs_an_explicit_common_name() -> None:
    with pytest.raises(ValueError, match=r"set subject\.commonName"):
        subject_from_spec({}, default_cn="n" * 70)
    assert subject_from_spec({"commonName": "short"}, default_cn="n" * 70) == name("short")


def _rsa_public(bits: int) -> rsa.RSAPublicKey:
    # A public key of the given size without the cost of generating a private one.
    return rsa.RSAPublicNumbers(65537, 2 ** (bits - 1) + 1).public_key()


@pytest.mark.parametrize(
    ("bits", "expected"),
    [
        (2048, hashes.SHA256),
        (3071, hashes.SHA256),
        (3072, hashes.SHA384),
        (4095, hashes.SHA384),
        (4096, hashes.SHA512),
        (8192, hashes.SHA512),
    ],
)
def test_rsa_signature_hash_by_size(bits: int, expected: type[hashes.HashAlgorithm]) -> None:
    assert isinstance(signature_hash(_rsa_public(bits)), expected)


@pytest.mark.parametrize(
    ("curve", "expected"),
    [(ec.SECP256R1(), hashes.SHA256), (ec.SECP384R1(), hashes.SHA384), (ec.SECP521R1(), hashes.SHA512)],
)
def test_ec_signature_hash_by_curve(curve: ec.EllipticCurve, expected: type[hashes.HashAlgorithm]) -> None:
    key = ec.generate_private_key(curve)
    assert isinstance(signature_hash(key), expected)
    assert isinstance(signature_hash(key.public_key()), expected)


def test_eddsa_needs_no_hash(ed_key: ed25519.Ed25519PrivateKey) -> None:
    assert signature_hash(ed_key) is None
    assert signature_hash(ed_key.public_key()) is None
    assert signature_hash(ed448.Ed448PrivateKey.generate()) is None


def test_rsa_private_key_is_accepted(rsa_key: rsa.RSAPrivateKey) -> None:
    assert isinstance(signature_hash(rsa_key), hashes.SHA256)


def test_dsa_cannot_sign_certificates() -> None:
    with pytest.raises(TypeError, match="use an RSA, ECDSA or EdDSA key"):
        signature_hash(dsa.generate_private_key(1024))
