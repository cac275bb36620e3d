"""The wrapped-key format against an independent implementation: the openssl command line.

openssl alone wraps (``pkeyutl`` RSA-OAEP SHA-1, ``enc -id-aes256-wrap-pad``) and the token unwraps; and
the reverse: what ``keyward provision-key`` wraps (``pki.keywrap``), openssl alone unwraps."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from keyward.keystore import KeystoreError, TokenKeyStore
from keyward.pki.keywrap import check_wrapped_size, oaep_sha1, wrap_private_key
from tests.support.pki import self_signed_ca
from tests.support.tools import openssl

from .helpers import CAPrivateKey, openssl_wrap


def _pem(key: CAPrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


@pytest.mark.parametrize(
    "ca_key",
    [rsa.generate_private_key(65537, 3072), ec.generate_private_key(ec.SECP384R1())],
    ids=["rsa-3072", "ecdsa-p384"],
)
def test_a_key_wrapped_by_openssl_alone_is_unwrapped_into_the_token(
    store: TokenKeyStore, label: str, tmp_path: Path, ca_key: CAPrivateKey
) -> None:
    public_key = store.generate_wrapping_key(label)
    (tmp_path / "public.pem").write_bytes(
        public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    wrapped = openssl_wrap(tmp_path, _pem(ca_key, tmp_path / "ca-key.pem"), tmp_path / "public.pem")
    assert check_wrapped_size(wrapped, 384) is None

    certificate = self_signed_ca(ca_key, "openssl-wrapped CA")
    key = store.unwrap_ca_key(label, wrapped, "aes_key_wrap_pad", certificate=certificate)

    assert key.public_key() == ca_key.public_key()
    probe = b"signed in the token"
    if isinstance(ca_key, rsa.RSAPrivateKey):
        signature = key.sign(probe, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[call-arg]
        ca_key.public_key().verify(signature, probe, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = key.sign(probe, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg]
        ca_key.public_key().verify(signature, probe, ec.ECDSA(hashes.SHA256()))


def test_a_key_wrapped_by_keyward_is_unwrapped_by_openssl_alone(tmp_path: Path) -> None:
    wrapping = str(tmp_path / "w.pem")
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072", "-out", wrapping)
    openssl("pkey", "-in", str(tmp_path / "w.pem"), "-pubout", "-out", str(tmp_path / "w-public.pem"))
    wrapping_key = serialization.load_pem_public_key((tmp_path / "w-public.pem").read_bytes())
    assert isinstance(wrapping_key, rsa.RSAPublicKey)
    ca_key = ec.generate_private_key(ec.SECP256R1())

    wrapped = wrap_private_key(ca_key, wrapping_key, "aes_key_wrap_pad")

    (tmp_path / "wswk.bin").write_bytes(wrapped[:384])
    (tmp_path / "wkey.bin").write_bytes(wrapped[384:])
    openssl(
        "pkeyutl", "-decrypt", "-inkey", str(tmp_path / "w.pem"),
        "-in", str(tmp_path / "wswk.bin"), "-out", str(tmp_path / "swk.bin"),
        "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha1", "-pkeyopt", "rsa_mgf1_md:sha1",
    )  # fmt: skip
    swk = (tmp_path / "swk.bin").read_bytes()
    assert len(swk) == 32
    openssl(
        "enc", "-d", "-id-aes256-wrap-pad", "-K", swk.hex(), "-iv", "A65959A6",
        "-in", str(tmp_path / "wkey.bin"), "-out", str(tmp_path / "ca-key.der"),
    )  # fmt: skip
    pkcs8 = ca_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert (tmp_path / "ca-key.der").read_bytes() == pkcs8


def test_a_traditional_der_key_is_not_a_wrapped_pkcs8_key(
    store: TokenKeyStore, label: str, tmp_path: Path
) -> None:
    """openssl's ``pkey -outform DER`` writes an RSA key as PKCS#1, which the token refuses to unwrap."""
    public_key = store.generate_wrapping_key(label)
    ca_key = rsa.generate_private_key(65537, 2048)
    swk_hex = openssl("rand", "-hex", "32").stdout.strip()
    traditional = serialization.PrivateFormat.TraditionalOpenSSL
    (tmp_path / "ca.der").write_bytes(
        ca_key.private_bytes(serialization.Encoding.DER, traditional, serialization.NoEncryption())
    )
    openssl(
        "enc", "-id-aes256-wrap-pad", "-K", swk_hex, "-iv", "A65959A6",
        "-in", str(tmp_path / "ca.der"), "-out", str(tmp_path / "wkey.bin"),
    )  # fmt: skip
    wrapped = public_key.encrypt(bytes.fromhex(swk_hex), oaep_sha1()) + (tmp_path / "wkey.bin").read_bytes()
    with pytest.raises(KeystoreError, match=r"could not unwrap the RSA-2048 CA key \(WKEY\)"):
        store.unwrap_ca_key(label, wrapped, certificate=self_signed_ca(ca_key))
    assert store.find_key(label) is None
