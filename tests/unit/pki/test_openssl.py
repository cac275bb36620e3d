"""openssl as an independent peer: it writes requests we must accept and checks what we issue."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from keyward.pki.csr import load_csr
from keyward.pki.errors import RequestError
from keyward.pki.issue import CertificateAuthority, IssuedCertificate, issue_certificate, self_signed_ca
from keyward.pki.profile import IssuerPolicy, RequestProfile
from keyward.pki.usages import EXTENDED_KEY_USAGES
from tests.support.pki import make_csr, name, pem
from tests.support.tools import openssl

SANS: list[x509.GeneralName] = [
    x509.DNSName("app.example"),
    x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
    x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/app"),
    x509.RFC822Name("ops@app.example"),
]
SERVER = RequestProfile(usages=("digital signature", "key encipherment", "server auth", "client auth"))


@pytest.fixture(params=["rsa", "ec", "ed25519"])
def live_ca(
    request: pytest.FixtureRequest,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
) -> CertificateAuthority:
    """A CA valid from the real current time, since openssl checks validity against the clock."""
    keys: dict[str, CertificateIssuerPrivateKeyTypes] = {"rsa": rsa_key, "ec": ec_key, "ed25519": ed_key}
    key = keys[request.param]
    return CertificateAuthority(self_signed_ca(key, name(f"{request.param} CA"), timedelta(days=30)), key)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def issue(
    csr: x509.CertificateSigningRequest,
    ca: CertificateAuthority,
    profile: RequestProfile = SERVER,
    policy: IssuerPolicy | None = None,
) -> IssuedCertificate:
    return issue_certificate(csr, profile, ca, policy or IssuerPolicy())


def test_openssl_verifies_issued_certificates(
    tmp_path: Path, live_ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    issued = issue(make_csr(leaf_key, "app.example", sans=SANS), live_ca)
    ca_pem = write(tmp_path / "ca.pem", issued.ca_pem())
    leaf_pem = write(tmp_path / "leaf.pem", issued.leaf_pem())
    result = openssl("verify", "-CAfile", ca_pem, "-purpose", "sslserver", leaf_pem, check=False)
    assert result.returncode == 0, result.stderr + result.stdout
    assert f"{leaf_pem}: OK" in result.stdout
    ca_self = openssl("verify", "-CAfile", ca_pem, ca_pem, check=False)
    assert ca_self.returncode == 0, ca_self.stderr + ca_self.stdout


def test_openssl_shows_sans_usages_and_constraints(
    tmp_path: Path, live_ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    issued = issue(make_csr(leaf_key, "app.example", sans=SANS), live_ca)
    text = openssl(
        "x509", "-text", "-noout", "-in", write(tmp_path / "leaf.pem", issued.leaf_pem()), check=False
    ).stdout
    for expected in (
        "DNS:app.example",
        "IP Address:10.0.0.1",
        "IP Address:2001:DB8:0:0:0:0:0:1",
        "URI:spiffe://cluster.local/ns/default/sa/app",
        "email:ops@app.example",
        "X509v3 Key Usage: critical\n                Digital Signature\n",
        "TLS Web Server Authentication, TLS Web Client Authentication",
        "X509v3 Basic Constraints: critical",
        "CA:FALSE",
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
        "Subject: CN = app.example",
    ):
        assert expected in text, expected
    assert "Key Encipherment" not in text  # an ECDSA leaf: dropped (docs/POLICY.md)


def test_openssl_names_every_extended_usage(
    tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    ca = CertificateAuthority(self_signed_ca(ec_key, name("CA"), timedelta(days=1)), ec_key)
    every = IssuerPolicy(allowed_extended_usages=frozenset(EXTENDED_KEY_USAGES))
    issued = issue(make_csr(leaf_key), ca, RequestProfile(usages=tuple(EXTENDED_KEY_USAGES)), every)
    text = openssl(
        "x509", "-text", "-noout", "-in", write(tmp_path / "leaf.pem", issued.leaf_pem()), check=False
    ).stdout
    for expected in (
        "Any Extended Key Usage",
        "TLS Web Server Authentication",
        "TLS Web Client Authentication",
        "Code Signing",
        "E-mail Protection",
        "IPSec End System",
        "IPSec Tunnel",
        "IPSec User",
        "Time Stamping",
        "OCSP Signing",
        "Microsoft Server Gated Crypto",
        "Netscape Server Gated Crypto",
    ):
        assert expected in text, expected


@pytest.mark.parametrize("form", ["PEM", "DER"])
def test_requests_written_by_openssl_are_issued(
    tmp_path: Path, form: str, live_ca: CertificateAuthority
) -> None:
    request = tmp_path / "req"
    made = openssl(
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        tmp_path / "key.pem",
        "-subj",
        "/O=Example/CN=openssl.example",
        "-addext",
        "subjectAltName=DNS:openssl.example,IP:192.0.2.7",
        "-outform",
        form,
        "-out",
        request,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    csr = load_csr(request.read_bytes())
    issued = issue(csr, live_ca)
    assert issued.certificate.subject.rfc4514_string() == "CN=openssl.example,O=Example"
    leaf = write(tmp_path / "leaf.pem", issued.leaf_pem())
    result = openssl("verify", "-CAfile", write(tmp_path / "ca.pem", issued.ca_pem()), leaf, check=False)
    assert result.returncode == 0, result.stderr + result.stdout
    matches = openssl("x509", "-noout", "-pubkey", "-in", leaf, check=False).stdout
    assert matches == openssl("pkey", "-pubout", "-in", tmp_path / "key.pem", check=False).stdout


def test_weak_openssl_request_is_refused(tmp_path: Path) -> None:
    request = tmp_path / "req.pem"
    made = openssl(
        "req",
        "-new",
        "-newkey",
        "rsa:1024",
        "-nodes",
        "-keyout",
        tmp_path / "key.pem",
        "-subj",
        "/CN=weak.example",
        "-out",
        request,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    with pytest.raises(RequestError, match="RSA-1024"):
        load_csr(request.read_bytes())


def test_openssl_verifies_a_chain_through_an_allowed_sub_ca(
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    leaf_key: ec.EllipticCurvePrivateKey,
) -> None:
    root = CertificateAuthority(self_signed_ca(rsa_key, name("root"), timedelta(days=30)), rsa_key)
    sub = issue(make_csr(ec_key, "sub CA"), root, RequestProfile(is_ca=True), IssuerPolicy(allow_ca=True))
    sub_ca = CertificateAuthority(sub.certificate, ec_key, (root.certificate,))
    issued = issue(make_csr(leaf_key, "deep.example", sans=[x509.DNSName("deep.example")]), sub_ca)
    chain = write(tmp_path / "chain.pem", issued.chain_pem())
    result = openssl(
        "verify",
        "-CAfile",
        write(tmp_path / "root.pem", issued.ca_pem()),
        "-untrusted",
        chain,
        write(tmp_path / "leaf.pem", issued.leaf_pem()),
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_openssl_refuses_certificates_signed_by_a_leaf(
    tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    ca = CertificateAuthority(self_signed_ca(ec_key, name("CA"), timedelta(days=1)), ec_key)
    leaf = issue(make_csr(leaf_key, "leaf.example"), ca).certificate
    now = datetime.now(UTC)
    forged = (
        x509.CertificateBuilder()
        .subject_name(name("forged.example"))
        .issuer_name(leaf.subject)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .sign(leaf_key, hashes.SHA256())
    )
    result = openssl(
        "verify",
        "-CAfile",
        write(tmp_path / "ca.pem", pem(ca.certificate)),
        "-untrusted",
        write(tmp_path / "leaf.pem", pem(leaf)),
        write(tmp_path / "forged.pem", pem(forged)),
        check=False,
    )
    assert result.returncode != 0
    assert "invalid CA certificate" in result.stdout + result.stderr
