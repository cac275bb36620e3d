"""`keyward est-server`: the server's own TLS identity kept apart from what devices enroll for.

The server's TLS certificate comes from a TLS CA of its own (``tls-ca.pem``) or from the operator's
files (``--tls-cert``/``--tls-key``); ``ca.pem`` is only the enrollment CA. Whoever holds the shared
password gets no certificate clients would take for the server, and no server-auth certificate for the
server's names at all. curl, openssl s_server and openssl verify are the judges.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keyward.estserver.state import CA_COMMON_NAME, CA_LABEL
from keyward.issuers.tcs.ca import TcsIssuerSpec, ensure_ca
from keyward.issuers.tcs.est_ca import issue_tls_server_certificate
from keyward.keystore import KeySpec, TokenKeyStore, create_softhsm_store
from keyward.pki.profile import IssuerPolicy
from tests.support.estserver import StandaloneServer
from tests.support.pki import Issuer, ec_key, key_pem, name, pem
from tests.support.ports import free_port
from tests.support.tools import run
from tests.support.waiting import wait_until
from tests.unit.est.helpers import openssl_csr_in

SERVER_AUTH = ("extendedKeyUsage=serverAuth",)


@pytest.fixture(scope="module")
def est(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneServer]:
    state = tmp_path_factory.mktemp("est-identity") / "state"
    server = StandaloneServer(state, ("--hostname", "est.example.test", "--workers", "1")).start()
    yield server
    assert server.stop() == 0, server.log()[-3000:]


def enroll(
    est: StandaloneServer, work: Path, stem: str, subject: str, sans: str | None, *extensions: str
) -> tuple[int, str, Path]:
    """simpleenroll with the shared password: (status, body text, the certificate's PEM file)."""
    csr, _ = openssl_csr_in(work, stem, subject, sans, extensions=extensions)
    response = est.curl("simpleenroll", "-u", f"est:{est.password}", data=csr)
    leaf = work / f"{stem}.pem"
    if response.status == 200:
        (certificate,) = pkcs7.load_der_pkcs7_certificates(base64.b64decode(b"".join(response.body.split())))
        leaf.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return response.status, response.text, leaf


def pkcs7_of(multipart: bytes) -> bytes:
    """The PEM PKCS#7 part of a serverkeygen answer (its certificate), for openssl."""
    part = multipart.split(b"application/pkcs7-mime", 1)[1].split(b"\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0]
    der = base64.b64decode(b"".join(part.split()))
    return b"-----BEGIN PKCS7-----\n" + base64.encodebytes(der) + b"-----END PKCS7-----\n"


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def curl_fails_to_trust(url: str, anchor: Path) -> str:
    """curl's complaint when ``anchor`` does not vouch for the server at ``url``."""
    done = subprocess.run(
        ["curl", "-sS", "--cacert", str(anchor), url], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 60, (done.returncode, done.stderr)  # CURLE_PEER_FAILED_VERIFICATION
    return done.stderr


@pytest.mark.parametrize(
    "sans", ["DNS:localhost", "IP:127.0.0.1", "DNS:est.example.test", "DNS:device.example,IP:127.0.0.1"]
)
def test_the_shared_password_buys_no_server_certificate_for_the_servers_names(
    est: StandaloneServer, tmp_path: Path, sans: str
) -> None:
    status, text, _ = enroll(est, tmp_path, "impostor", "/CN=impostor", sans, *SERVER_AUTH)
    assert status == 400
    assert text.startswith("policy est-server-names: "), text
    assert "is a name of the EST server itself" in text
    csr, _ = openssl_csr_in(tmp_path, "keygen", "/CN=localhost", sans, extensions=SERVER_AUTH)
    keygen = est.curl("serverkeygen", "-u", f"est:{est.password}", data=csr)
    assert keygen.status == 200, "serverkeygen hands out client certificates only, whatever is asked"
    printed = run(["openssl", "pkcs7", "-print_certs"], input=pkcs7_of(keygen.body))
    (certificate,) = x509.load_pem_x509_certificates(printed)
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_a_device_certificate_is_never_trusted_as_the_server(est: StandaloneServer, tmp_path: Path) -> None:
    # What the password still buys: a client certificate for the server's name, a server one for others.
    status, _, client = enroll(est, tmp_path, "client", "/CN=localhost", "DNS:localhost,IP:127.0.0.1")
    assert status == 200
    status, _, device = enroll(est, tmp_path, "device", "/CN=device", "DNS:device.example", *SERVER_AUTH)
    assert status == 200
    for leaf in (client, device):
        assert run(["openssl", "verify", "-CAfile", est.ca_pem, leaf]).strip().endswith(b"OK")
        refused = subprocess.run(
            ["openssl", "verify", "-CAfile", est.tls_ca_pem, leaf], capture_output=True, check=False
        )
        assert refused.returncode != 0, "the TLS CA clients trust did not issue device certificates"

    # An impostor serving the client certificate (its key in hand) at 127.0.0.1 is refused by clients.
    port = free_port()
    command = ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", client]
    command += ["-key", tmp_path / "client.key", "-www"]
    impostor = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: listening(port), 15, "openssl s_server to listen")
        complaint = curl_fails_to_trust(f"https://127.0.0.1:{port}/", est.tls_ca_pem)
        assert "certificate" in complaint
    finally:
        impostor.kill()
        impostor.wait()
    # And the enrollment CA devices trust does not vouch for the real server either.
    curl_fails_to_trust(est.url("cacerts"), est.ca_pem)


def old_state_dir(state: Path) -> tuple[bytes, str]:
    """A state directory as keyward wrote it before the TLS CA: one CA in the token, which also issued
    the server's TLS certificate. Returns (ca.pem, password)."""
    state.mkdir(mode=0o700)
    store = TokenKeyStore.open(create_softhsm_store(state))
    try:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
        spec = TcsIssuerSpec(name=CA_COMMON_NAME, key=KeySpec("ECDSA", 256), subject=subject)
        ca = ensure_ca(store, CA_LABEL, spec)
        tls = issue_tls_server_certificate(ca, ["localhost", "127.0.0.1"], IssuerPolicy())
    finally:
        store.close()
    ca_pem = ca.certificate.public_bytes(serialization.Encoding.PEM)
    for filename, content, mode in [
        ("ca.pem", ca_pem, 0o644),
        ("est-password", b"an-old-password\n", 0o600),
        ("tls.crt", tls.chain_pem, 0o644),
        ("tls.key", tls.key_pem, 0o600),
    ]:
        (state / filename).write_bytes(content)
        (state / filename).chmod(mode)
    return ca_pem, "an-old-password"


def test_an_old_state_dir_gets_a_tls_ca_on_its_next_start_and_says_so(tmp_path: Path) -> None:
    state = tmp_path / "old-state"
    ca_pem, password = old_state_dir(state)
    old_tls = (state / "tls.crt").read_bytes()
    server = StandaloneServer(state, ("--workers", "0")).start()
    try:
        assert "this state directory had no TLS CA: made one" in server.log()
        assert "verify this server with tls-ca.pem from now on, not ca.pem" in server.log()
        assert (state / "ca.pem").read_bytes() == ca_pem, "the enrollment CA devices trust is kept"
        assert server.password == password
        assert (state / "tls.crt").read_bytes() != old_tls
        assert server.curl("cacerts").status == 200, "clients trusting tls-ca.pem reach the server"
        curl_fails_to_trust(server.url("cacerts"), state / "ca.pem")
        status, _, leaf = enroll(server, tmp_path, "after-upgrade", "/CN=after-upgrade", None)
        assert status == 200
        assert run(["openssl", "verify", "-CAfile", state / "ca.pem", leaf]).strip().endswith(b"OK")
        assert "Passw" not in server.log() and password not in server.log()
    finally:
        assert server.stop() == 0
    again = StandaloneServer(state, ("--workers", "0")).start()
    try:
        assert "had no TLS CA" not in again.log().split("listening")[-1], "said once, on the upgrade"
        assert again.log().count("this state directory had no TLS CA") == 1
    finally:
        assert again.stop() == 0


def supplied_certificate(work: Path, *, names: list[x509.GeneralName]) -> tuple[Issuer, Path, Path]:
    root = Issuer.self_signed("Operator TLS Root")
    key = ec_key()
    leaf = root.issue(
        name("est.example.test"), key.public_key(), names, usages=(ExtendedKeyUsageOID.SERVER_AUTH,)
    )
    certificate, private_key = work / "server.crt", work / "server.key"
    certificate.write_bytes(pem(leaf))
    private_key.write_bytes(key_pem(key))
    return root, certificate, private_key


def test_an_operator_supplied_tls_certificate_is_served_and_its_names_are_reserved(tmp_path: Path) -> None:
    localhost = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    root, certificate, key = supplied_certificate(tmp_path, names=[localhost, x509.DNSName("est.corp.test")])
    (tmp_path / "root.pem").write_bytes(pem(root.certificate))
    state = tmp_path / "state"
    server = StandaloneServer(state, ("--tls-cert", str(certificate), "--tls-key", str(key))).start()
    try:
        assert "TLS: the --tls-cert certificate" in server.banner
        assert server.curl("cacerts", trust=tmp_path / "root.pem").status == 200
        assert not (state / "tls-ca.pem").exists() and not (state / "tls.crt").exists()
        csr, _ = openssl_csr_in(tmp_path, "corp", "/CN=x", "DNS:est.corp.test", extensions=SERVER_AUTH)
        refused = server.curl(
            "simpleenroll", "-u", f"est:{server.password}", data=csr, trust=tmp_path / "root.pem"
        )
        assert refused.status == 400 and refused.text.startswith("policy est-server-names: dNSName")
    finally:
        assert server.stop() == 0


def one_line_failure(state: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "keyward", "est-server", "--state-dir", str(state), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    return lines[0]


def test_unusable_tls_files_and_policy_files_are_one_line_each(tmp_path: Path) -> None:
    _, certificate, _ = supplied_certificate(tmp_path, names=[x509.DNSName("est.example.test")])
    other_key = tmp_path / "other.key"
    other_key.write_bytes(key_pem(ec_key()))
    state = tmp_path / "state"
    assert one_line_failure(state, "--tls-cert", str(certificate), "--tls-key", str(other_key)) == (
        f"keyward: error: --tls-key {other_key} is not the key of the certificate in {certificate}: "
        "give the key that belongs to the certificate"
    )
    assert "--tls-cert and --tls-key go together" in one_line_failure(state, "--tls-cert", str(certificate))
    policy = tmp_path / "policy.yaml"
    policy.write_text("allowedDnsNames: ['*.example']\n")
    assert one_line_failure(state, "--policy", str(policy)) == (
        f"keyward: error: --policy {policy}: policy.allowedDnsNames: not a policy field; the fields are "
        "allowedDNSNames, allowedIPRanges, allowedURIs, allowedEmailAddresses, allowedExtendedKeyUsages, "
        "forbiddenSubjectOrganizations: write it like the spec.policy of a TCS issuer (docs/POLICY.md)"
    )
    policy.write_text("allowedIPRanges: [10.0.0.1]\n")
    assert one_line_failure(state, "--policy", str(policy)) == (
        f'keyward: error: --policy {policy}: policy.allowedIPRanges: "10.0.0.1" is not a CIDR range such as '
        "10.0.0.0/8: write it like the spec.policy of a TCS issuer (docs/POLICY.md)"
    )


def test_the_policy_file_limits_what_the_enrollment_ca_signs(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "allowedDNSNames: ['*.devices.example']\n"
        "allowedExtendedKeyUsages: [client auth]\n"
        "forbiddenSubjectOrganizations: [system:masters, admins]\n"
    )
    server = StandaloneServer(tmp_path / "state", ("--policy", str(policy), "--workers", "0")).start()
    try:
        status, _, leaf = enroll(server, tmp_path, "ok", "/CN=sensor", "DNS:sensor-1.devices.example")
        assert status == 200
        for stem, subject, sans, extensions, rule in [
            ("elsewhere", "/CN=x", "DNS:printer.example", (), "allowed-dns-names"),
            ("server", "/CN=x", "DNS:a.devices.example", SERVER_AUTH, "allowed-extended-key-usages"),
            ("admins", "/O=admins/CN=x", "DNS:b.devices.example", (), "forbidden-subject-organizations"),
        ]:
            status, text, _ = enroll(server, tmp_path, stem, subject, sans, *extensions)
            assert status == 400 and text.startswith(f"policy {rule}: "), (stem, text)
        assert run(["openssl", "verify", "-CAfile", server.ca_pem, leaf]).strip().endswith(b"OK")
    finally:
        assert server.stop() == 0
