"""Certificates and wrapped keys built the way keyward's peers build them, for the keystore tests."""

from __future__ import annotations

import datetime
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from keyward.keystore import HsmConfig

CAPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def self_signed_ca(
    key: CAPrivateKey, common_name: str = "keyward test CA", algorithm: hashes.HashAlgorithm | None = None
) -> x509.Certificate:
    """A self-signed CA certificate built by cryptography, signed by ``key`` (in the token or not)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, algorithm or hashes.SHA256())
    )


def wrap_for_token(
    ca_key: CAPrivateKey, wrapping_public_key: rsa.RSAPublicKey, mechanism: str = "aes_key_wrap_pad"
) -> bytes:
    """WSWK || WKEY as a key manager (km-wrap) sends it: OAEP-SHA1 AES-256 key, then the wrapped PKCS#8."""
    transport_key = os.urandom(32)
    wswk = wrapping_public_key.encrypt(
        # tcs.md fixes RSA-OAEP with SHA-1 and MGF1-SHA1 for WSWK
        transport_key,
        padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),  # noqa: S303
    )
    pkcs8 = ca_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    if mechanism == "aes_key_wrap_pad":
        return wswk + keywrap.aes_key_wrap_with_padding(transport_key, pkcs8)
    iv = os.urandom(12)
    return wswk + iv + AESGCM(transport_key).encrypt(iv, pkcs8, None)


@dataclass(frozen=True)
class ToolRun:
    """What a pkcs11-tool run printed and how it ended; never its command line, which holds the PIN."""

    returncode: int
    stdout: str
    stderr: str


def pkcs11_tool(config: HsmConfig, *args: str | Path) -> ToolRun:
    """``pkcs11-tool`` logged in with the user PIN, as a user (or an attacker who has the PIN) runs it."""
    assert config.softhsm2_conf is not None
    done = subprocess.run(
        [
            "pkcs11-tool",
            "--module",
            config.module,
            "--token-label",
            config.token_label,
            "--login",
            "--pin",
            config.user_pin,
            *map(str, args),
        ],
        env={**os.environ, "SOFTHSM2_CONF": config.softhsm2_conf},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return ToolRun(done.returncode, done.stdout, done.stderr)
