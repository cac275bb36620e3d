"""A CA as the TCS seed leaves it in its token, made in a process of its own (python -m this module).

The seed (internal/sgx/sgx.go, with ThalesIgnite/crypto11) generates an RSA-3072 key pair with
``GenerateRSAKeyPairWithLabel(keyID, signerName, 3072)``: label = the signer name, one random 32-byte
CKA_ID shared by both halves, the private key CKA_TOKEN, CKA_SIGN, CKA_DECRYPT, CKA_SENSITIVE true and
CKA_EXTRACTABLE false; then a self-signed certificate (CN "SGX self-signed root certificate authority",
O "Intel(R) Corporation", one year, keyEncipherment + digitalSignature + keyCertSign, SHA-256 with RSA)
stored by ``ImportCertificateWithLabel`` under the same label with another random 32-byte CKA_ID.

Usage: ``python -m tests.integration.seed_token HSM_CONFIG SIGNER_NAME`` prints the certificate (PEM).
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta

import pkcs11
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, CertificateType, KeyType, MechanismFlag, ObjectClass

from keyward.keystore import TokenKeyStore, load_hsm_config

SEED_CA_SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.COMMON_NAME, "SGX self-signed root certificate authority"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Intel(R) Corporation"),
    ]
)


def make_seed_ca(config_path: str, label: str) -> x509.Certificate:
    config = load_hsm_config(config_path, env={})
    store = TokenKeyStore.open(config, workers=1)  # logs the application in; raw sessions share it
    try:
        token = pkcs11.lib(config.module).get_token(token_label=config.token_label)
        with token.open(rw=True) as session:
            key_id = os.urandom(32)
            session.generate_keypair(
                KeyType.RSA,
                3072,
                store=True,
                capabilities=MechanismFlag.SIGN
                | MechanismFlag.VERIFY
                | MechanismFlag.ENCRYPT
                | MechanismFlag.DECRYPT,
                public_template={Attribute.LABEL: label, Attribute.ID: key_id, Attribute.TOKEN: True},
                private_template={
                    Attribute.LABEL: label,
                    Attribute.ID: key_id,
                    Attribute.TOKEN: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                },
            )
            key = store.find_key(label)
            assert key is not None
            now = datetime.now(UTC)
            certificate = (
                x509.CertificateBuilder()
                .subject_name(SEED_CA_SUBJECT)
                .issuer_name(SEED_CA_SUBJECT)
                .public_key(key.public_key())
                .serial_number(int.from_bytes(os.urandom(8), "big") >> 1)
                .not_valid_before(now)
                .not_valid_after(now + timedelta(days=365))
                .add_extension(
                    x509.KeyUsage(True, False, True, False, False, True, False, False, False), critical=True
                )
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256())
            )
            session.create_object(
                {
                    Attribute.CLASS: ObjectClass.CERTIFICATE,
                    Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: False,
                    Attribute.LABEL: label,
                    Attribute.ID: os.urandom(32),  # not the key's: crypto11 imports it with an ID of its own
                    Attribute.SUBJECT: certificate.subject.public_bytes(),
                    Attribute.ISSUER: certificate.issuer.public_bytes(),
                    Attribute.SERIAL_NUMBER: core.Integer(certificate.serial_number).dump(),
                    Attribute.VALUE: certificate.public_bytes(Encoding.DER),
                }
            )
        return certificate
    finally:
        store.close()


if __name__ == "__main__":
    sys.stdout.write(make_seed_ca(sys.argv[1], sys.argv[2]).public_bytes(Encoding.PEM).decode())
