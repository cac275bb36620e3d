"""The EST server's log under hostile requests: no part of a password, no line a client wrote.

Each request is sent as raw bytes over TLS, so that it can be as malformed as an attacker makes it:
credentials without a scheme, a control byte in the Authorization header (which aiohttp's parser
refuses, quoting the line), CR/LF, ESC and Unicode line separators in the path, the user agent and the
certificate subject. Here the records of the in-process server (caplog) are read; the stderr of a
``keyward est-server`` process is read by tests/integration/estserver/test_logs.py.
"""

from __future__ import annotations

import base64
import logging
import re
import socket
import ssl
from pathlib import Path

import pytest

from ..helpers import PASSWORD, USER, Pki, RunningServer, openssl_csr_in

#: Characters that end a line in a log file or in a viewer, or start a terminal escape sequence.
LINE_BREAKERS = ("\r", "\n", "\x0b", "\x0c", "\x1b", "\x85", "\u2028", "\u2029")
TIMESTAMPED = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


def credential(password: str) -> bytes:
    return base64.b64encode(f"{USER}:{password}".encode())


def hostile_requests(password: str, csr_body: bytes) -> dict[str, bytes]:
    """Raw requests, each ending the connection (``Connection: close``)."""
    basic = credential(password)

    def request(head: bytes, body: bytes = b"") -> bytes:
        length = f"Content-Length: {len(body)}\r\n".encode() if body else b""
        return head + b"Host: localhost\r\nConnection: close\r\n" + length + b"\r\n" + body

    enroll = b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nContent-Type: application/pkcs10\r\n"
    return {
        "credentials-without-a-scheme": request(enroll + f"Authorization: {USER}:{password}\r\n".encode()),
        "password-as-the-whole-header": request(enroll + f"Authorization: {password}\r\n".encode()),
        "bearer-token": request(enroll + f"Authorization: Bearer {password}\r\n".encode()),
        "basic-not-base64": request(enroll + f"Authorization: Basic {password}\r\n".encode()),
        "control-byte-after-the-credential": request(enroll + b"Authorization: Basic " + basic + b"\x01\r\n"),
        "control-byte-in-the-credential": request(
            enroll + b"Authorization: Basic " + basic[:6] + b"\x7f" + basic[6:] + b"\r\n"
        ),
        "cr-lf-in-the-path": request(
            b"GET /.well-known/est/x%0D%0A2030-01-01 00:00:00,000 INFO forged: FORGED/cacerts HTTP/1.1\r\n"
        ),
        "cr-esc-and-separators-in-the-path": request(
            b"GET /.well-known/est/x%0D2030-01-01%2000:00:00,000%20FORGED%1B[2J%E2%80%A8%C2%85/cacerts"
            b" HTTP/1.1\r\n"
        ),
        "line-separators-in-the-user-agent": request(
            b"GET /.well-known/est/nolabel/cacerts HTTP/1.1\r\nUser-Agent: x\x85FORGED \xe2\x80\xa8FORGED\r\n"
        ),
        "cr-lf-in-the-subject": request(
            enroll + b"Authorization: Basic " + basic + b"\r\n", csr_body
        ),
    }  # fmt: skip


def exchange(context: ssl.SSLContext, port: int, raw: bytes) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as plain,
        context.wrap_socket(plain, server_hostname="localhost") as connection,
    ):
        connection.sendall(raw)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def hostile_csr(directory: Path) -> bytes:
    """A CSR (base64 body) whose subject holds CR/LF and what would look like a log line after them."""
    subject = "/CN=device\r\n2030-01-01 00:00:00,000 INFO forged: FORGED"
    body, _ = openssl_csr_in(directory, "hostile", subject)
    return body.read_bytes()


def leaked_parts(text: str, password: str) -> list[str]:
    """Pieces of the password (5 characters or more) and of its base64 credential (8 or more) in ``text``."""
    secret_pieces = {password[i : i + 5] for i in range(len(password) - 4)}
    b64 = credential(password).decode()
    secret_pieces |= {b64[i : i + 8] for i in range(len(b64) - 7)}
    return sorted(piece for piece in secret_pieces if piece in text)


@pytest.fixture
def tls_root_context(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.files["tls-root"]))


def test_hostile_requests_leave_no_password_and_no_forged_line_in_the_log(
    pki: Pki, est: RunningServer, tls_root_context: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    requests = hostile_requests(PASSWORD, hostile_csr(pki.directory))
    answers = {name: exchange(tls_root_context, est.port, raw) for name, raw in requests.items()}
    assert answers["cr-lf-in-the-subject"].startswith(b"HTTP/1.1 200"), (
        "the subject is the client's to choose"
    )
    assert answers["credentials-without-a-scheme"].startswith(b"HTTP/1.1 401")
    assert answers["control-byte-after-the-credential"].startswith(b"HTTP/1.0 400")
    records = [r for r in caplog.records if r.name.startswith(("keyward", "aiohttp", "asyncio"))]
    messages = [r.getMessage() for r in records]
    assert any("malformed HTTP request from 127.0.0.1" in m for m in messages)
    assert any("EST enrollment" in m and "FORGED" in m for m in messages), "the audit line is written"
    assert sum("EST refused" in m for m in messages) >= 6
    for record, message in zip(records, messages, strict=True):
        assert record.exc_info is None, f"a traceback for a client's request: {message}"
        assert not leaked_parts(message, PASSWORD), message
        assert not [c for c in LINE_BREAKERS if c in message], message
    assert "Passw0rd" not in caplog.text and "s3cret" not in caplog.text
