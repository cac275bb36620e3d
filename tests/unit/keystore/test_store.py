"""Keys and certificates persist in the token under their label, as other PKCS#11 tools see them."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from keyward.keystore import (
    HsmConfig,
    KeyExists,
    KeyNotFound,
    KeySpec,
    KeystoreClosed,
    TokenECPrivateKey,
    TokenKeyStore,
    TokenRSAPrivateKey,
)
from tests.support.pki import self_signed_ca
from tests.support.tools import object_blocks
from tests.support.tools import token_objects as pkcs11_tool_objects


def object_block(listing: str, kind: str, label: str) -> str:
    """The lines pkcs11-tool prints for the object of this kind (e.g. 'Private Key Object') and label."""
    for block in object_blocks(listing, label):
        if block.startswith(kind):
            return "\n".join(line.strip() for line in block.splitlines())
    return ""


def test_pkcs11_tool_lists_the_key_as_sensitive_and_never_extractable(
    store: TokenKeyStore, hsm_config: HsmConfig, label: str
) -> None:
    key = store.generate_key(label, KeySpec("ECDSA", 256))
    store.store_certificate(label, self_signed_ca(key))
    listing = pkcs11_tool_objects(hsm_config)

    private = object_block(listing, "Private Key Object", label)
    assert "Access:     sensitive, always sensitive, never extractable" in private
    assert "Usage:      sign" in private
    assert f"ID:         {key.key_id.hex()}" in private
    assert f"ID:         {key.key_id.hex()}" in object_block(listing, "Public Key Object", label)
    assert f"ID:         {key.key_id.hex()}" in object_block(listing, "Certificate Object", label)


def test_store_and_find_certificate(store: TokenKeyStore, rsa_key: TokenRSAPrivateKey, label: str) -> None:
    assert store.find_certificate(label) is None
    first = self_signed_ca(rsa_key, "first")
    store.store_certificate(label, first)
    assert store.find_certificate(label) == first

    renewed = self_signed_ca(rsa_key, "renewed")
    store.store_certificate(label, renewed)
    assert store.find_certificate(label) == renewed


def test_reopened_store_finds_key_and_certificate_by_label(
    store: TokenKeyStore, hsm_config: HsmConfig, label: str
) -> None:
    with TokenKeyStore.open(hsm_config, workers=1) as first:
        key = first.generate_key(label, KeySpec("ECDSA", 384))
        cert = self_signed_ca(key)
        first.store_certificate(label, cert)

    with TokenKeyStore.open(hsm_config, workers=1) as reopened:
        found = reopened.find_key(label)
        assert isinstance(found, TokenECPrivateKey)
        assert found.key_id == key.key_id
        assert found.public_key() == key.public_key()
        assert isinstance(found.curve, ec.SECP384R1)
        assert reopened.find_certificate(label) == cert
        signature = found.sign(b"after restart", ec.ECDSA(hashes.SHA384()))
        cert.public_key().verify(signature, b"after restart", ec.ECDSA(hashes.SHA384()))  # type: ignore[call-arg,arg-type]

    with pytest.raises(KeystoreClosed, match="open the key store again"):
        found.sign(b"closed", ec.ECDSA(hashes.SHA384()))
    # the store that stayed open is still logged in and sees the key
    assert store.find_key(label) is not None


def test_delete_removes_key_public_key_and_certificate(store: TokenKeyStore, label: str) -> None:
    key = store.generate_key(label, KeySpec("ECDSA", 256))
    store.store_certificate(label, self_signed_ca(key))
    key.sign(b"cache the key object in this thread", ec.ECDSA(hashes.SHA256()))
    assert label in store.labels()

    assert store.delete(label) is True
    assert store.find_key(label) is None
    assert store.find_certificate(label) is None
    assert label not in store.labels()
    with pytest.raises(KeyNotFound, match="no longer in token"):
        key.sign(b"gone", ec.ECDSA(hashes.SHA256()))
    assert store.delete(label) is False


def test_two_labels_get_distinct_keys(store: TokenKeyStore, label: str) -> None:
    first = store.generate_key(f"{label}-a", KeySpec("ECDSA", 256))
    second = store.generate_key(f"{label}-b", KeySpec("ECDSA", 256))
    assert first.key_id != second.key_id
    assert first.public_key() != second.public_key()
    assert store.find_key(f"{label}-a").public_key() == first.public_key()  # type: ignore[union-attr]
    assert store.find_key(f"{label}-b").public_key() == second.public_key()  # type: ignore[union-attr]
    assert {f"{label}-a", f"{label}-b"} <= store.labels()


def test_a_label_holds_one_key(store: TokenKeyStore, label: str) -> None:
    store.generate_key(label, KeySpec("ECDSA", 256))
    with pytest.raises(KeyExists, match=r"already in token 'keyward'.*delete it first"):
        store.generate_key(label, KeySpec("ECDSA", 256))


def test_missing_key_is_none(store: TokenKeyStore, label: str) -> None:
    assert store.find_key(label) is None
