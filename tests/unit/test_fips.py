"""keyward's own choices in FIPS mode, which the provider cannot make for it: the algorithms a request
names, the CA keys that sign, the hashes and PKCS#11 mechanisms a token key signs with, TLS 1.2 suites.

These run in the test process with FIPS mode switched on for keyward (its OpenSSL stays as it is); the
other tests of this folder run keyward on the FIPS provider itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from pkcs11 import Mechanism

from keyward.est.client.tls import client_ssl_context
from keyward.keystore.approved import check_mechanism
from keyward.keystore.errors import UnsupportedOperation
from keyward.keystore.signing import ecdsa_signature, rsa_signature
from keyward.pki.csr import load_csr
from keyward.pki.errors import IssuerError, PolicyViolation
from keyward.pki.issue import CertificateAuthority
from tests.support.pki import der, make_csr, name
from tests.support.tools import openssl
from tests.unit.pki.helpers import issue, plain_ca

FIPS_REFUSAL = "which FIPS mode does not allow"


@pytest.fixture
def fips_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYWARD_FIPS", "1")


@pytest.fixture(scope="module")
def rsa_ca() -> CertificateAuthority:
    key = rsa.generate_private_key(65537, 2048)
    return CertificateAuthority(plain_ca(key, "FIPS test CA"), key)


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        (ec.generate_private_key(ec.SECP521R1()), "ECDSA secp521r1"),
        (ed25519.Ed25519PrivateKey.generate(), "Ed25519"),
    ],
    ids=["p521", "ed25519"],
)
def test_request_keys_beyond_rsa_and_p256_p384_are_refused_only_in_fips_mode(
    monkeypatch: pytest.MonkeyPatch, rsa_ca: CertificateAuthority, key: object, shown: str
) -> None:
    csr = make_csr(key)  # type: ignore[arg-type]
    assert issue(csr, rsa_ca).subject == name("app.example")  # outside FIPS mode: certified
    monkeypatch.setenv("KEYWARD_FIPS", "1")
    with pytest.raises(PolicyViolation) as refused:
        load_csr(der(csr))
    assert str(refused.value) == (
        f"policy fips-algorithms: the request's key: the key is {shown}, {FIPS_REFUSAL}; "
        "use RSA of at least 2048 bits or ECDSA P-256/P-384"
    )
    with pytest.raises(PolicyViolation, match=FIPS_REFUSAL):
        issue(csr, rsa_ca)


@pytest.mark.usefixtures("fips_mode")
@pytest.mark.parametrize("algorithm", ["sha1", "sha224"])
def test_a_request_signed_with_another_hash_than_sha2_256_384_512_is_refused(
    algorithm: str, tmp_path: Path
) -> None:
    # cryptography no longer signs requests with SHA-1; openssl does, as old devices' toolkits do.
    made = openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", f"-{algorithm}", "-subj", "/CN=sha.example",
        "-keyout", tmp_path / "key.pem", "-outform", "DER", "-out", tmp_path / "csr.der",
        check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    with pytest.raises(PolicyViolation) as refused:
        load_csr((tmp_path / "csr.der").read_bytes())
    assert f"the request is signed with {algorithm.upper()}, {FIPS_REFUSAL}" in str(refused.value)


@pytest.mark.usefixtures("fips_mode")
@pytest.mark.parametrize("key_size", [2048, 3072])
def test_approved_requests_are_issued_with_sha2_signatures(
    rsa_ca: CertificateAuthority, key_size: int
) -> None:
    for key in (rsa.generate_private_key(65537, key_size), ec.generate_private_key(ec.SECP384R1())):
        certificate = issue(load_csr(der(make_csr(key))), rsa_ca)
        assert certificate.signature_hash_algorithm is not None
        assert certificate.signature_hash_algorithm.name == "sha256"
        assert 0 < certificate.serial_number < 2**159


def test_a_ca_key_that_is_not_approved_cannot_sign_in_fips_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    certificate = plain_ca(key, "P-521 CA")
    CertificateAuthority(certificate, key)  # outside FIPS mode: a CA
    monkeypatch.setenv("KEYWARD_FIPS", "1")
    with pytest.raises(
        IssuerError, match=f"the CA cannot sign in FIPS mode: the key is ECDSA secp521r1, {FIPS_REFUSAL}"
    ):
        CertificateAuthority(certificate, key)


@pytest.mark.usefixtures("fips_mode")
def test_token_keys_sign_only_approved_hashes() -> None:
    for signature in (
        lambda: rsa_signature(b"tbs", padding.PKCS1v15(), hashes.SHA1()),  # noqa: S303 - refused
        lambda: rsa_signature(b"tbs", padding.PKCS1v15(), utils.NoDigestInfo()),
        lambda: ecdsa_signature(b"tbs", ec.ECDSA(hashes.SHA224())),
    ):
        with pytest.raises(UnsupportedOperation, match=FIPS_REFUSAL):
            signature()
    assert rsa_signature(b"tbs", padding.PKCS1v15(), hashes.SHA384()).mechanism == Mechanism.RSA_PKCS
    assert ecdsa_signature(b"tbs", ec.ECDSA(hashes.SHA256())).mechanism == Mechanism.ECDSA


def test_only_approved_pkcs11_mechanisms_pass_in_fips_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    check_mechanism(Mechanism.SHA1_RSA_PKCS, "signing")  # outside FIPS mode: keyward's own choice
    monkeypatch.setenv("KEYWARD_FIPS", "1")
    for mechanism in (Mechanism.SHA1_RSA_PKCS, Mechanism.MD5_RSA_PKCS, Mechanism.DSA, Mechanism.EDDSA):
        with pytest.raises(
            UnsupportedOperation, match=f"needs the PKCS#11 mechanism {mechanism.name}, {FIPS_REFUSAL}"
        ):
            check_mechanism(mechanism, "signing")
    for mechanism in (
        Mechanism.RSA_PKCS,
        Mechanism.ECDSA,
        Mechanism.RSA_PKCS_OAEP,
        Mechanism.AES_KEY_WRAP_PAD,
    ):
        check_mechanism(mechanism, "signing")


def test_tls_12_suites_drop_chacha20_in_fips_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    anchor = plain_ca(ec.generate_private_key(ec.SECP256R1()), "TLS anchor")

    def tls12_suites() -> set[str]:
        return {c["name"] for c in client_ssl_context([anchor]).get_ciphers() if c["protocol"] == "TLSv1.2"}

    assert any("CHACHA20" in suite for suite in tls12_suites())
    monkeypatch.setenv("KEYWARD_FIPS", "1")
    fips_suites = tls12_suites()
    assert fips_suites and not any("CHACHA20" in suite for suite in fips_suites)
    assert all("-AES" in suite and suite.startswith(("ECDHE-", "DHE-")) for suite in fips_suites)
