"""The CA key store: keys and certificates in a PKCS#11 token, found by label, used from any thread.

Every method except :meth:`TokenKeyStore.run` blocks on the token; an asyncio caller hands them to
:meth:`run`, which executes them in the store's worker pool (sized to the cores, since C_Sign releases
the GIL and the token works in parallel), never on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pkcs11 import Attribute, KeyType, ObjectClass

from keyward.keystore import evidence, unwrap
from keyward.keystore.config import HsmConfig
from keyward.keystore.errors import KeyExists, KeystoreError
from keyward.keystore.evidence import Evidence
from keyward.keystore.keys import TokenECPrivateKey, TokenPrivateKey, TokenRSAPrivateKey, key_matches
from keyward.keystore.objects import (
    certificate_template,
    curve_of,
    ec_parameters,
    ec_public_key,
    new_key_id,
    private_key_template,
    public_key_template,
    rsa_public_key,
)
from keyward.keystore.processes import SigningProcesses
from keyward.keystore.sessions import ThreadSession, TokenSessions
from keyward.keystore.signing import SIGNATURE_MECHANISMS
from keyward.keystore.spec import KeySpec
from keyward.pki.keywrap import WrapMechanism

T = TypeVar("T")


class TokenKeyStore:
    """CA keys (CKA_LABEL = signer name) and their certificates in one token."""

    def __init__(self, sessions: TokenSessions, workers: int, processes: int = 0) -> None:
        self._sessions = sessions
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="keyward-token")
        self._signers = SigningProcesses(sessions.config, processes) if processes else None

    @classmethod
    def open(cls, config: HsmConfig, *, workers: int | None = None, processes: int = 0) -> TokenKeyStore:
        """Load the module, find the token (initializing it when absent) and log in. Blocking.

        ``workers`` threads (default: one per core) run :meth:`run`; ``processes`` signing processes
        (default none) run :meth:`run_signing`, which otherwise uses the threads too.
        """
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        if processes < 0:
            raise ValueError(f"processes must not be negative, not {processes}")
        return cls(TokenSessions(config), workers or os.cpu_count() or 1, processes)

    @property
    def config(self) -> HsmConfig:
        return self._sessions.config

    # -- keys ----------------------------------------------------------------------------------

    def generate_key(self, label: str, spec: KeySpec) -> TokenPrivateKey:
        """Generate a signing key pair labelled ``label`` in the token. The private key is non-extractable,
        unchangeable and allowed only the signature mechanism of its type (see ``objects``)."""
        return self._generate_key(label, spec, public_label=label)

    def _generate_key(self, label: str, spec: KeySpec, *, public_label: str) -> TokenPrivateKey:
        def generate(session: ThreadSession) -> TokenPrivateKey:
            if _signing_keys(session, label):
                raise self._exists(label)
            key_id = new_key_id()
            key_type = KeyType.RSA if spec.algorithm == "RSA" else KeyType.EC
            private = private_key_template(label, key_id, SIGNATURE_MECHANISMS[key_type])
            public = public_key_template(public_label, key_id)
            if key_type == KeyType.RSA:
                public_object, _ = session.session.generate_keypair(
                    KeyType.RSA, spec.size, store=True, public_template=public, private_template=private
                )
                return TokenRSAPrivateKey(self._sessions, label, key_id, rsa_public_key(public_object))
            curve = spec.curve
            public[Attribute.EC_PARAMS] = ec_parameters(curve)
            public_object, _ = session.session.generate_keypair(
                KeyType.EC, store=True, public_template=public, private_template=private
            )
            point = public_object[Attribute.EC_POINT]
            return TokenECPrivateKey(self._sessions, label, key_id, curve, ec_public_key(curve, point))

        return self._sessions.call(f"generate a {spec} key labelled '{label}'", generate)

    def create_ca(
        self, label: str, spec: KeySpec, certify: Callable[[TokenPrivateKey], x509.Certificate]
    ) -> tuple[TokenPrivateKey, x509.Certificate]:
        """Generate a CA key and its certificate (``certify`` signs it with the new key) such that a crash
        at any point never leaves a committed CA key without its certificate, nor a certificate without
        its key.

        The private key cannot be relabelled (it is unchangeable, CKA_MODIFIABLE false), so it is made
        under ``label`` with its public half under ``label#pending``. Storing the certificate under
        ``label`` commits the CA; then the public half is relabelled. ``recover_pending`` finishes a
        committed creation and undoes one interrupted before the commit, private key included.
        """
        self.recover_pending(label)
        if self.find_certificate(label) is not None:
            raise KeyExists(
                f"a certificate labelled '{label}' is already in token {self._sessions.description}",
                "a CA is never replaced silently: delete the objects labelled with it first",
            )
        pending = label + PENDING_SUFFIX
        key = self._generate_key(label, spec, public_label=pending)
        certificate = certify(key)
        self.store_certificate(label, certificate)
        self._relabel(pending, label, (ObjectClass.PUBLIC_KEY,))
        return key, certificate

    def recover_pending(self, label: str) -> None:
        """Finish a ``create_ca`` interrupted after its commit, or undo one interrupted before it.

        A creation is committed once an object other than the private key (the certificate; with
        keyward versions that made the whole CA under the pending label, the public key too) carries
        ``label`` and the CA's CKA_ID. Until this runs, the private key of an uncommitted creation is
        visible under ``label``; every issuer check runs it first.
        """

        def recover(session: ThreadSession) -> bool:
            pending = label + PENDING_SUFFIX
            leftovers = [
                found
                for object_class in _CA_OBJECT_CLASSES
                for found in session.find({Attribute.CLASS: object_class, Attribute.LABEL: pending})
            ]
            if not leftovers:
                return False
            committed = {
                bytes(found[Attribute.ID])
                for object_class in (ObjectClass.PUBLIC_KEY, ObjectClass.CERTIFICATE)
                for found in session.find({Attribute.CLASS: object_class, Attribute.LABEL: label})
            }
            for found in leftovers:
                key_id = bytes(found[Attribute.ID])
                if key_id in committed:
                    found[Attribute.LABEL] = label  # committed: finish the relabelling
                    continue
                uncommitted = {
                    Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                    Attribute.LABEL: label,
                    Attribute.ID: key_id,
                }
                for private in session.find(uncommitted):
                    private.destroy()  # never committed: undo, the key made under the final label too
                found.destroy()
            return True

        if self._sessions.call(f"recover an interrupted creation of '{label}'", recover):
            self._sessions.forget_objects()

    def _relabel(self, old: str, new: str, classes: tuple[ObjectClass, ...]) -> None:
        def relabel(session: ThreadSession) -> None:
            for object_class in classes:
                for found in session.find({Attribute.CLASS: object_class, Attribute.LABEL: old}):
                    found[Attribute.LABEL] = new

        try:
            self._sessions.call(f"relabel '{old}' as '{new}'", relabel)
        finally:
            self._sessions.forget_objects()

    def find_key(self, label: str) -> TokenPrivateKey | None:
        """The signing key labelled ``label``, or None."""

        def find(session: ThreadSession) -> TokenPrivateKey | None:
            found = _signing_keys(session, label)
            return self._token_key(session, label, found[0]) if found else None

        return self._sessions.call(f"look up key '{label}'", find)

    def _token_key(self, session: ThreadSession, label: str, private: Any) -> TokenPrivateKey:
        key_id = bytes(private[Attribute.ID])
        key_type = private[Attribute.KEY_TYPE]
        publics = session.find({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: key_id})
        if key_type == KeyType.RSA:
            return TokenRSAPrivateKey(
                self._sessions, label, key_id, rsa_public_key(publics[0] if publics else private)
            )
        if key_type == KeyType.EC:
            curve = curve_of(private[Attribute.EC_PARAMS])
            public_key: ec.EllipticCurvePublicKey | None = None
            if publics:
                public_key = ec_public_key(curve, publics[0][Attribute.EC_POINT])
            else:
                certificate = _certificate_by_id(session, key_id)
                certified = certificate.public_key() if certificate is not None else None
                if isinstance(certified, ec.EllipticCurvePublicKey):
                    public_key = certified
            return TokenECPrivateKey(self._sessions, label, key_id, curve, public_key)
        raise KeystoreError(
            f"key '{label}' in token {self._sessions.description} is a {key_type!s} key",
            "keyward signs with RSA and ECDSA keys only; delete the key and generate a supported one",
        )

    def delete(self, label: str) -> bool:
        """Delete the private key, public key and certificate labelled ``label``; False if there were none."""

        def delete(session: ThreadSession) -> bool:
            doomed = [
                found
                for object_class in _CA_OBJECT_CLASSES
                for name in (label, label + PENDING_SUFFIX)  # also what an interrupted create_ca left
                for found in session.find({Attribute.CLASS: object_class, Attribute.LABEL: name})
            ]
            for found in doomed:
                found.destroy()
            return bool(doomed)

        try:
            return self._sessions.call(f"delete the objects labelled '{label}'", delete)
        finally:
            self._sessions.forget_objects()

    def labels(self) -> set[str]:
        """Labels of the signing keys and certificates in the token (wrapping keys excluded)."""

        def labels(session: ThreadSession) -> set[str]:
            found = session.find({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.SIGN: True})
            found += session.find({Attribute.CLASS: ObjectClass.CERTIFICATE})
            names = (obj[Attribute.LABEL] for obj in found)
            return {label for label in names if label and not label.endswith(PENDING_SUFFIX)}

        return self._sessions.call("list its objects", labels)

    # -- certificates --------------------------------------------------------------------------

    def store_certificate(self, label: str, cert: x509.Certificate) -> None:
        """Store ``cert`` labelled ``label`` (with its key's CKA_ID), replacing an older one."""

        def store(session: ThreadSession) -> None:
            keys = _signing_keys(session, label)
            key_id = bytes(keys[0][Attribute.ID]) if keys else new_key_id()
            older = session.find({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: label})
            session.session.create_object(certificate_template(label, key_id, cert))
            for certificate in older:
                certificate.destroy()

        self._sessions.call(f"store the certificate labelled '{label}'", store)

    def find_certificate(self, label: str) -> x509.Certificate | None:
        """The certificate labelled ``label``, or None."""

        def find(session: ThreadSession) -> x509.Certificate | None:
            found = session.find({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: label})
            return x509.load_der_x509_certificate(bytes(found[0][Attribute.VALUE])) if found else None

        return self._sessions.call(f"read the certificate labelled '{label}'", find)

    # -- key provisioning (tcs.md, "Key provisioning from an external key manager") ------------

    def generate_wrapping_key(self, label: str) -> rsa.RSAPublicKey:
        """Generate the RSA-3072 pair a key manager wraps ``label``'s CA key for; returns its public key."""
        return self._sessions.call(
            f"generate the wrapping key for '{label}'",
            lambda session: unwrap.generate_wrapping_key(session, label, self._exists),
        )

    def wrapping_public_key(self, label: str) -> rsa.RSAPublicKey | None:
        """The public half of ``label``'s wrapping key, or None if there is none (e.g. after a restart)."""
        return self._sessions.call(
            f"read the wrapping key for '{label}'", lambda session: unwrap.wrapping_public_key(session, label)
        )

    def delete_wrapping_key(self, label: str) -> bool:
        """Delete ``label``'s wrapping key pair; False if there was none."""
        try:
            return self._sessions.call(
                f"delete the wrapping key for '{label}'",
                lambda session: unwrap.delete_wrapping_key(session, label),
            )
        finally:
            self._sessions.forget_objects()

    def prepare_wrapping_key(self, label: str, nonce: bytes) -> tuple[rsa.RSAPublicKey, Evidence]:
        """The wrapping key a key manager wraps ``label``'s CA key for (the token's, or a new one) and the
        token's evidence over it, bound to ``nonce`` (``keystore.evidence``: an SGX quote, or none)."""

        def prepare(session: ThreadSession) -> tuple[rsa.RSAPublicKey, Evidence]:
            provider = evidence.choose(session.session.token.slot.get_mechanisms())
            public_key = unwrap.wrapping_public_key(session, label)
            if public_key is None:
                public_key = unwrap.generate_wrapping_key(
                    session, label, self._exists, token_object=provider.token_object
                )
            found = session.find(
                {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: unwrap.wrapping_label(label)}
            )
            quote = provider.attest(found[0] if found else None, nonce)
            return public_key, Evidence(provider.name, quote, provider.quote_version, nonce)

        return self._sessions.call(f"prepare the wrapping key for '{label}'", prepare)

    def unwrap_ca_key(
        self,
        label: str,
        wrapped: bytes,
        mechanism: WrapMechanism = "aes_key_wrap_pad",
        spec: KeySpec | None = None,
        *,
        certificate: x509.Certificate | None = None,
    ) -> TokenPrivateKey:
        """Unwrap ``WSWK || WKEY`` (tcs.md) inside the token into a non-extractable CA key labelled ``label``.

        ``spec`` (default: the certificate's key, else RSA-3072) is checked against the unwrapped key. With
        ``certificate`` the key must match it; the certificate is then stored beside the key.
        """
        if spec is None:
            spec = KeySpec.of_public_key(certificate.public_key()) if certificate else KeySpec.default()
        checked_spec = spec

        def unwrap_key(session: ThreadSession) -> TokenPrivateKey:
            if _signing_keys(session, label):
                raise self._exists(label)
            key_id = unwrap.unwrap_private_key(session, label, wrapped, mechanism, checked_spec)
            if certificate is not None:
                session.session.create_object(certificate_template(label, key_id, certificate))
            private = session.private_key(key_id)
            return self._token_key(session, label, private)

        key = self._sessions.call(f"unwrap the CA key for '{label}'", unwrap_key)
        if certificate is not None and not key_matches(key, certificate.public_key()):
            self.delete(label)
            raise KeystoreError(
                f"the unwrapped key for '{label}' does not belong to its certificate",
                "have the key manager wrap the private key of the certificate it sends",
            )
        return key

    # -- the worker pool -----------------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the blocking ``fn(*args)`` in the store's worker pool and await its result."""
        if self._sessions.closed:
            raise self._sessions.closed_error()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args))

    async def run_signing(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the issuance job ``fn(*args)`` in a signing process if the store has them (see
        ``keyward.keystore.processes``: ``fn`` and ``args`` must then pickle), else like :meth:`run`."""
        if self._signers is None:
            return await self.run(fn, *args)
        if self._sessions.closed:
            raise self._sessions.closed_error()
        return await self._signers.run(fn, *args)

    @property
    def signing_processes(self) -> int:
        """How many signing processes the store has (0: issuance jobs run in its threads)."""
        return self._signers.count if self._signers is not None else 0

    @property
    def signing_pids(self) -> tuple[int, ...]:
        """The process IDs of the signing processes running now."""
        return self._signers.pids if self._signers is not None else ()

    def close(self) -> None:
        """Wait for running work, close every session and log out (unless another store shares the login)."""
        if self._signers is not None:
            self._signers.close()
        self._pool.shutdown(wait=True)
        self._sessions.close()

    def __enter__(self) -> TokenKeyStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TokenKeyStore token {self._sessions.description}>"

    def _exists(self, label: str) -> KeyExists:
        return KeyExists(
            f"a key labelled '{label}' is already in token {self._sessions.description}",
            "use it (find_key), or delete it first if it must be replaced",
        )


#: Suffix of the label under which ``create_ca`` builds a CA before committing it ('#' is never in a
#: signer name).
PENDING_SUFFIX = "#pending"
#: Key first, certificate last: a crash mid-relabel leaves the committed key with its pending certificate.
_CA_OBJECT_CLASSES = (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY, ObjectClass.CERTIFICATE)


def _signing_keys(session: ThreadSession, label: str) -> list[Any]:
    return session.find(
        {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label, Attribute.SIGN: True}
    )


def _certificate_by_id(session: ThreadSession, key_id: bytes) -> x509.Certificate | None:
    found = session.find({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.ID: key_id})
    return x509.load_der_x509_certificate(bytes(found[0][Attribute.VALUE])) if found else None
