"""Token keys sign certificates, CSRs and data through cryptography, and the signatures verify."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from cryptography.x509.oid import NameOID

from keyward.keystore import (
    KeyNotExtractable,
    KeySpec,
    TokenECPrivateKey,
    TokenKeyStore,
    TokenRSAPrivateKey,
    UnsupportedOperation,
)
from tests.support.pki import self_signed_ca


def openssl_verifies_self_signed(cert: x509.Certificate, tmp_path: Path) -> bool:
    pem = tmp_path / "ca.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", str(pem), str(pem)], capture_output=True, text=True, check=False
    )
    return done.returncode == 0 and done.stdout.strip().endswith("OK")


@pytest.mark.parametrize(
    "spec",
    [KeySpec("RSA", 2048), KeySpec("RSA", 3072), KeySpec("ECDSA", 256), KeySpec("ECDSA", 384)],
    ids=str,
)
def test_generated_key_signs_a_ca_certificate_that_verifies(
    store: TokenKeyStore, label: str, spec: KeySpec, tmp_path: Path
) -> None:
    key = store.generate_key(label, spec)
    assert key.key_size == spec.size
    cert = self_signed_ca(key)
    cert.verify_directly_issued_by(cert)
    assert cert.public_key() == key.public_key()
    assert openssl_verifies_self_signed(cert, tmp_path)


def test_rsa_4096_key_signs_a_ca_certificate(store: TokenKeyStore, label: str, tmp_path: Path) -> None:
    key = store.generate_key(label, KeySpec("RSA", 4096))
    cert = self_signed_ca(key, algorithm=hashes.SHA512())
    assert key.key_size == 4096
    assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == "sha512"
    assert openssl_verifies_self_signed(cert, tmp_path)


@pytest.mark.parametrize(
    "algorithm", [hashes.SHA256(), hashes.SHA384(), hashes.SHA512()], ids=lambda a: a.name
)
def test_certificates_with_each_sha2_hash_verify(
    rsa_key: TokenRSAPrivateKey, ec_key: TokenECPrivateKey, algorithm: hashes.HashAlgorithm
) -> None:
    for key in (rsa_key, ec_key):
        cert = self_signed_ca(key, algorithm=algorithm)
        cert.verify_directly_issued_by(cert)


def test_token_key_signs_a_csr(ec_key: TokenECPrivateKey) -> None:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "csr")]))
        .sign(ec_key, hashes.SHA256())
    )
    assert csr.is_signature_valid


def test_raw_signatures_verify_with_the_public_key(
    rsa_key: TokenRSAPrivateKey, ec_key: TokenECPrivateKey
) -> None:
    data = b"to be signed"
    digest = hashes.Hash(hashes.SHA384())
    digest.update(data)
    prehashed = digest.finalize()

    signature = rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA384())
    rsa_key.public_key().verify(signature, data, padding.PKCS1v15(), hashes.SHA384())
    signature = rsa_key.sign(prehashed, padding.PKCS1v15(), utils.Prehashed(hashes.SHA384()))
    rsa_key.public_key().verify(signature, data, padding.PKCS1v15(), hashes.SHA384())
    signature = rsa_key.sign(b"raw payload", padding.PKCS1v15(), utils.NoDigestInfo())
    assert (
        rsa_key.public_key().recover_data_from_signature(signature, padding.PKCS1v15(), None)
        == b"raw payload"
    )

    signature = ec_key.sign(data, ec.ECDSA(hashes.SHA384()))
    ec_key.public_key().verify(signature, data, ec.ECDSA(hashes.SHA384()))
    signature = ec_key.sign(prehashed, ec.ECDSA(utils.Prehashed(hashes.SHA384())))
    ec_key.public_key().verify(signature, data, ec.ECDSA(hashes.SHA384()))


def test_unsupported_signature_requests_are_refused_clearly(
    rsa_key: TokenRSAPrivateKey, ec_key: TokenECPrivateKey
) -> None:
    with pytest.raises(UnsupportedOperation, match="RFC 6979"):
        ec_key.sign(b"x", ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    with pytest.raises(UnsupportedOperation, match="use one of sha1, sha224, sha256, sha384, sha512"):
        rsa_key.sign(b"x", padding.PKCS1v15(), hashes.SHA3_256())
    with pytest.raises(ValueError, match="digest is 32 bytes"):
        rsa_key.sign(b"short", padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
    with pytest.raises(
        UnsupportedOperation, match=r"PSS padding are not supported.*sign with padding.PKCS1v15"
    ):
        rsa_key.sign(b"x", pss, hashes.SHA256())


def test_private_key_material_cannot_be_read(
    store: TokenKeyStore, rsa_key: TokenRSAPrivateKey, ec_key: TokenECPrivateKey
) -> None:
    for key in (rsa_key, ec_key):
        with pytest.raises(KeyNotExtractable, match="non-extractable in token 'keyward'"):
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        with pytest.raises(KeyNotExtractable, match="non-extractable"):
            key.private_numbers()
        assert copy.copy(key) is key and copy.deepcopy(key) is key
    with pytest.raises(KeyNotExtractable, match="can only sign"):
        rsa_key.decrypt(b"x", padding.PKCS1v15())
    with pytest.raises(KeyNotExtractable, match="can only sign"):
        ec_key.exchange(ec.ECDH(), ec.generate_private_key(ec.SECP256R1()).public_key())
