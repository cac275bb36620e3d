"""Token keys can do their one job and nothing else, even for someone who holds the user PIN.

The attacker is ``pkcs11-tool`` (OpenSC) logged in with the user PIN, and python-pkcs11 for what
pkcs11-tool cannot ask (CKA_SIGN_RECOVER, CKA_COPYABLE, C_CopyObject, C_SetAttributeValue of any
attribute).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import algos
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from keyward.keystore import (
    HsmConfig,
    KeySpec,
    KeystoreError,
    TokenKeyStore,
    TokenPrivateKey,
    TokenRSAPrivateKey,
)
from keyward.keystore.objects import new_key_id, rsa_public_key
from keyward.keystore.unwrap import wrapping_label
from tests.support.pki import self_signed_ca
from tests.support.tools import pkcs11_tool

from .helpers import wrap_for_token
from .test_store import object_block, pkcs11_tool_objects

SECRET = b"session key meant for the CA key's owner only"


def private_key_object(store: TokenKeyStore, key_id: bytes, use: Callable[[Any], Any]) -> Any:
    """``use(the private key object with this CKA_ID)`` in a session of ``store``."""
    return store._sessions.call("use the key object", lambda session: use(session.private_key(key_id)))


def refused(store: TokenKeyStore, key_id: bytes, attempt: Callable[[Any], Any]) -> bool:
    """Whether the token refuses ``attempt`` on the private key (with any PKCS#11 error)."""
    try:
        store._sessions.call("attempt", lambda session: session.use_private_key(key_id, attempt))
    except KeystoreError:
        return True
    return False


@pytest.fixture
def rsa_ca(store: TokenKeyStore, label: str) -> TokenRSAPrivateKey:
    key, _ = store.create_ca(label, KeySpec("RSA", 2048), lambda new: self_signed_ca(new, "RSA CA"))
    assert isinstance(key, TokenRSAPrivateKey)
    return key


def test_a_raw_rsa_operation_cannot_decrypt_what_was_encrypted_for_the_ca_key(
    hsm_config: HsmConfig, rsa_ca: TokenRSAPrivateKey, tmp_path: Path
) -> None:
    ciphertext = tmp_path / "ciphertext"
    ciphertext.write_bytes(rsa_ca.public_key().encrypt(SECRET, padding.PKCS1v15()))
    out = tmp_path / "out"
    key = ("--id", rsa_ca.key_id.hex())

    raw_sign = pkcs11_tool(hsm_config, "--sign", "-m", "RSA-X-509", *key, "-i", ciphertext, "-o", out)
    assert raw_sign.returncode != 0 and "CKR_MECHANISM_INVALID" in raw_sign.stderr
    assert not out.exists() or SECRET not in out.read_bytes()
    raw_decrypt = pkcs11_tool(hsm_config, "--decrypt", "-m", "RSA-X-509", *key, "-i", ciphertext, "-o", out)
    assert raw_decrypt.returncode != 0
    assert not out.exists() or SECRET not in out.read_bytes()


def test_the_ca_key_signs_with_its_one_mechanism_and_no_other(
    hsm_config: HsmConfig, rsa_ca: TokenRSAPrivateKey, tmp_path: Path
) -> None:
    message = b"to be signed"
    digest_info = algos.DigestInfo(
        {"digest_algorithm": {"algorithm": "sha256"}, "digest": hashlib.sha256(message).digest()}
    )
    (tmp_path / "digest-info").write_bytes(digest_info.dump())
    (tmp_path / "message").write_bytes(message)
    key = ("--id", rsa_ca.key_id.hex())

    allowed = pkcs11_tool(
        hsm_config, "--sign", "-m", "RSA-PKCS", *key, "-i", tmp_path / "digest-info", "-o", tmp_path / "sig"
    )
    assert allowed.returncode == 0
    rsa_ca.public_key().verify((tmp_path / "sig").read_bytes(), message, padding.PKCS1v15(), hashes.SHA256())
    for mechanism in ("SHA256-RSA-PKCS", "SHA256-RSA-PKCS-PSS"):
        other = pkcs11_tool(hsm_config, "--sign", "-m", mechanism, *key, "-i", tmp_path / "message")
        assert other.returncode != 0 and "CKR_MECHANISM_INVALID" in other.stderr, mechanism

    private = object_block(pkcs11_tool_objects(hsm_config), "Private Key Object", rsa_ca.label)
    assert "Allowed mechanisms: RSA-PKCS" in private.splitlines()


@pytest.mark.parametrize(
    ("spec", "mechanism", "shown"),
    [
        (KeySpec("RSA", 2048), Mechanism.RSA_PKCS, "RSA-PKCS"),
        (KeySpec("ECDSA", 256), Mechanism.ECDSA, "ECDSA"),
    ],
    ids=str,
)
def test_ca_key_attributes_read_back_as_set_and_cannot_be_changed(
    store: TokenKeyStore, hsm_config: HsmConfig, label: str, spec: KeySpec, mechanism: Mechanism, shown: str
) -> None:
    key, _ = store.create_ca(label, spec, lambda new: self_signed_ca(new, "CA"))
    attributes = private_key_object(
        store,
        key.key_id,
        lambda obj: obj.get_attributes(
            [
                Attribute.SIGN,
                Attribute.SIGN_RECOVER,
                Attribute.DECRYPT,
                Attribute.DERIVE,
                Attribute.COPYABLE,
                Attribute.MODIFIABLE,
                Attribute.ALLOWED_MECHANISMS,
            ]
        ),
    )
    assert attributes == {
        Attribute.SIGN: True,
        Attribute.SIGN_RECOVER: False,
        Attribute.DECRYPT: False,
        Attribute.DERIVE: False,
        Attribute.COPYABLE: False,
        Attribute.MODIFIABLE: False,
        Attribute.ALLOWED_MECHANISMS: [mechanism],
    }
    assert (
        f"Allowed mechanisms: {shown}"
        in object_block(pkcs11_tool_objects(hsm_config), "Private Key Object", label).splitlines()
    )

    for attribute, value in (
        (Attribute.SIGN_RECOVER, True),
        (Attribute.DECRYPT, True),
        (Attribute.DERIVE, True),
        (Attribute.ALLOWED_MECHANISMS, [Mechanism.RSA_X_509, Mechanism.ECDSA_SHA256]),
        (Attribute.LABEL, "stolen"),
    ):
        assert refused(store, key.key_id, lambda obj: obj.__setitem__(attribute, value)), attribute  # noqa: B023
    assert refused(store, key.key_id, lambda obj: obj.copy({Attribute.LABEL: "copy", Attribute.TOKEN: False}))
    new_id = new_key_id().hex()
    moved = pkcs11_tool(hsm_config, "--set-id", new_id, "--id", key.key_id.hex(), "--type", "privkey")
    assert moved.returncode != 0
    found = store.find_key(label)
    assert found is not None and found.key_id == key.key_id
    assert private_key_object(store, key.key_id, lambda obj: obj[Attribute.SIGN_RECOVER]) is False


def test_the_wrapping_key_only_unwraps_with_rsa_oaep(
    store: TokenKeyStore, hsm_config: HsmConfig, label: str, tmp_path: Path
) -> None:
    public_key = store.generate_wrapping_key(label)
    wrapping = store._sessions.call(
        "find the wrapping key",
        lambda session: session.find(
            {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: wrapping_label(label)}
        )[0],
    )
    key_id = bytes(wrapping[Attribute.ID])
    assert rsa_public_key(wrapping) == public_key
    assert private_key_object(
        store,
        key_id,
        lambda obj: obj.get_attributes(
            [
                Attribute.UNWRAP,
                Attribute.SIGN,
                Attribute.SIGN_RECOVER,
                Attribute.DECRYPT,
                Attribute.COPYABLE,
                Attribute.MODIFIABLE,
                Attribute.ALLOWED_MECHANISMS,
            ]
        ),
    ) == {
        Attribute.UNWRAP: True,
        Attribute.SIGN: False,
        Attribute.SIGN_RECOVER: False,
        Attribute.DECRYPT: False,
        Attribute.COPYABLE: False,
        Attribute.MODIFIABLE: False,
        Attribute.ALLOWED_MECHANISMS: [Mechanism.RSA_PKCS_OAEP],
    }
    assert refused(store, key_id, lambda obj: obj.__setitem__(Attribute.DECRYPT, True))

    ciphertext = tmp_path / "ciphertext"
    ciphertext.write_bytes(public_key.encrypt(SECRET, padding.PKCS1v15()))
    out = tmp_path / "out"
    for action in ("--sign", "--decrypt"):
        attempt = pkcs11_tool(
            hsm_config, action, "-m", "RSA-X-509", "--id", key_id.hex(), "-i", ciphertext, "-o", out
        )
        assert attempt.returncode != 0, action
        assert not out.exists() or SECRET not in out.read_bytes()
    listing = object_block(pkcs11_tool_objects(hsm_config), "Private Key Object", wrapping_label(label))
    assert "Allowed mechanisms: RSA-PKCS-OAEP" in listing.splitlines()


def test_an_unwrapped_ca_key_gets_the_same_attributes(store: TokenKeyStore, label: str) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = store.unwrap_ca_key(
        label, wrap_for_token(ca_key, store.generate_wrapping_key(label)), certificate=self_signed_ca(ca_key)
    )
    attributes = private_key_object(
        store,
        key.key_id,
        lambda obj: obj.get_attributes(
            [Attribute.SIGN_RECOVER, Attribute.COPYABLE, Attribute.MODIFIABLE, Attribute.ALLOWED_MECHANISMS]
        ),
    )
    assert attributes == {
        Attribute.SIGN_RECOVER: False,
        Attribute.COPYABLE: False,
        Attribute.MODIFIABLE: False,
        Attribute.ALLOWED_MECHANISMS: [Mechanism.ECDSA],
    }


def test_keys_made_by_older_versions_keep_signing(store: TokenKeyStore, label: str) -> None:
    """Older keyward versions set none of these attributes; their keys are used as they are."""
    key_id = new_key_id()

    def generate(session: Any) -> None:
        common = {Attribute.TOKEN: True, Attribute.LABEL: label, Attribute.ID: key_id}
        session.session.generate_keypair(
            KeyType.RSA,
            2048,
            store=True,
            public_template=common,
            private_template={
                **common,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.SIGN: True,
            },
        )

    store._sessions.call("generate a key as older versions did", generate)
    key: TokenPrivateKey | None = store.find_key(label)
    assert isinstance(key, TokenRSAPrivateKey)
    assert private_key_object(store, key_id, lambda obj: obj[Attribute.MODIFIABLE]) is True
    certificate = self_signed_ca(key, "old CA")  # signed with CKM_RSA_PKCS, which the key allows too
    certificate.verify_directly_issued_by(certificate)
    assert certificate.public_key() == key.public_key()
