"""`keyward est-server --fips` on OpenSSL's FIPS provider: curl and openssl enroll and connect as
independent peers (outside FIPS mode), and what FIPS mode does not allow is refused naming FIPS."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from tests.support.estserver import StandaloneServer
from tests.support.fips import fips_environment, provider_version
from tests.support.tools import run

FIPS_REFUSAL = "which FIPS mode does not allow"


@pytest.fixture(scope="module")
def est(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneServer]:
    """A FIPS-mode server serving from one serving process (which inherits FIPS mode)."""
    state = tmp_path_factory.mktemp("est-fips") / "state"
    server = StandaloneServer(
        state, extra_args=("--fips", "--workers", "1", "--key-algorithm", "ECDSA-384"), env=fips_environment()
    ).start()
    yield server
    assert server.stop() == 0, f"est-server did not stop cleanly:\n{server.log()[-3000:]}"


def csr(work: Path, stem: str, *key_options: str, digest: str = "sha256") -> Path:
    """An openssl-made request (base64 DER, as EST wants it) for a new key of ``key_options``."""
    der, b64 = work / f"{stem}.der", work / f"{stem}.b64"
    run(
        [
            "openssl", "req", "-new", "-nodes", f"-{digest}", "-subj", f"/CN={stem}.example",
            *key_options, "-keyout", work / f"{stem}.key", "-outform", "DER", "-out", der,
        ]
    )  # fmt: skip
    run(["openssl", "base64", "-in", der, "-out", b64])
    return b64


def basic(est: StandaloneServer) -> tuple[str, str]:
    return ("-u", f"est:{est.password}")


def certificate_of(body: bytes) -> x509.Certificate:
    (certificate,) = pkcs7.load_der_pkcs7_certificates(base64.b64decode(b"".join(body.split())))
    return certificate


def test_the_server_starts_in_fips_mode_and_names_the_provider(est: StandaloneServer) -> None:
    log = est.log()
    assert f"FIPS mode: OpenSSL FIPS Provider {provider_version()} " in log
    assert log.count("FIPS mode: OpenSSL FIPS Provider") == 1, "logged once, at start"


@pytest.mark.parametrize(
    "key_options",
    [
        ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
        ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"),
        ("-newkey", "rsa:2048"),
        ("-newkey", "rsa:3072"),
    ],
    ids=["p256", "p384", "rsa2048", "rsa3072"],
)
def test_approved_requests_enroll_and_verify(
    est: StandaloneServer, tmp_path: Path, key_options: tuple[str, ...]
) -> None:
    response = est.curl("simpleenroll", *basic(est), data=csr(tmp_path, "device", *key_options))
    assert response.status == 200, response.text
    certificate = certificate_of(response.body)
    assert certificate.signature_hash_algorithm is not None
    assert certificate.signature_hash_algorithm.name == "sha384", "the P-384 CA signs with SHA-384"
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    assert run(["openssl", "verify", "-CAfile", est.ca_pem, leaf]).strip().endswith(b"OK")


@pytest.mark.parametrize(
    ("key_options", "digest", "refusal"),
    [
        (("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"), "sha256", "the key is ECDSA secp521r1"),
        (("-newkey", "ed25519"), "sha256", "the key is Ed25519"),
        (("-newkey", "rsa:2048"), "sha1", "the request is signed with SHA1"),
    ],
    ids=["p521", "ed25519", "sha1"],
)
def test_requests_fips_mode_does_not_allow_are_refused_naming_fips(
    est: StandaloneServer, tmp_path: Path, key_options: tuple[str, ...], digest: str, refusal: str
) -> None:
    body = csr(tmp_path, "refused", *key_options, digest=digest)
    for operation in ("simpleenroll", "serverkeygen"):
        response = est.curl(operation, *basic(est), data=body)
        assert response.status == 400, response.text
        assert f"{refusal}, {FIPS_REFUSAL}" in response.text


def test_serverkeygen_hands_out_a_key_of_the_requested_approved_type(
    est: StandaloneServer, tmp_path: Path
) -> None:
    body = csr(tmp_path, "keygen", "-newkey", "rsa:2048")
    response = est.curl("serverkeygen", *basic(est), data=body)
    assert response.status == 200, response.text
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode() + response.body
    )
    parts = {part.get_content_type(): part for part in message.iter_parts()}
    key = serialization.load_der_private_key(parts["application/pkcs8"].get_payload(decode=True), None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    certificate = certificate_of(parts["application/pkcs7-mime"].get_payload().encode())
    assert certificate.public_key() == key.public_key()
    assert not isinstance(certificate.public_key(), ec.EllipticCurvePublicKey)


def s_client(est: StandaloneServer, *options: str) -> subprocess.CompletedProcess[str]:
    """openssl s_client (outside FIPS mode: it offers what it is told) against the server."""
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{est.port}", "-CAfile", str(est.tls_ca_pem), "-brief",
         "-verify_return_error", *options],
        input="", capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("options", "negotiated"),
    [
        (("-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"), "TLS_AES_256_GCM_SHA384"),
        (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"), "ECDHE-ECDSA-AES128-GCM-SHA256"),
        (("-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"), None),
        (("-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"), None),
        (("-tls1_3", "-groups", "X25519"), None),
        (("-tls1_1",), None),
    ],
    ids=["tls13-aes", "tls12-aes-gcm", "tls13-chacha20", "tls12-chacha20", "x25519", "tls11"],
)
def test_tls_negotiates_approved_suites_only(
    est: StandaloneServer, options: tuple[str, ...], negotiated: str | None
) -> None:
    connection = s_client(est, *options)
    if negotiated is None:
        assert connection.returncode != 0, connection.stderr
        assert "Ciphersuite:" not in connection.stderr
    else:
        assert connection.returncode == 0, connection.stderr
        assert f"Ciphersuite: {negotiated}" in connection.stderr
