"""Random requests never get a 5xx and never stop the server."""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import string

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.pki import ec_key, name

from ..helpers import PASSWORD, USER, Pki, RunningServer, curl

VALID_CSR = base64.b64encode(
    x509.CertificateSigningRequestBuilder()
    .subject_name(name("fuzzed"))
    .sign(ec_key(), hashes.SHA256())
    .public_bytes(serialization.Encoding.DER)
)
SEGMENTS = [
    "alpha",
    "beta",
    "sub",
    "cacerts",
    "simpleenroll",
    "simplereenroll",
    "csrattrs",
    "serverkeygen",
    "fullcmc",
    "",
    "..",
    ".",
    "%2F",
    "%00",
    "x" * 300,
]
TOKEN = string.ascii_letters + string.digits + "-_.~!$&'()*+,;=:@%"
HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


@st.composite
def paths(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.one_of(st.sampled_from(SEGMENTS), st.text(TOKEN, max_size=12)), max_size=5))
    prefix = draw(st.sampled_from(["/.well-known/est/", "/.well-known/est", "/", "/.well-known/"]))
    query = draw(st.sampled_from(["", "?a=b", "?" + "q" * 50]))
    return prefix + "/".join(segments) + query


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["raw", "base64", "csr", "mutated-csr", "empty"]))
    if kind == "raw":
        return draw(st.binary(max_size=400))
    if kind == "base64":
        return base64.b64encode(draw(st.binary(max_size=300)))
    if kind == "csr":
        return VALID_CSR
    if kind == "mutated-csr":
        mutated = bytearray(VALID_CSR)
        mutated[draw(st.integers(0, len(mutated) - 1))] = draw(st.sampled_from(b"AQgz+/=\n*"))
        return bytes(mutated)
    return b""


AUTHORIZATION = st.one_of(
    st.none(),
    st.just("Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()),
    st.binary(max_size=40).map(lambda b: "Basic " + base64.b64encode(b).decode()),
    HEADER_TEXT,
)
CONTENT_TYPE = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/pkcs10",
            "application/pkcs10; charset=utf-8",
            "APPLICATION/PKCS10",
            "multipart/mixed; boundary=x",
            "text/plain",
        ]
    ),
    HEADER_TEXT,
)


def client(pki: Pki, est: RunningServer) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=str(pki.files["tls-root"]))
    return http.client.HTTPSConnection("127.0.0.1", est.port, context=context, timeout=10)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "BREW"]),
    path=paths(),
    content_type=CONTENT_TYPE,
    authorization=AUTHORIZATION,
    body=bodies(),
    extra=st.dictionaries(
        st.sampled_from(["Content-Transfer-Encoding", "Accept", "X-Any", "Expect"]), HEADER_TEXT, max_size=2
    ),
)
def test_random_requests_get_no_server_error(
    pki: Pki,
    est: RunningServer,
    method: str,
    path: str,
    content_type: str | None,
    authorization: str | None,
    body: bytes,
    extra: dict[str, str],
) -> None:
    headers = dict(extra)
    if content_type is not None:
        headers["Content-Type"] = content_type
    if authorization is not None:
        headers["Authorization"] = authorization
    connection = client(pki, est)
    try:
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        response.read()
        assert response.status < 500, (method, path, response.status)
    finally:
        connection.close()


@settings(max_examples=60, deadline=None)
@given(
    raw=st.one_of(
        st.binary(min_size=1, max_size=300),
        st.binary(max_size=200).map(lambda b: b"POST /.well-known/est/simpleenroll HTTP/1.1\r\n" + b),
    )
)
def test_malformed_http_gets_no_server_error(pki: Pki, est: RunningServer, raw: bytes) -> None:
    context = ssl.create_default_context(cafile=str(pki.files["tls-root"]))
    with (
        socket.create_connection(("127.0.0.1", est.port), timeout=10) as plain,
        context.wrap_socket(plain, server_hostname="localhost") as connection,
    ):
        connection.sendall(raw + b"\r\n\r\n")
        connection.settimeout(2.0)
        try:
            answer = connection.recv(4096)
        except (TimeoutError, ssl.SSLError, ConnectionError):
            answer = b""
    if answer.startswith(b"HTTP/"):
        assert not answer.split(b" ", 2)[1].startswith(b"5"), answer[:100]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    operation=st.sampled_from(["simpleenroll", "serverkeygen", "beta/sub/simpleenroll", "simplereenroll"]),
    body=bodies(),
)
def test_random_bodies_for_authenticated_enrollment_get_no_server_error(
    pki: Pki, est: RunningServer, operation: str, body: bytes
) -> None:
    headers = {
        "Content-Type": "application/pkcs10",
        "Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
    }
    connection = client(pki, est)
    try:
        connection.request("POST", f"/.well-known/est/{operation}", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        assert response.status < 500, (operation, response.status)
    finally:
        connection.close()


@pytest.mark.parametrize("path", ["cacerts", "beta/sub/cacerts"])
def test_server_still_serves_after_the_fuzzing(pki: Pki, est: RunningServer, path: str) -> None:
    assert curl(pki, est.url(path)).status == 200
