"""CA keys that stay in the token but look like ordinary ``cryptography`` private keys.

``CertificateBuilder.sign`` and ``CertificateSigningRequestBuilder.sign`` accept these objects and call
their ``sign``, which runs C_Sign in the token with the calling thread's session. Everything that would
need the private key material (``private_bytes``, ``private_numbers``, RSA ``decrypt``, ECDH
``exchange``) fails with :class:`KeyNotExtractable`: the token created the key non-extractable.
"""

from __future__ import annotations

import functools
from typing import Any, NoReturn, TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import _serialization, hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding

from keyward.keystore.approved import check_mechanism
from keyward.keystore.errors import KeyNotExtractable, KeyNotFound, KeystoreError
from keyward.keystore.sessions import ThreadSession, TokenSessions
from keyward.keystore.signing import (
    RSAHashChoice,
    TokenSignature,
    der_ecdsa_signature,
    ecdsa_signature,
    rsa_signature,
)


class _TokenKey:
    """Where a key lives (store sessions, CKA_LABEL, CKA_ID) and the refusals to hand it out."""

    def __init__(self, sessions: TokenSessions, label: str, key_id: bytes) -> None:
        self._sessions = sessions
        self._label = label
        self._key_id = key_id

    @property
    def label(self) -> str:
        """CKA_LABEL of the key in the token (the issuer's signer name)."""
        return self._label

    @property
    def key_id(self) -> bytes:
        """CKA_ID shared by the private key, public key and certificate objects."""
        return self._key_id

    def _sign_in_token(self, signature: TokenSignature) -> bytes:
        check_mechanism(signature.mechanism, f"signing with key '{self._label}'")

        def sign(session: ThreadSession) -> bytes | None:
            return session.use_private_key(
                self._key_id,
                lambda key: key.sign(
                    signature.data, mechanism=signature.mechanism, mechanism_param=signature.parameter
                ),
            )

        result = self._sessions.call(f"sign with key '{self._label}'", sign)
        if result is None:
            raise KeyNotFound(
                f"key '{self._label}' is no longer in token {self._sessions.description}",
                "look the key up again, or generate a new one",
            )
        return bytes(result)

    def _not_extractable(self, what: str) -> NoReturn:
        raise KeyNotExtractable(
            f"cannot {what} key '{self._label}': it is non-extractable in token {self._sessions.description}",
            "use the key through the key store (sign in the token); its private part never leaves it",
        )

    def private_bytes(
        self,
        encoding: _serialization.Encoding,
        format: _serialization.PrivateFormat,
        encryption_algorithm: _serialization.KeySerializationEncryption,
    ) -> bytes:
        self._not_extractable("serialize")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} label={self._label!r} id={self._key_id.hex()}>"

    def public_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        raise NotImplementedError  # each kind of key knows its own

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled as a reference (token, CKA_ID, public key), never as key material: a child process
        that serves the token (``keyward.keystore.child``) turns it back into a key of its own session."""
        return _key_in_this_process, self._reference

    @functools.cached_property
    def _reference(self) -> tuple[tuple[str, str], str, bytes, bytes]:
        """What ``__reduce__`` sends, made once (every issuance job carries its CA key)."""
        config = self._sessions.config
        public_der = self.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return (config.module, config.token_label), self._label, self._key_id, public_der


class TokenRSAPrivateKey(_TokenKey, rsa.RSAPrivateKey):
    """An RSA key in the token: PKCS#1 v1.5 signatures by C_Sign with CKM_RSA_PKCS."""

    def __init__(
        self, sessions: TokenSessions, label: str, key_id: bytes, public_key: rsa.RSAPublicKey
    ) -> None:
        super().__init__(sessions, label, key_id)
        self._public_key = public_key

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public_key

    @property
    def key_size(self) -> int:
        return self._public_key.key_size

    def sign(self, data: bytes, padding: AsymmetricPadding, algorithm: RSAHashChoice) -> bytes:
        return self._sign_in_token(rsa_signature(bytes(data), padding, algorithm))

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        raise KeyNotExtractable(
            f"key '{self._label}' in token {self._sessions.description} can only sign",
            "CA keys are created for signing only; decrypt with another key",
        )

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        self._not_extractable("read the private numbers of")

    def __copy__(self) -> TokenRSAPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[Any, Any]) -> TokenRSAPrivateKey:
        return self


