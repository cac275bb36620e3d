"""create_ca: a crash at any point never leaves a CA key without its certificate (or the reverse)."""

from __future__ import annotations

from pkcs11 import Attribute, ObjectClass

from keyward.keystore import KeySpec, TokenKeyStore
from keyward.keystore.store import PENDING_SUFFIX

from .helpers import self_signed_ca

SPEC = KeySpec("ECDSA", 256)


def test_create_ca_commits_key_and_certificate_under_the_label(store: TokenKeyStore, label: str) -> None:
    key, certificate = store.create_ca(label, SPEC, lambda k: self_signed_ca(k, "test CA"))
    assert store.find_certificate(label) == certificate
    found = store.find_key(label)
    assert found is not None and found.public_key() == certificate.public_key() == key.public_key()
    assert label in store.labels()
    assert not any(name.endswith(PENDING_SUFFIX) for name in store.labels())


def test_a_crash_before_the_commit_is_undone(store: TokenKeyStore, label: str) -> None:
    pending_key = store.generate_key(label + PENDING_SUFFIX, SPEC)  # the crash came right after this
    store.store_certificate(label + PENDING_SUFFIX, self_signed_ca(pending_key, "test CA"))
    store.recover_pending(label)
    assert store.find_key(label) is None and store.find_certificate(label) is None
    assert store.find_key(label + PENDING_SUFFIX) is None
    _, certificate = store.create_ca(label, SPEC, lambda k: self_signed_ca(k, "test CA"))
    assert store.find_certificate(label) == certificate


def test_a_crash_in_the_middle_of_the_commit_is_finished(store: TokenKeyStore, label: str) -> None:
    pending = label + PENDING_SUFFIX
    pending_key = store.generate_key(pending, SPEC)
    certificate = self_signed_ca(pending_key, "test CA")
    store.store_certificate(pending, certificate)

    def relabel_keys_only(session: object) -> None:  # the crash came before the certificate's turn
        for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
            for found in session.find({Attribute.CLASS: object_class, Attribute.LABEL: pending}):  # type: ignore[attr-defined]
                found[Attribute.LABEL] = label

    store._sessions.call("simulate an interrupted commit", relabel_keys_only)
    store._sessions.forget_objects()
    assert store.find_key(label) is not None and store.find_certificate(label) is None

    store.recover_pending(label)
    assert store.find_certificate(label) == certificate
    key = store.find_key(label)
    assert key is not None and key.public_key() == certificate.public_key()
