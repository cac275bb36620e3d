"""TLS for the EST client: the Explicit TA database only, TLS 1.2 or later, hostname verification.

RFC 7030 §3.6.1: an EST client authenticates the server through its explicitly configured trust anchors.
The context therefore never loads the system store, and every configured certificate is an anchor of its
own (partial chains allowed), so ``spec.cacert`` may hold an intermediate CA or the server's own
certificate. Python's ``ssl`` loads client keys only from files: they are written to a private temporary
directory for the load and deleted right after.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from keyward import fips
from keyward.est.client.errors import EstError
from keyward.pki.pem import unique_certificates

# TLS 1.2 suites the client offers: forward-secret ones only, AEAD first. Unlike the server, the client also
# offers ECDHE/DHE with AES-CBC, which older EST appliances still need. Null, anonymous, export, DES, 3DES,
# RC4 and MD5 suites are excluded explicitly so that no edit can bring them back. TLS 1.3 suites are all
# strong and are configured by OpenSSL.
CLIENT_TLS12_CIPHERS = (
    "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:ECDHE+AES:DHE+AES"
    ":!aNULL:!eNULL:!EXPORT:!DES:!3DES:!RC4:!MD5:!PSK:!SRP:!CAMELLIA:!ARIA"
)


@dataclass(frozen=True)
class ClientCertificate:
    """A TLS client identity: the certificate chain (PEM, leaf first) and its unencrypted private key (PEM).

    ``repr`` leaves the key out, so the object may appear in logs and tracebacks.
    """

    chain_pem: bytes
    key_pem: bytes = field(repr=False)

    def leaf(self) -> x509.Certificate:
        """The certificate being presented (the first of the chain)."""
        try:
            return x509.load_pem_x509_certificates(self.chain_pem)[0]
        except (ValueError, IndexError):
            raise EstError(
                "config",
                "the TLS client certificate is not PEM: provide the certificate chain as PEM, leaf first "
                "(tls.crt of a kubernetes.io/tls Secret)",
            ) from None


def client_ssl_context(
    trust_anchors: Sequence[x509.Certificate], identity: ClientCertificate | None = None
) -> ssl.SSLContext:
    """A client context trusting exactly ``trust_anchors``, presenting ``identity`` when given."""
    if not trust_anchors:
        raise EstError(
            "config",
            "no trust anchor for the EST server is configured: put the CA certificate(s) of the EST "
            "server's TLS certificate into spec.cacert (the system trust store is never used)",
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    fips.configure_tls(context, CLIENT_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    anchors = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in unique_certificates(trust_anchors))
    context.load_verify_locations(cadata=anchors.decode("ascii"))
    if identity is not None:
        _load_identity(context, identity)
    return context


def _load_identity(context: ssl.SSLContext, identity: ClientCertificate) -> None:
    identity.leaf()
    try:
        serialization.load_pem_private_key(identity.key_pem, password=None)
    except (ValueError, TypeError):
        raise EstError(
            "config",
            "the TLS client key is not an unencrypted PEM private key: provide it as PEM "
            "(tls.key of a kubernetes.io/tls Secret), without a passphrase",
        ) from None
    with tempfile.TemporaryDirectory(prefix="keyward-est-client-") as directory:
        chain_path = Path(directory, "chain.pem")
        key_path = Path(directory, "key.pem")
        chain_path.write_bytes(identity.chain_pem)
        descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as key_file:
            key_file.write(identity.key_pem)
        try:
            context.load_cert_chain(chain_path, key_path)
        except ssl.SSLError as exc:
            raise EstError(
                "config",
                f"the TLS client certificate cannot be used ({exc.reason or 'rejected by OpenSSL'}); "
                "the key must belong to the first certificate of the chain",
            ) from None
