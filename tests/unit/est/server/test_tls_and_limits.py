"""TLS policy, certificate reload, timeouts and the connection cap, seen from real clients."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from keyward.est.server import EstTimeouts, TlsSetupError
from keyward.est.server.tls import server_ssl_context
from tests.support.pki import ec_key, key_pem, name, pem

from ..conftest import start_server
from ..helpers import PASSWORD, USER, LoopThread, Pki, RunningServer, closed_by_server, curl, tls_connection


def s_client(pki: Pki, port: int, *options: str) -> subprocess.CompletedProcess[bytes]:
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki.files["tls-root"])]
    return subprocess.run([*command, *options], input=b"", capture_output=True, timeout=20)


def served_certificate(pki: Pki, port: int) -> x509.Certificate:
    shown = s_client(pki, port, "-showcerts").stdout
    start = shown.index(b"-----BEGIN CERTIFICATE-----")
    return x509.load_pem_x509_certificate(shown[start:])


@pytest.mark.parametrize(
    "options",
    [
        ("-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"),
        ("-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"),
        ("-tls1_2", "-cipher", "ECDHE-RSA-NULL-SHA:NULL-SHA256:AECDH-NULL-SHA:@SECLEVEL=0"),
        ("-tls1_2", "-cipher", "AES128-GCM-SHA256:AES256-SHA256"),
    ],
    ids=["tls1.1", "tls1.0", "null-and-anonymous-suites", "no-forward-secrecy"],
)
def test_weak_tls_is_refused(pki: Pki, est: RunningServer, options: tuple[str, ...]) -> None:
    refused = s_client(pki, est.port, *options)
    assert refused.returncode != 0
    assert b"Cipher is (NONE)" in refused.stdout


def test_curl_limited_to_tls_1_1_cannot_connect(pki: Pki, est: RunningServer) -> None:
    args = ["curl", "-sS", "--cacert", str(pki.files["tls-root"]), "--tlsv1.1", "--tls-max", "1.1"]
    completed = subprocess.run([*args, est.url("cacerts")], capture_output=True, timeout=20)
    assert completed.returncode == 35  # SSL connect error


@pytest.mark.parametrize(
    ("options", "negotiated"),
    [
        (("-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"), b"ECDHE-RSA-AES128-GCM-SHA256"),
        (("-tls1_3",), b"TLSv1.3"),
    ],
)
def test_strong_tls_is_accepted(
    pki: Pki, est: RunningServer, options: tuple[str, ...], negotiated: bytes
) -> None:
    accepted = s_client(pki, est.port, *options)
    assert accepted.returncode == 0
    assert negotiated in accepted.stdout


def test_server_offers_no_weak_suite(pki: Pki) -> None:
    context = server_ssl_context(pki.server_chain_pem(), pki.server_key_pem(), [])
    names = [suite["name"] for suite in context.get_ciphers()]
    assert names
    for weak in ("NULL", "ADH", "AECDH", "EXP", "DES", "RC4", "MD5"):
        assert not [n for n in names if weak in n], weak
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_certificate_reload_applies_to_new_connections(pki: Pki, est: RunningServer) -> None:
    original = served_certificate(pki, est.port)
    assert original == pki.server_certificate
    new_key = ec_key()  # another key type too: nothing of the old certificate may linger
    renewed = pki.tls_root.issue(
        name("localhost"),
        new_key.public_key(),
        pki.server_certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value,
        usages=(ExtendedKeyUsageOID.SERVER_AUTH,),
    )
    try:
        est.tls.reload_certificate(pem(renewed), key_pem(new_key))
        assert served_certificate(pki, est.port) == renewed
        assert curl(pki, est.url("cacerts")).status == 200
        with pytest.raises(TlsSetupError, match="does not belong"):
            est.tls.reload_certificate(pem(renewed), pki.server_key_pem())
        assert served_certificate(pki, est.port) == renewed
    finally:
        est.tls.reload_certificate(pki.server_chain_pem(), pki.server_key_pem())
    assert served_certificate(pki, est.port) == original


def test_client_trust_can_change_while_serving(pki: Pki, est: RunningServer) -> None:
    bootstrap = ("--cert", str(pki.files["bootstrap-cert"]), "--key", str(pki.files["bootstrap-key"]))
    anchors = est.server.client_trust_anchors()
    try:
        est.tls.set_client_trust([a for a in anchors if a != pki.bootstrap_ca.certificate])
        args = ["curl", "-sS", "--cacert", str(pki.files["tls-root"]), *bootstrap, est.url("cacerts")]
        assert subprocess.run(args, capture_output=True, timeout=20).returncode != 0
    finally:
        est.tls.set_client_trust(anchors)
    assert curl(pki, est.url("cacerts"), *bootstrap).status == 200


# --- timeouts, on a server of its own (connection limits: test_connection_abuse.py) ------------------


@pytest.fixture(scope="module")
def strict(pki: Pki, loop_thread: LoopThread) -> Iterator[RunningServer]:
    timeouts = EstTimeouts(tls_handshake=0.5, idle=0.5, body=0.5)
    running = start_server(pki, loop_thread, timeouts=timeouts)
    yield running
    loop_thread.run(running.server.stop())


def test_idle_connection_is_closed(pki: Pki, strict: RunningServer) -> None:
    with tls_connection(pki, strict.port) as connection:
        assert closed_by_server(connection)


def test_headers_that_never_complete_are_cut(pki: Pki, strict: RunningServer) -> None:
    with tls_connection(pki, strict.port) as connection:
        connection.sendall(b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        assert closed_by_server(connection)


def test_stalled_tls_handshake_is_cut(strict: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", strict.port), timeout=5) as connection:
        assert closed_by_server(connection)


def test_slow_body_gets_408(pki: Pki, strict: RunningServer) -> None:
    credentials = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    head = (
        "POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Basic {credentials}\r\nContent-Type: application/pkcs10\r\n"
        "Content-Length: 1000\r\n\r\n"
    )
    with tls_connection(pki, strict.port) as connection:
        connection.sendall(head.encode() + b"MIIB")
        connection.settimeout(5)
        assert connection.recv(4096).startswith(b"HTTP/1.1 408")
