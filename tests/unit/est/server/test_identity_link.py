"""RFC 7030 §3.5: a CSR's challengePassword carrying the TLS session's tls-unique links identity and POP."""

from __future__ import annotations

import base64
import http.client
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import AttributeOID

from tests.support.pki import ec_key, name

from ..helpers import PASSWORD, USER, Pki, RunningServer


def enroll_on_one_tls12_connection(pki: Pki, est: RunningServer, link: bytes | None) -> tuple[int, bytes]:
    """Open a TLS 1.2 session, build the CSR with ``link(tls_unique)`` and send it on that same session."""
    context = ssl.create_default_context(cafile=str(pki.files["tls-root"]))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    connection = http.client.HTTPSConnection("127.0.0.1", est.port, context=context, timeout=15)
    try:
        connection.connect()
        assert isinstance(connection.sock, ssl.SSLSocket)
        tls_unique = connection.sock.get_channel_binding("tls-unique")
        assert tls_unique
        password = base64.b64encode(tls_unique) if link is None else link
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(name("linked-device"))
            .add_attribute(AttributeOID.CHALLENGE_PASSWORD, password)
            .sign(ec_key(), hashes.SHA256())
        )
        body = base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))
        credentials = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        connection.request(
            "POST",
            "/.well-known/est/simpleenroll",
            body=body,
            headers={"Content-Type": "application/pkcs10", "Authorization": f"Basic {credentials}"},
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_csr_linked_to_this_tls_session_is_enrolled(pki: Pki, est: RunningServer) -> None:
    status, body = enroll_on_one_tls12_connection(pki, est, None)
    assert status == 200, body


def test_csr_linked_to_another_session_is_refused(pki: Pki, est: RunningServer) -> None:
    status, body = enroll_on_one_tls12_connection(pki, est, base64.b64encode(b"\x00" * 12))
    assert status == 400
    assert b"tls-unique" in body and b"3.5" in body