class TokenECPrivateKey(_TokenKey, ec.EllipticCurvePrivateKey):
    """An ECDSA key in the token: C_Sign with CKM_ECDSA over the hash, returned as DER."""

    def __init__(
        self,
        sessions: TokenSessions,
        label: str,
        key_id: bytes,
        curve: ec.EllipticCurve,
        public_key: ec.EllipticCurvePublicKey | None,
    ) -> None:
        super().__init__(sessions, label, key_id)
        self._curve = curve
        self._public_key = public_key

    def public_key(self) -> ec.EllipticCurvePublicKey:
        if self._public_key is None:
            raise KeystoreError(
                f"the public part of key '{self._label}' is not in token {self._sessions.description}",
                "store the key's certificate with store_certificate and look the key up again",
            )
        return self._public_key

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._curve

    @property
    def key_size(self) -> int:
        return self._curve.key_size

    def sign(self, data: Any, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        raw = self._sign_in_token(ecdsa_signature(bytes(data), signature_algorithm))
        return der_ecdsa_signature(raw)

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise KeyNotExtractable(
            f"key '{self._label}' in token {self._sessions.description} can only sign",
            "CA keys are created for signing only; use another key for ECDH",
        )

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        self._not_extractable("read the private numbers of")

    def __copy__(self) -> TokenECPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[Any, Any]) -> TokenECPrivateKey:
        return self


TokenPrivateKey: TypeAlias = TokenRSAPrivateKey | TokenECPrivateKey

#: In a signing process: the sessions of the token it serves, by (module, token label).
_process_sessions: dict[tuple[str, str], TokenSessions] = {}
#: Keys already turned back into objects in this process, so that each keeps its identity (and the
#: CertificateAuthority built around it stays cached).
_process_keys: dict[tuple[tuple[str, str], bytes, bytes], TokenPrivateKey] = {}


def serve_token_in_this_process(sessions: TokenSessions) -> None:
    """Let token keys that arrive pickled in this process sign with ``sessions`` (``keystore.child``)."""
    _process_sessions[(sessions.config.module, sessions.config.token_label)] = sessions


def _key_in_this_process(
    token: tuple[str, str], label: str, key_id: bytes, public_der: bytes
) -> TokenPrivateKey:
    """Unpickle a token key: the same key (CKA_ID) in this process's session on the same token."""
    cached = _process_keys.get((token, key_id, public_der))
    if cached is not None:
        return cached
    sessions = _process_sessions.get(token)
    if sessions is None:
        raise KeystoreError(
            f"token key '{label}' was unpickled in a process that has no session on its token",
            "token keys can only be sent to their key store's signing processes (TokenKeyStore.run_signing)",
        )
    public_key = serialization.load_der_public_key(public_der)
    key: TokenPrivateKey
    if isinstance(public_key, rsa.RSAPublicKey):
        key = TokenRSAPrivateKey(sessions, label, key_id, public_key)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        key = TokenECPrivateKey(sessions, label, key_id, public_key.curve, public_key)
    else:  # pragma: no cover - __reduce__ only ever sends RSA and EC public keys
        raise KeystoreError(f"token key '{label}' has a {type(public_key).__name__}", "use RSA or EC keys")
    _process_keys[(token, key_id, public_der)] = key
    return key


def key_matches(key: TokenPrivateKey, public_key: object) -> bool:
    """Whether ``public_key`` is the public half of the token key (a signature made by the key verifies)."""
    probe = b"keyward key match probe"
    try:
        if isinstance(key, TokenRSAPrivateKey) and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(
                key.sign(probe, padding.PKCS1v15(), hashes.SHA256()),
                probe,
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
            return True
        if isinstance(key, TokenECPrivateKey) and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(key.sign(probe, ec.ECDSA(hashes.SHA256())), probe, ec.ECDSA(hashes.SHA256()))
            return True
    except InvalidSignature:
        return False
    return False
