"""Certificates and wrapped keys built the way keyward's peers build them, for the keystore tests."""

from __future__ import annotations

import datetime
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from keyward.keystore import HsmConfig
from keyward.pki.keywrap import WrapMechanism, wrap_private_key

CAPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def self_signed_ca(
    key: CAPrivateKey,
    common_name: str = "keyward test CA",
    algorithm: hashes.HashAlgorithm | None = None,
    *,
    ca: bool = True,
    valid_for: datetime.timedelta = datetime.timedelta(days=1),
    valid_since: datetime.timedelta = datetime.timedelta(minutes=1),
) -> x509.Certificate:
    """A self-signed CA certificate built by cryptography, signed by ``key`` (in the token or not), valid
    from ``valid_since`` ago for ``valid_for`` from now (negative: expired); ``ca`` false for a leaf."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - valid_since)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, algorithm or hashes.SHA256())
    )


def wrap_for_token(
    ca_key: CAPrivateKey, wrapping_public_key: rsa.RSAPublicKey, mechanism: WrapMechanism = "aes_key_wrap_pad"
) -> bytes:
    """WSWK || WKEY as a key manager (km-wrap) sends it: OAEP-SHA1 AES-256 key, then the wrapped PKCS#8."""
    return wrap_private_key(ca_key, wrapping_public_key, mechanism)


def openssl(*args: str) -> str:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"openssl {' '.join(args)}: {done.stderr}"
    return done.stdout


def openssl_wrap(directory: Path, ca_key: Path, public_key: Path, swk_hex: str | None = None) -> bytes:
    """WSWK || WKEY made by the openssl command line alone: a fresh AES-256 key, RSA-OAEP (SHA-1, MGF1
    SHA-1) under ``public_key``, and the CA key's PKCS#8 DER under it with AES key wrap with padding."""
    swk_hex = swk_hex or openssl("rand", "-hex", "32").strip()
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
