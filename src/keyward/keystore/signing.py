"""Which PKCS#11 mechanism performs the signature cryptography asked for, and on which bytes.

Every token key serves exactly one signature mechanism, the only one its CKA_ALLOWED_MECHANISMS lets
the token perform with it (see ``objects.private_key_template``): RSA keys CKM_RSA_PKCS (PKCS#1 v1.5
over a DigestInfo), EC keys CKM_ECDSA (over a hash). So the hash is computed here for both, and for RSA
asn1crypto encodes its DigestInfo; the token pads and signs. One mechanism per key type serves every
hash keyward signs with (SHA-256 to SHA-512, by CA key size), and fewer bytes cross the module boundary
than if the token hashed the whole TBSCertificate. RSA-PSS is not offered: keyward signs certificates
with PKCS#1 v1.5, as cert-manager's issuers do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asn1crypto import algos
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from pkcs11 import KeyType, Mechanism

from keyward.keystore.approved import check_signature_hash
from keyward.keystore.errors import UnsupportedOperation

RSAHashChoice = utils.Prehashed | hashes.HashAlgorithm | utils.NoDigestInfo

#: The one signature mechanism a token key of each type serves, and the only one it allows.
SIGNATURE_MECHANISMS: dict[KeyType, Mechanism] = {
    KeyType.RSA: Mechanism.RSA_PKCS,
    KeyType.EC: Mechanism.ECDSA,
}
#: Hashes whose DigestInfo an RSA key signs (asn1crypto's names, which are cryptography's too).
_DIGEST_INFO_HASHES = ("sha1", "sha224", "sha256", "sha384", "sha512")


@dataclass(frozen=True)
class TokenSignature:
    """What to hand to C_SignInit/C_Sign: mechanism, its parameter, and the bytes to sign."""

    mechanism: Mechanism
    parameter: Any
    data: bytes


def _check_digest(data: bytes, algorithm: hashes.HashAlgorithm) -> None:
    if len(data) != algorithm.digest_size:
        raise ValueError(
            f"a prehashed {algorithm.name} digest is {algorithm.digest_size} bytes, not {len(data)}"
        )


def _digest(
    data: bytes, choice: utils.Prehashed | hashes.HashAlgorithm
) -> tuple[hashes.HashAlgorithm, bytes]:
    """The hash algorithm and the digest of ``data`` (``data`` itself when it is prehashed)."""
    if isinstance(choice, utils.Prehashed):
        _check_digest(data, choice._algorithm)
        return choice._algorithm, data
    digest = hashes.Hash(choice)
    digest.update(data)
    return choice, digest.finalize()


def rsa_signature(data: bytes, pad: padding.AsymmetricPadding, choice: RSAHashChoice) -> TokenSignature:
    """The token signature for ``RSAPrivateKey.sign(data, pad, choice)``: CKM_RSA_PKCS over the DigestInfo
    (over ``data`` as given with ``NoDigestInfo``)."""
    if not isinstance(pad, padding.PKCS1v15):
        raise UnsupportedOperation(
            f"RSA signatures with {type(pad).__name__} padding are not supported: token keys sign with "
            "PKCS#1 v1.5 (CKM_RSA_PKCS), the one mechanism they allow",
            "sign with padding.PKCS1v15()",
        )
    if isinstance(choice, utils.NoDigestInfo):
        check_signature_hash("no digest", "an RSA signature over raw data")
        return TokenSignature(Mechanism.RSA_PKCS, None, data)
    algorithm = choice._algorithm if isinstance(choice, utils.Prehashed) else choice
    check_signature_hash(algorithm.name, "an RSA PKCS#1 v1.5 signature")
    if algorithm.name not in _DIGEST_INFO_HASHES:
        raise UnsupportedOperation(
            f"RSA PKCS#1 v1.5 with {algorithm.name} is not supported by keyward's token keys",
            f"use one of {', '.join(_DIGEST_INFO_HASHES)}",
        )
    _, digest = _digest(data, choice)
    digest_info = algos.DigestInfo({"digest_algorithm": {"algorithm": algorithm.name}, "digest": digest})
    return TokenSignature(Mechanism.RSA_PKCS, None, digest_info.dump())


def ecdsa_signature(data: bytes, algorithm: ec.EllipticCurveSignatureAlgorithm) -> TokenSignature:
    """The token signature for ``EllipticCurvePrivateKey.sign(data, ECDSA(hash))``: CKM_ECDSA, hash."""
    if not isinstance(algorithm, ec.ECDSA):
        raise UnsupportedOperation(
            f"{type(algorithm).__name__} is not supported for EC keys", "sign with ec.ECDSA(hash)"
        )
    if algorithm.deterministic_signing:
        raise UnsupportedOperation(
            "deterministic ECDSA (RFC 6979) is not available from PKCS#11 tokens",
            "sign with ec.ECDSA(hash) (randomized)",
        )
    choice = algorithm.algorithm
    check_signature_hash((choice._algorithm if isinstance(choice, utils.Prehashed) else choice).name, "ECDSA")
    _, digest = _digest(data, choice)
    return TokenSignature(Mechanism.ECDSA, None, digest)


def der_ecdsa_signature(raw: bytes) -> bytes:
    """PKCS#11 returns r || s, each as long as the curve order; X.509 and TLS want DER (RFC 3279)."""
    half = len(raw) // 2
    return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))
