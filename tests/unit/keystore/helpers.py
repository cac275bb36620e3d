"""Certificates and wrapped keys built the way keyward's peers build them, for the keystore tests."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyward.pki.keywrap import WrapMechanism, wrap_private_key
from tests.support.tools import openssl

CAPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def wrap_for_token(
    ca_key: CAPrivateKey, wrapping_public_key: rsa.RSAPublicKey, mechanism: WrapMechanism = "aes_key_wrap_pad"
) -> bytes:
    """WSWK || WKEY as a key manager (km-wrap) sends it: OAEP-SHA1 AES-256 key, then the wrapped PKCS#8."""
    return wrap_private_key(ca_key, wrapping_public_key, mechanism)


def openssl_wrap(directory: Path, ca_key: Path, public_key: Path, swk_hex: str | None = None) -> bytes:
    """WSWK || WKEY made by the openssl command line alone: a fresh AES-256 key, RSA-OAEP (SHA-1, MGF1
    SHA-1) under ``public_key``, and the CA key's PKCS#8 DER under it with AES key wrap with padding."""
    swk_hex = swk_hex or openssl("rand", "-hex", "32").stdout.strip()
    (directory / "swk.bin").write_bytes(bytes.fromhex(swk_hex))
    openssl(
        "pkeyutl", "-encrypt", "-pubin", "-inkey", str(public_key),
        "-in", str(directory / "swk.bin"), "-out", str(directory / "wswk.bin"),
        "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha1", "-pkeyopt", "rsa_mgf1_md:sha1",
    )  # fmt: skip
    openssl(
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        str(ca_key),
        "-outform",
        "DER",
        "-out",
        str(directory / "ca-key.der"),
    )
    openssl(
        "enc", "-id-aes256-wrap-pad", "-K", swk_hex, "-iv", "A65959A6",
        "-in", str(directory / "ca-key.der"), "-out", str(directory / "wkey.bin"),
    )  # fmt: skip
    return (directory / "wswk.bin").read_bytes() + (directory / "wkey.bin").read_bytes()
