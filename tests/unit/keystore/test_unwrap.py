"""Key provisioning: a CA key wrapped by a key manager lands in the token, usable and non-extractable."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from keyward.keystore import (
    HsmConfig,
    KeyExists,
    KeyNotFound,
    KeySpec,
    KeystoreError,
    TokenECPrivateKey,
    TokenKeyStore,
    TokenRSAPrivateKey,
    UnsupportedOperation,
)
from tests.support.pki import self_signed_ca

from .helpers import wrap_for_token
from .test_store import object_block, pkcs11_tool_objects


def leaf_signed_by(
    ca_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, ca: x509.Certificate
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]))
        .issuer_name(ca.subject)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(ca_key, hashes.SHA256())
    )


def test_wrapped_rsa_ca_key_is_unwrapped_into_the_token(
    store: TokenKeyStore, hsm_config: HsmConfig, label: str
) -> None:
    ca_key = rsa.generate_private_key(65537, 2048)
    ca = self_signed_ca(ca_key)
    wrapping_public_key = store.generate_wrapping_key(label)
    assert wrapping_public_key.key_size == 3072

    key = store.unwrap_ca_key(
        label, wrap_for_token(ca_key, wrapping_public_key), "aes_key_wrap_pad", certificate=ca
    )

    assert isinstance(key, TokenRSAPrivateKey)
    assert key.public_key() == ca_key.public_key()
    leaf_signed_by(key, ca).verify_directly_issued_by(ca)
    assert store.find_certificate(label) == ca
    assert store.find_key(label).key_id == key.key_id  # type: ignore[union-attr]
    access = next(
        line
        for line in object_block(pkcs11_tool_objects(hsm_config), "Private Key Object", label).splitlines()
        if line.startswith("Access:")
    )
    assert "sensitive" in access and "extractable" not in access
    assert store.delete_wrapping_key(label) is True
    assert store.wrapping_public_key(label) is None


def test_wrapped_ec_key_needs_its_certificate_for_the_public_key(store: TokenKeyStore, label: str) -> None:
    ca_key = ec.generate_private_key(ec.SECP384R1())
    wrapped = wrap_for_token(ca_key, store.generate_wrapping_key(label))

    key = store.unwrap_ca_key(label, wrapped, "aes_key_wrap_pad", KeySpec("ECDSA", 384))

    assert isinstance(key, TokenECPrivateKey) and isinstance(key.curve, ec.SECP384R1)
    signature = key.sign(b"provisioned", ec.ECDSA(hashes.SHA384()))
    ca_key.public_key().verify(signature, b"provisioned", ec.ECDSA(hashes.SHA384()))
    with pytest.raises(KeystoreError, match="store the key's certificate with store_certificate"):
        key.public_key()
    store.store_certificate(label, self_signed_ca(ca_key))
    assert store.find_key(label).public_key() == ca_key.public_key()  # type: ignore[union-attr]


def test_aes_gcm_unwrap_is_refused_clearly_when_the_token_lacks_it(store: TokenKeyStore, label: str) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    wrapped = wrap_for_token(ca_key, store.generate_wrapping_key(label), "aes_gcm")
    # SoftHSM2 2.6 has no AES-GCM C_UnwrapKey; a token that has it unwraps the same format.
    with pytest.raises(UnsupportedOperation, match=r"cannot unwrap keys with aes_gcm.*aes_key_wrap_pad"):
        store.unwrap_ca_key(label, wrapped, "aes_gcm", KeySpec("ECDSA", 256))
    assert store.find_key(label) is None


def test_key_wrapped_for_another_wrapping_key_is_refused(store: TokenKeyStore, label: str) -> None:
    store.generate_wrapping_key(label)
    someone_else = rsa.generate_private_key(65537, 3072).public_key()
    wrapped = wrap_for_token(ec.generate_private_key(ec.SECP256R1()), someone_else)
    with pytest.raises(KeystoreError, match=r"unwrap the AES key \(WSWK\).*not wrapped for this issuer's"):
        store.unwrap_ca_key(label, wrapped, "aes_key_wrap_pad", KeySpec("ECDSA", 256))
    assert store.find_key(label) is None


def test_corrupt_wrapped_key_is_refused(store: TokenKeyStore, label: str) -> None:
    wrapped = wrap_for_token(ec.generate_private_key(ec.SECP256R1()), store.generate_wrapping_key(label))
    corrupt = wrapped[:-1] + bytes([wrapped[-1] ^ 1])
    with pytest.raises(KeystoreError, match=r"unwrap the ECDSA-256 CA key \(WKEY\).*or is corrupt"):
        store.unwrap_ca_key(label, corrupt, "aes_key_wrap_pad", KeySpec("ECDSA", 256))
    assert store.find_key(label) is None


def test_unwrapped_key_must_match_spec_and_certificate(store: TokenKeyStore, label: str) -> None:
    wrapping_public_key = store.generate_wrapping_key(label)
    ca_key = ec.generate_private_key(ec.SECP256R1())

    with pytest.raises(KeystoreError, match="is ECDSA on secp256r1, not the expected ECDSA-384"):
        store.unwrap_ca_key(label, wrap_for_token(ca_key, wrapping_public_key), spec=KeySpec("ECDSA", 384))
    assert store.find_key(label) is None

    other_ca = self_signed_ca(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(KeystoreError, match="does not belong to its certificate"):
        store.unwrap_ca_key(label, wrap_for_token(ca_key, wrapping_public_key), certificate=other_ca)
    assert store.find_key(label) is None and store.find_certificate(label) is None


def test_wrapping_key_lifecycle(store: TokenKeyStore, label: str) -> None:
    with pytest.raises(KeyNotFound, match="no wrapping key for"):
        store.unwrap_ca_key(label, b"\0" * 500, spec=KeySpec("ECDSA", 256))
    public_key = store.generate_wrapping_key(label)
    assert store.wrapping_public_key(label) == public_key
    assert label not in str(store.labels())
    with pytest.raises(KeyExists):
        store.generate_wrapping_key(label)
    with pytest.raises(KeystoreError, match="too short for WSWK"):
        store.unwrap_ca_key(label, b"\0" * 384, spec=KeySpec("ECDSA", 256))
    assert store.delete_wrapping_key(label) is True
    assert store.delete_wrapping_key(label) is False
