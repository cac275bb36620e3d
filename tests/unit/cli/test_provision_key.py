"""``keyward provision-key`` refuses CA files it must not send, in one line, before it calls any API."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.pki import self_signed_ca
from tests.support.tools import keyward, one_error_line

KEY = ec.generate_private_key(ec.SECP256R1())


def _files(tmp_path: Path, key_pem: bytes, certificate_pem: bytes) -> list[str]:
    (tmp_path / "key.pem").write_bytes(key_pem)
    (tmp_path / "ca.pem").write_bytes(certificate_pem)
    return ["--ca-key", str(tmp_path / "key.pem"), "--ca-cert", str(tmp_path / "ca.pem")]


def _key(encryption: serialization.KeySerializationEncryption) -> bytes:
    return KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


CA_PEM = self_signed_ca(KEY).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("key_pem", "certificate_pem", "said"),
    [
        (_key(serialization.BestAvailableEncryption(b"secret")), CA_PEM, "is encrypted"),
        (b"not a key", CA_PEM, "is not a PEM private key"),
        (_key(serialization.NoEncryption()), b"not a certificate", "is not a PEM certificate"),
        (
            _key(serialization.NoEncryption()),
            self_signed_ca(KEY, "leaf", ca=False).public_bytes(serialization.Encoding.PEM),
            "is not a CA certificate",
        ),
    ],
    ids=["encrypted-key", "not-a-key", "not-a-certificate", "not-a-ca"],
)
def test_ca_files_that_cannot_be_sent_are_one_line(
    tmp_path: Path, key_pem: bytes, certificate_pem: bytes, said: str
) -> None:
    env = {"KUBECONFIG": str(tmp_path / "absent")}  # never reached: the files are checked first
    files = _files(tmp_path, key_pem, certificate_pem)
    line = one_error_line(keyward("provision-key", "my-ca", *files, env=env))
    assert said in line and "secret" not in line
