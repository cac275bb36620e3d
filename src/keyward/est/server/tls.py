"""TLS for the EST server: TLS 1.2+, strong suites only, optional client certificates, live reload.

A listening socket keeps the ``SSLContext`` it was created with. To renew the server certificate or change
the client trust anchors without a restart, the listening context's SNI callback (which OpenSSL calls on
every handshake, with or without SNI) switches each new connection to the latest context.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from keyward import fips
from keyward.errors import UserError
from keyward.pki.pem import unique_certificates

# Forward-secret AEAD suites for TLS 1.2; TLS 1.3 suites are all strong and are configured by OpenSSL.
# The exclusions are redundant with the selection, and are spelled out so that a future edit cannot
# bring null, anonymous, export, DES, 3DES or RC4 suites back.
TLS12_CIPHERS = (
    "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"
    ":!aNULL:!eNULL:!EXPORT:!DES:!3DES:!RC4:!MD5:!PSK:!SRP:!CAMELLIA:!ARIA"
)


class TlsSetupError(UserError):
    """The server certificate, key or trust anchors cannot be used."""


class ServerTls:
    """The EST server's TLS configuration; ``context`` goes to ``EstServer.start``.

    ``reload_certificate`` (certificate renewal) and ``set_client_trust`` (issuers added or removed) take
    effect for the next handshake; established connections keep what they negotiated.
    """

    def __init__(
        self, cert_chain_pem: bytes, key_pem: bytes, client_trust: Sequence[x509.Certificate] = ()
    ) -> None:
        self._chain_pem = cert_chain_pem
        self._key_pem = key_pem
        self._trust = list(client_trust)
        self._current = _build_context(cert_chain_pem, key_pem, self._trust)
        self._listening = self._current
        self._listening.sni_callback = self._switch_to_current

    @property
    def context(self) -> ssl.SSLContext:
        return self._listening

    def reload_certificate(self, cert_chain_pem: bytes, key_pem: bytes) -> None:
        """Serve a new certificate chain and key (checked first: a bad pair leaves the old one in place)."""
        self._current = _build_context(cert_chain_pem, key_pem, self._trust)
        self._chain_pem, self._key_pem = cert_chain_pem, key_pem

    def set_client_trust(self, client_trust: Sequence[x509.Certificate]) -> None:
        """Replace the anchors a TLS client certificate must chain to for the handshake to succeed."""
        trust = list(client_trust)
        self._current = _build_context(self._chain_pem, self._key_pem, trust)
        self._trust = trust

    def _switch_to_current(self, connection: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        current = self._current
        if connection.context is not current:
            connection.context = current


def server_ssl_context(
    cert_chain_pem: bytes, key_pem: bytes, client_trust: Sequence[x509.Certificate]
) -> ssl.SSLContext:
    """A fixed server context; use ``ServerTls`` when the certificate must be reloadable."""
    return _build_context(cert_chain_pem, key_pem, list(client_trust))


def _build_context(
    cert_chain_pem: bytes, key_pem: bytes, client_trust: list[x509.Certificate]
) -> ssl.SSLContext:
    _check_pem(cert_chain_pem, key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    fips.configure_tls(context, TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    # Certificates are optional: Basic-authenticated clients have none. One that is presented must chain
    # to an anchor (any certificate in the trust list, hence PARTIAL_CHAIN), or the handshake fails.
    context.verify_mode = ssl.CERT_OPTIONAL
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if client_trust:
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in unique_certificates(client_trust))
        context.load_verify_locations(cadata=pem.decode("ascii"))
    _load_chain(context, cert_chain_pem, key_pem)
    return context


def _check_pem(cert_chain_pem: bytes, key_pem: bytes) -> None:
    try:
        chain = x509.load_pem_x509_certificates(cert_chain_pem)
    except ValueError:
        raise TlsSetupError(
            "the EST server certificate is not PEM", "provide the certificate chain as PEM, leaf first"
        ) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise TlsSetupError(
            "the EST server private key is not an unencrypted PEM private key",
            "provide the key as unencrypted PEM (PKCS#8 or traditional)",
        ) from None
    leaf_key = chain[0].public_key()
    if leaf_key.public_bytes(*_SPKI) != key.public_key().public_bytes(*_SPKI):
        raise TlsSetupError(
            "the EST server private key does not belong to the first certificate of the chain",
            "put the server certificate first and pair it with its own key",
        )


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _load_chain(context: ssl.SSLContext, cert_chain_pem: bytes, key_pem: bytes) -> None:
    """``SSLContext`` only loads keys from files: write them to a private directory, load, delete."""
    with tempfile.TemporaryDirectory(prefix="keyward-est-tls-") as directory:
        chain_path = Path(directory, "chain.pem")
        key_path = Path(directory, "key.pem")
        chain_path.write_bytes(cert_chain_pem)
        descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as key_file:
            key_file.write(key_pem)
        try:
            context.load_cert_chain(chain_path, key_path)
        except ssl.SSLError as exc:
            raise TlsSetupError(
                f"the EST server certificate cannot be used ({exc.reason or 'rejected by OpenSSL'})",
                "use an RSA (2048+) or ECDSA certificate with its key",
            ) from None
