"""RFC 7030 end to end, with curl as the EST client and openssl making requests and checking answers."""

from __future__ import annotations

import email.parser
import email.policy
import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from keyward.est.wire import decode_certs_only, decode_serverkeygen
from tests.support.tools import run

from ..helpers import PASSWORD, USER, Pki, RunningServer, curl, openssl_csr

BASIC = ("-u", f"{USER}:{PASSWORD}")
PKCS10 = ("-H", "Content-Type: application/pkcs10")


def pipeline(command: str) -> bytes:
    return run(["bash", "-c", f"set -euo pipefail; {command}"])


def enroll_device(pki: Pki, est: RunningServer, stem: str, subject: str, sans: str) -> tuple[Path, Path]:
    """Enroll through curl with HTTP Basic; returns (certificate PEM file, key file)."""
    csr, key = openssl_csr(pki, stem, subject, sans)
    response = curl(pki, est.url("simpleenroll"), *BASIC, *PKCS10, data=csr)
    assert response.status == 200, response.text
    certificate = pki.write(
        f"{stem}.pem", decode_certs_only(response.body)[0].public_bytes(serialization.Encoding.PEM)
    )
    return certificate, key


def test_cacerts_through_curl_base64_and_openssl(pki: Pki, est: RunningServer) -> None:
    cacerts = f"curl -sS --cacert {pki.files['tls-root']} {est.url('cacerts')}"
    printed = pipeline(f"{cacerts} | base64 -d | openssl pkcs7 -inform DER -print_certs").decode()
    assert "subject=CN = Alpha EST CA" in printed

    labelled = pipeline(
        f"{cacerts.replace('/cacerts', '/beta/sub/cacerts')} | base64 -d | "
        "openssl pkcs7 -inform DER -print_certs"
    ).decode()
    assert "subject=CN = Beta EST CA" in labelled


