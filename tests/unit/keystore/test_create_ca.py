"""create_ca: a crash at any point never leaves a CA key without its certificate (or the reverse)."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, KeyType, ObjectClass

from keyward.keystore import KeyExists, KeySpec, TokenKeyStore, TokenPrivateKey
from keyward.keystore.objects import ec_parameters, new_key_id
from keyward.keystore.store import PENDING_SUFFIX
from tests.support.pki import self_signed_ca

SPEC = KeySpec("ECDSA", 256)


class Crash(BaseException):
    """The process dying at this point (BaseException: nothing on the way may handle it)."""


def crash(_: TokenPrivateKey) -> x509.Certificate:
    raise Crash


def labelled(store: TokenKeyStore, object_class: ObjectClass, label: str) -> list[bytes]:
    """The CKA_IDs of the objects of ``object_class`` labelled ``label``."""
    found = store._sessions.call(
        "list objects", lambda session: session.find({Attribute.CLASS: object_class, Attribute.LABEL: label})
    )
    return [bytes(item[Attribute.ID]) for item in found]


def test_create_ca_commits_key_and_certificate_under_the_label(store: TokenKeyStore, label: str) -> None:
    key, certificate = store.create_ca(label, SPEC, lambda k: self_signed_ca(k, "test CA"))
    assert store.find_certificate(label) == certificate
    found = store.find_key(label)
    assert found is not None and found.public_key() == certificate.public_key() == key.public_key()
    assert label in store.labels()
    assert not any(name.endswith(PENDING_SUFFIX) for name in store.labels())
    assert labelled(store, ObjectClass.PUBLIC_KEY, label) == [key.key_id]
    assert labelled(store, ObjectClass.PUBLIC_KEY, label + PENDING_SUFFIX) == []


def test_a_crash_before_the_commit_is_undone(store: TokenKeyStore, label: str) -> None:
    with pytest.raises(Crash):
        store.create_ca(label, SPEC, crash)  # the key pair exists, the certificate never came
    store.recover_pending(label)
    assert store.find_key(label) is None and store.find_certificate(label) is None
    assert labelled(store, ObjectClass.PUBLIC_KEY, label + PENDING_SUFFIX) == []
    _, certificate = store.create_ca(label, SPEC, lambda k: self_signed_ca(k, "test CA"))
    assert store.find_certificate(label) == certificate


def test_a_crash_after_the_commit_is_finished(
    store: TokenKeyStore, label: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def die(*_: Any) -> None:
        raise Crash

    monkeypatch.setattr(store, "_relabel", die)  # the certificate is stored, the public key not relabelled
    with pytest.raises(Crash):
        store.create_ca(label, SPEC, lambda k: self_signed_ca(k, "test CA"))
    monkeypatch.undo()
    certificate = store.find_certificate(label)
    assert certificate is not None

    store.recover_pending(label)
    key = store.find_key(label)
    assert key is not None and key.public_key() == certificate.public_key()
    assert labelled(store, ObjectClass.PUBLIC_KEY, label) == [key.key_id]
    assert store.find_certificate(label) == certificate


def test_a_certificate_without_its_key_is_never_replaced(store: TokenKeyStore, label: str) -> None:
    orphan = self_signed_ca(store.generate_key(label + "-elsewhere", SPEC), "orphan")
    store.store_certificate(label, orphan)
    with pytest.raises(KeyExists, match=f"a certificate labelled '{label}' is already in token"):
        store.create_ca(label, SPEC, lambda k: self_signed_ca(k, "test CA"))
    assert store.find_certificate(label) == orphan and store.find_key(label) is None


# ---- CAs that older keyward versions made entirely under the pending label, then relabelled ----


def old_style_pending_ca(store: TokenKeyStore, label: str) -> tuple[bytes, x509.Certificate]:
    """A CA as older versions left it mid-creation: key pair (changeable, as they made it) and certificate
    all under ``label#pending``."""
    pending = label + PENDING_SUFFIX
    key_id = new_key_id()

    def generate(session: Any) -> None:
        common = {Attribute.TOKEN: True, Attribute.LABEL: pending, Attribute.ID: key_id}
        session.session.generate_keypair(
            KeyType.EC,
            store=True,
            public_template={**common, Attribute.EC_PARAMS: ec_parameters(ec.SECP256R1())},
            private_template={
                **common,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.SIGN: True,
            },
        )

    store._sessions.call("generate an old-style CA key", generate)
    key = store.find_key(pending)
    assert key is not None and key.key_id == key_id
    certificate = self_signed_ca(key, "old CA")
    store.store_certificate(pending, certificate)
    return key_id, certificate


def relabel(store: TokenKeyStore, classes: tuple[ObjectClass, ...], old: str, new: str) -> None:
    def move(session: Any) -> None:
        for object_class in classes:
            for found in session.find({Attribute.CLASS: object_class, Attribute.LABEL: old}):
                found[Attribute.LABEL] = new

    store._sessions.call("relabel as an older version did", move)
    store._sessions.forget_objects()


def test_an_older_versions_creation_interrupted_mid_commit_is_finished(
    store: TokenKeyStore, label: str
) -> None:
    key_id, certificate = old_style_pending_ca(store, label)
    relabel(store, (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY), label + PENDING_SUFFIX, label)
    store.recover_pending(label)
    key = store.find_key(label)
    assert key is not None and key.key_id == key_id
    assert store.find_certificate(label) == certificate


def test_an_older_versions_creation_interrupted_before_its_commit_is_undone(
    store: TokenKeyStore, label: str
) -> None:
    old_style_pending_ca(store, label)
    store.recover_pending(label)
    assert store.find_key(label) is None and store.find_certificate(label) is None
    assert store.find_key(label + PENDING_SUFFIX) is None
