"""`keyward est-server`: the cluster-free EST server, driven by curl and openssl as independent clients."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from tests.support.estserver import StandaloneServer, private_key_objects
from tests.support.tools import run, shell
from tests.unit.est.helpers import openssl_csr_in

PRINT_CERTS = "openssl pkcs7 -inform DER -print_certs"
ASN1PARSE = "openssl asn1parse -inform DER"


@pytest.fixture(scope="module")
def est(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneServer]:
    """One server with the defaults (RSA-3072 CA) for the module."""
    server = StandaloneServer(tmp_path_factory.mktemp("est-standalone") / "state").start()
    yield server
    assert server.stop() == 0, f"est-server did not stop cleanly:\n{server.log()[-3000:]}"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path


def basic(est: StandaloneServer) -> tuple[str, str]:
    return ("-u", f"est:{est.password}")


def enroll(
    est: StandaloneServer, work: Path, stem: str, subject: str, sans: str | None = None
) -> tuple[Path, Path]:
    """simpleenroll through curl; returns (certificate PEM, key)."""
    csr, key = openssl_csr_in(work, stem, subject, sans)
    response = est.curl("simpleenroll", *basic(est), data=csr)
    assert response.status == 200, response.text
    (certificate,) = pkcs7.load_der_pkcs7_certificates(_b64(response.body))
    path = work / f"{stem}.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path, key


def _b64(body: bytes) -> bytes:
    return base64.b64decode(b"".join(body.split()))


def test_first_start_writes_the_state_users_need(est: StandaloneServer) -> None:
    state = est.state_dir
    assert (
        x509.load_pem_x509_certificate(est.ca_pem.read_bytes()).subject.rfc4514_string()
        == "CN=keyward EST CA"
    )
    for secret_file in ("est-password", "tls.key", "hsm.json"):
        assert stat.S_IMODE((state / secret_file).stat().st_mode) == 0o600, secret_file
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", est.password)
    tls = x509.load_pem_x509_certificates((state / "tls.crt").read_bytes())[0]
    sans = tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in sans] == ["localhost", "127.0.0.1"]
    tls_ca = x509.load_pem_x509_certificate(est.tls_ca_pem.read_bytes())
    assert tls_ca.subject.rfc4514_string() == "CN=keyward EST server TLS CA"
    assert run(["openssl", "verify", "-CAfile", est.tls_ca_pem, state / "tls.crt"]).strip().endswith(b"OK")
    refused = subprocess.run(
        ["openssl", "verify", "-CAfile", est.ca_pem, state / "tls.crt"], capture_output=True, check=False
    )
    assert refused.returncode != 0, "the enrollment CA does not vouch for the server"


def test_the_banner_commands_enroll_as_printed(est: StandaloneServer, work: Path) -> None:
    commands = [
        line.strip() for line in est.banner.splitlines() if line.strip().startswith(("openssl req", "curl"))
    ]
    assert len(commands) == 2, est.banner
    shell(f"cd {work} && " + " && ".join(commands))
    assert run(["openssl", "verify", "-CAfile", est.ca_pem, work / "device.pem"]).strip().endswith(b"OK")
    assert est.password not in est.banner, "the banner reads the password from its file"


def test_simpleenroll_with_basic_auth_and_openssl_verify(est: StandaloneServer, work: Path) -> None:
    csr, _ = openssl_csr_in(work, "device1", "/CN=device1", "DNS:device1.example,IP:10.0.0.7")
    leaf = work / "device1.pem"
    shell(
        f"curl -sS --fail --cacert {est.tls_ca_pem} -u est:$(cat {est.state_dir}/est-password) "
        f"-H 'Content-Type: application/pkcs10' --data-binary @{csr} {est.url('simpleenroll')} "
        f"| base64 -d | openssl pkcs7 -inform DER -print_certs -out {leaf}"
    )
    assert run(["openssl", "verify", "-CAfile", est.ca_pem, leaf]).strip().endswith(b"OK")
    shown = run(
        ["openssl", "x509", "-in", leaf, "-noout", "-subject", "-ext", "subjectAltName,extendedKeyUsage"]
    )
    assert "subject=CN = device1" in shown.decode()
    assert "DNS:device1.example, IP Address:10.0.0.7" in shown.decode()
    assert "TLS Web Client Authentication" in shown.decode()

    audit = [line for line in est.log().splitlines() if "EST enrollment" in line and "CN=device1" in line]
    record = json.loads(audit[-1].split("EST enrollment ", 1)[1])
    assert (record["operation"], record["client"]) == ("simpleenroll", "basic:est")
    assert record["sans"] == ["DNS:device1.example", "IP Address:10.0.0.7"]
    assert est.password not in est.log()


def test_wrong_or_missing_credentials_are_refused(est: StandaloneServer, work: Path) -> None:
    csr, _ = openssl_csr_in(work, "intruder", "/CN=intruder")
    wrong = est.curl("simpleenroll", "-u", "est:not-the-password", data=csr)
    assert wrong.status == 401 and "wrong user name or password" in wrong.text
    assert wrong.headers["www-authenticate"].startswith("Basic")
    assert est.curl("simpleenroll", data=csr).status == 401


def test_simplereenroll_with_the_certificate_being_renewed(est: StandaloneServer, work: Path) -> None:
    old_cert, old_key = enroll(est, work, "renew-me", "/CN=renew-me", "DNS:renew-me.example")
    csr, _ = openssl_csr_in(work, "renew-me-next", "/CN=renew-me", "DNS:renew-me.example")
    response = est.curl("simplereenroll", "--cert", old_cert, "--key", old_key, data=csr)
    assert response.status == 200, response.text
    (renewed,) = pkcs7.load_der_pkcs7_certificates(_b64(response.body))
    old = x509.load_pem_x509_certificate(old_cert.read_bytes())
    assert renewed.subject == old.subject and renewed.serial_number != old.serial_number
    assert renewed.public_key() != old.public_key(), "re-enrollment may rekey"

    other, _ = openssl_csr_in(work, "renew-other", "/CN=someone-else", "DNS:renew-me.example")
    refused = est.curl("simplereenroll", "--cert", old_cert, "--key", old_key, data=other)
    assert refused.status == 403 and "Subject and SubjectAltName" in refused.text
    assert est.curl("simplereenroll", *basic(est), data=csr).status == 403, "Basic alone cannot renew"


def test_serverkeygen_returns_a_key_the_token_never_held(est: StandaloneServer, work: Path) -> None:
    before = private_key_objects(est.token_objects())
    csr, _ = openssl_csr_in(work, "keygen", "/CN=keygen-device", "DNS:keygen.example")
    response = est.curl("serverkeygen", *basic(est), data=csr)
    assert response.status == 200, response.text

    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode() + response.body
    )
    parts = {part.get_content_type(): part for part in message.iter_parts()}
    assert set(parts) == {"application/pkcs8", "application/pkcs7-mime"}
    key = serialization.load_der_private_key(parts["application/pkcs8"].get_payload(decode=True), None)
    (certificate,) = pkcs7.load_der_pkcs7_certificates(
        _b64(parts["application/pkcs7-mime"].get_payload().encode())
    )
    assert certificate.public_key() == key.public_key()
    assert certificate.subject.rfc4514_string() == "CN=keygen-device"
    leaf = work / "keygen.pem"
    leaf.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    assert run(["openssl", "verify", "-CAfile", est.ca_pem, leaf]).strip().endswith(b"OK")
    assert private_key_objects(est.token_objects()) == before == 2, "only the CA keys are in the token"


def test_cacerts_and_csrattrs(est: StandaloneServer) -> None:
    trust = est.tls_ca_pem
    printed = shell(f"curl -sS --fail --cacert {trust} {est.url('cacerts')} | base64 -d | {PRINT_CERTS}")
    assert x509.load_pem_x509_certificates(printed) == [
        x509.load_pem_x509_certificate(est.ca_pem.read_bytes())
    ]
    labelled = shell(
        f"curl -sS --fail --cacert {est.tls_ca_pem} {est.url('ca/cacerts')} | base64 -d | {PRINT_CERTS}"
    )
    assert labelled == printed
    attributes = shell(
        f"curl -sS --fail --cacert {est.tls_ca_pem} {est.url('csrattrs')} | base64 -d | {ASN1PARSE}"
    ).decode()
    assert "rsaEncryption" in attributes, "a new CA is RSA-3072 by default"


def test_the_ca_key_in_the_token_is_sensitive_and_never_extractable(est: StandaloneServer) -> None:
    listing = est.token_objects()
    blocks = {
        re.search(r"label: +(\S+)", block)[1]: block  # type: ignore[index]
        for block in listing.split("Private Key Object")[1:]
    }
    assert set(blocks) == {"keyward-est/ca", "keyward-est/tls-ca"}
    assert blocks["keyward-est/ca"].startswith("; RSA")
    assert blocks["keyward-est/tls-ca"].startswith("; EC")
    for block in blocks.values():
        assert "Access:     sensitive, always sensitive, never extractable, local" in block
    assert "Public Key Object; RSA 3072 bits" in listing


def test_a_second_start_reuses_the_ca_the_password_and_the_tls_certificate(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    state = tmp_path_factory.mktemp("est-restart") / "state"
    work = state.parent
    first = StandaloneServer(state, ("--key-algorithm", "ECDSA-256")).start()
    try:
        ca_pem, password, tls = first.ca_pem.read_bytes(), first.password, (state / "tls.crt").read_bytes()
        cert, key = enroll(first, work, "survivor", "/CN=survivor")
        attributes = shell(
            f"curl -sS --fail --cacert {first.tls_ca_pem} {first.url('csrattrs')} | base64 -d | {ASN1PARSE}"
        )
        assert "id-ecPublicKey" in attributes.decode() and "prime256v1" in attributes.decode()
    finally:
        assert first.stop() == 0

    second = StandaloneServer(state, ("--workers", "0")).start()  # and in one process, this time
    try:
        assert (second.ca_pem.read_bytes(), second.password) == (ca_pem, password)
        assert (state / "tls.crt").read_bytes() == tls
        csr, _ = openssl_csr_in(work, "survivor-next", "/CN=survivor")
        renewed = second.curl("simplereenroll", "--cert", cert, "--key", key, data=csr)
        assert renewed.status == 200, "a certificate from the first run renews in the second"
        assert private_key_objects(second.token_objects()) == 2, "the CA's key and the TLS CA's"
    finally:
        assert second.stop() == 0

    other_algorithm = subprocess.run(
        [
            sys.executable,
            "-m",
            "keyward",
            "est-server",
            "--state-dir",
            str(state),
            "--key-algorithm",
            "RSA-2048",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert other_algorithm.returncode == 2
    assert other_algorithm.stderr.strip().splitlines() == [
        f"keyward: error: the CA in {state} has a ECDSA-256 key but --key-algorithm asks for RSA-2048: "
        "drop --key-algorithm (the CA key is never replaced), or use a new --state-dir"
    ]


def test_a_state_dir_whose_token_lost_the_ca_key_is_refused_not_given_a_new_ca(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    state = tmp_path_factory.mktemp("est-lost-token") / "state"
    first = StandaloneServer(state, ("--workers", "0")).start()
    ca_pem = first.ca_pem.read_bytes()
    assert first.stop() == 0
    shutil.rmtree(state / "tokens")  # the token's volume came back empty
    (state / "tokens").mkdir()
    refused = subprocess.run(
        [sys.executable, "-m", "keyward", "est-server", "--state-dir", str(state), "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert f"the CA in {state} cannot be used (CAKeyMissing: {state / 'ca.pem'} holds" in line
    assert (state / "ca.pem").read_bytes() == ca_pem, "the trust anchor devices have is left alone"


def test_a_port_in_use_is_one_clear_line(est: StandaloneServer) -> None:
    clash = subprocess.run(
        [
            sys.executable,
            "-m",
            "keyward",
            "est-server",
            "--state-dir",
            str(est.state_dir),
            "--listen",
            f"127.0.0.1:{est.port}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert clash.returncode == 2
    assert clash.stderr.strip().splitlines()[-1] == (
        f"keyward: error: cannot listen on 127.0.0.1:{est.port}: the address is already in use: "
        "stop whatever listens there, or pick another port with --listen HOST:PORT"
    )
    assert est.curl("cacerts").status == 200, "the running server is unaffected"


def test_an_unwritable_state_dir_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    failed = subprocess.run(
        [sys.executable, "-m", "keyward", "est-server", "--state-dir", str(blocker / "state")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert failed.returncode == 2
    (line,) = failed.stderr.strip().splitlines()
    assert line.startswith(f"keyward: error: cannot create the state directory {blocker / 'state'} (")
    assert line.endswith("choose a directory you can write with --state-dir")