def test_simpleenroll_with_basic_auth_gives_a_certificate_openssl_verifies(
    pki: Pki, est: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    csr, _key = openssl_csr(pki, "device1", "/CN=device1", "DNS:device1.example,IP:10.0.0.7")
    leaf = pki.directory / "device1-pipeline.pem"
    pipeline(
        f"curl -sS --fail --cacert {pki.files['tls-root']} -u {USER}:{PASSWORD} "
        f"-H 'Content-Type: application/pkcs10' --data-binary @{csr} {est.url('simpleenroll')} "
        f"| base64 -d | openssl pkcs7 -inform DER -print_certs -out {leaf}"
    )
    assert run(["openssl", "verify", "-CAfile", pki.files["alpha"], leaf]).strip().endswith(b"OK")
    shown = run(["openssl", "x509", "-in", leaf, "-noout", "-subject", "-ext", "subjectAltName"]).decode()
    assert "subject=CN = device1" in shown
    assert "DNS:device1.example, IP Address:10.0.0.7" in shown

    record = next(r for r in est.audit if r.subject == "CN=device1")
    assert (record.label, record.operation, str(record.client)) == ("alpha", "simpleenroll", "basic:est")
    assert record.sans == ("DNS:device1.example", "IP Address:10.0.0.7")
    logged = [m for m in caplog.messages if "EST enrollment" in m and "device1" in m]
    assert logged and '"client": "basic:est"' in logged[0] and '"operation": "simpleenroll"' in logged[0]
    assert all(PASSWORD not in message for message in caplog.messages)


def test_label_with_a_slash_selects_its_ca(pki: Pki, est: RunningServer) -> None:
    csr, _ = openssl_csr(pki, "beta-device", "/CN=beta-device")
    response = curl(pki, est.url("beta/sub/simpleenroll"), *BASIC, *PKCS10, data=csr)
    assert response.status == 200, response.text
    assert response.headers["content-type"].startswith("application/pkcs7-mime")
    leaf = pki.write(
        "beta-device.pem", decode_certs_only(response.body)[0].public_bytes(serialization.Encoding.PEM)
    )
    assert run(["openssl", "verify", "-CAfile", pki.files["beta"], leaf]).strip().endswith(b"OK")
    assert est.audit[-1].label == "beta/sub"


def test_simpleenroll_with_a_trusted_tls_client_certificate(pki: Pki, est: RunningServer) -> None:
    csr, _ = openssl_csr(pki, "by-cert", "/CN=by-cert")
    client_cert = ("--cert", str(pki.files["bootstrap-cert"]), "--key", str(pki.files["bootstrap-key"]))
    response = curl(pki, est.url("simpleenroll"), *client_cert, *PKCS10, data=csr)
    assert response.status == 200, response.text
    record = next(r for r in est.audit if r.subject == "CN=by-cert")
    assert str(record.client).startswith("cert:CN=bootstrap-device serial 0x")


def test_simplereenroll_with_the_certificate_being_renewed_rekeys(pki: Pki, est: RunningServer) -> None:
    old_cert, old_key = enroll_device(pki, est, "renew-me", "/CN=renew-me", "DNS:renew-me.example")
    csr, _new_key = openssl_csr(pki, "renew-me-next", "/CN=renew-me", "DNS:renew-me.example")
    response = curl(
        pki, est.url("simplereenroll"), "--cert", str(old_cert), "--key", str(old_key), *PKCS10, data=csr
    )
    assert response.status == 200, response.text
    renewed = decode_certs_only(response.body)[0]
    old = x509.load_pem_x509_certificate(old_cert.read_bytes())
    assert renewed.subject == old.subject
    assert renewed.serial_number != old.serial_number
    assert renewed.public_key() != old.public_key()
    record = est.audit[-1]
    assert record.operation == "simplereenroll"
    assert str(record.client) == f"cert:CN=renew-me serial {old.serial_number:#x}"


@pytest.mark.parametrize(
    ("case", "expected", "explanation"),
    [
        ("other-subject", 403, "must keep the Subject and SubjectAltName"),
        ("other-san", 403, "must keep the Subject and SubjectAltName"),
        ("other-ca", 403, "not issued by this CA"),
        ("bootstrap-cert", 403, "not issued by this CA"),
        ("basic-only", 403, "HTTP credentials are not enough"),
        ("nothing", 401, "needs the certificate being renewed"),
    ],
)
def test_simplereenroll_refusals(
    pki: Pki, est: RunningServer, case: str, expected: int, explanation: str
) -> None:
    cert, key = enroll_device(pki, est, f"re-{case}", f"/CN=re-{case}", f"DNS:re-{case}.example")
    subject, sans, path = f"/CN=re-{case}", f"DNS:re-{case}.example", "simplereenroll"
    credentials: tuple[str, ...] = ("--cert", str(cert), "--key", str(key))
    if case == "other-subject":
        subject = "/CN=someone-else"
    elif case == "other-san":
        sans = "DNS:someone-else.example"
    elif case == "other-ca":
        path = "beta/sub/simplereenroll"
    elif case == "bootstrap-cert":
        credentials = ("--cert", str(pki.files["bootstrap-cert"]), "--key", str(pki.files["bootstrap-key"]))
    elif case == "basic-only":
        credentials = BASIC
    else:
        credentials = ()
    csr, _ = openssl_csr(pki, f"re-{case}-next", subject, sans)
    response = curl(pki, est.url(path), *credentials, *PKCS10, data=csr)
    assert response.status == expected, response.text
    if expected == 401:
        assert response.headers["www-authenticate"] == 'Basic realm="estrealm"'
    assert explanation in response.text


def test_serverkeygen_returns_a_key_and_its_certificate(pki: Pki, est: RunningServer) -> None:
    csr, _ = openssl_csr(pki, "keygen", "/CN=keygen-device", "DNS:keygen.example")
    response = curl(pki, est.url("serverkeygen"), *BASIC, *PKCS10, data=csr)
    assert response.status == 200, response.text
    content_type = response.headers["content-type"]
    assert content_type.startswith("multipart/mixed")

    # Python's email parser as an independent reader of the multipart body.
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + response.body
    )
    parts = {part.get_content_type(): part for part in message.iter_parts()}
    assert set(parts) == {"application/pkcs8", "application/pkcs7-mime"}
    assert parts["application/pkcs7-mime"].get_param("smime-type") == "certs-only"
    key = serialization.load_der_private_key(parts["application/pkcs8"].get_payload(decode=True), None)
    certificate = decode_certs_only(parts["application/pkcs7-mime"].get_payload())[0]
    assert certificate.public_key() == key.public_key()
    assert certificate.subject.rfc4514_string() == "CN=keygen-device"

    decoded = decode_serverkeygen(content_type, response.body)
    assert decoded.certificates[0] == certificate
    assert est.audit[-1].operation == "serverkeygen"


def test_csrattrs_are_served_as_der_openssl_can_read(pki: Pki, est: RunningServer) -> None:
    parsed = pipeline(
        f"curl -sS --fail --cacert {pki.files['tls-root']} {est.url('csrattrs')} "
        "| base64 -d | openssl asn1parse -inform DER"
    ).decode()
    for name in ("challengePassword", "id-ecPublicKey", "secp384r1", "ecdsa-with-SHA384"):
        assert name in parsed
    assert curl(pki, est.url("beta/sub/csrattrs")).status == 204
