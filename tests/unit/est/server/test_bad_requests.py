"""Every way a client can get a request wrong ends in the 4xx the contract names, with an explanation."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from ..helpers import PASSWORD, USER, Pki, RunningServer, curl, openssl_csr

BASIC = ("-u", f"{USER}:{PASSWORD}")
PKCS10 = ("-H", "Content-Type: application/pkcs10")


@pytest.fixture(scope="module")
def good_csr(pki: Pki) -> Path:
    return openssl_csr(pki, "tampered", "/CN=tampered1")[0]


def body_file(pki: Pki, name: str, content: bytes) -> Path:
    return pki.write(f"bad-{name}.body", content)


def tampered_csr(pki: Pki, good_csr: Path) -> Path:
    """The CSR with its subject changed after signing: the signature no longer verifies."""
    der = base64.b64decode(good_csr.read_bytes())
    assert b"tampered1" in der
    return body_file(pki, "tampered", base64.b64encode(der.replace(b"tampered1", b"tampered2")))


def test_wrong_content_type_is_415(pki: Pki, est: RunningServer, good_csr: Path) -> None:
    text_plain = curl(pki, est.url("simpleenroll"), *BASIC, "-H", "Content-Type: text/plain", data=good_csr)
    assert text_plain.status == 415
    assert "application/pkcs10" in text_plain.text
    # curl's default for --data-binary is application/x-www-form-urlencoded
    assert curl(pki, est.url("simpleenroll"), *BASIC, data=good_csr).status == 415


@pytest.mark.parametrize(
    ("name", "content", "explanation"),
    [
        ("not-base64", b"!!! this is not base64 !!!", "not valid base64"),
        ("not-der", base64.b64encode(b"hello, this is no ASN.1"), "not a usable DER PKCS#10 request"),
        ("pem", b"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n", "PEM"),
        ("empty", b"", "empty"),
    ],
)
def test_undecodable_bodies_are_400(
    pki: Pki, est: RunningServer, name: str, content: bytes, explanation: str
) -> None:
    response = curl(pki, est.url("simpleenroll"), *BASIC, *PKCS10, data=body_file(pki, name, content))
    assert response.status == 400
    assert explanation in response.text


def test_csr_with_a_bad_signature_is_400(pki: Pki, est: RunningServer, good_csr: Path) -> None:
    response = curl(pki, est.url("simpleenroll"), *BASIC, *PKCS10, data=tampered_csr(pki, good_csr))
    assert response.status == 400
    assert "signature does not verify" in response.text


@pytest.mark.parametrize(
    "credentials",
    [
        (),
        ("-u", f"{USER}:wrong-password"),
        ("-u", f"intruder:{PASSWORD}"),
        ("-H", "Authorization: Bearer abc"),
    ],
    ids=["none", "wrong-password", "wrong-user", "not-basic"],
)
def test_missing_or_wrong_credentials_are_401_with_a_basic_challenge(
    pki: Pki, est: RunningServer, good_csr: Path, credentials: tuple[str, ...]
) -> None:
    for operation in ("simpleenroll", "serverkeygen"):
        response = curl(pki, est.url(operation), *credentials, *PKCS10, data=good_csr)
        assert response.status == 401
        assert response.headers["www-authenticate"] == 'Basic realm="estrealm"'


def test_body_above_the_limit_is_413(pki: Pki, est: RunningServer) -> None:
    big = body_file(pki, "big", base64.b64encode(b"\0" * 20_000))
    assert curl(pki, est.url("simpleenroll"), *BASIC, *PKCS10, data=big).status == 413
    chunked = curl(
        pki, est.url("simpleenroll"), *BASIC, *PKCS10, "-H", "Transfer-Encoding: chunked", data=big
    )
    assert chunked.status == 413


@pytest.mark.parametrize(
    ("path", "method", "expected"),
    [
        ("unknown-label/cacerts", "GET", 404),
        ("unknown/deeper/label/simpleenroll", "POST", 404),
        ("alpha/nonsense", "GET", 404),
        ("beta/sub/", "GET", 404),
        ("simpleenroll", "GET", 405),
        ("beta/sub/cacerts", "POST", 405),
        ("csrattrs", "DELETE", 405),
        ("fullcmc", "POST", 404),
        ("beta/sub/fullcmc", "GET", 404),
    ],
)
def test_routing_errors(pki: Pki, est: RunningServer, path: str, method: str, expected: int) -> None:
    response = curl(pki, est.url(path), *BASIC, "-X", method)
    assert response.status == expected
    assert response.text.strip()
    if expected == 405:
        assert response.headers["allow"] in {"POST", "GET, HEAD"}


def test_policy_refusal_is_400_with_the_cas_message(pki: Pki, est: RunningServer) -> None:
    csr, _ = openssl_csr(pki, "forbidden", "/CN=forbidden")
    response = curl(pki, est.url("simpleenroll"), *BASIC, *PKCS10, data=csr)
    assert response.status == 400
    assert "CN=forbidden is not allowed by this CA" in response.text


def test_pending_enrollment_is_202_with_retry_after(pki: Pki, est: RunningServer) -> None:
    csr, _ = openssl_csr(pki, "pending", "/CN=pending")
    response = curl(pki, est.url("simpleenroll"), *BASIC, *PKCS10, data=csr)
    assert response.status == 202
    assert response.headers["retry-after"] == "42"
