"""Which PKCS#11 mechanism performs the signature cryptography asked for, and on which bytes.

Hashing and DigestInfo encoding are left to the token wherever a combined mechanism exists
(CKM_SHA256_RSA_PKCS and friends): fewer bytes cross the module boundary and there is no hand-written
PKCS#1 encoding. ECDSA has no combined mechanism in SoftHSM2, so the hash is computed here and the
token signs it with CKM_ECDSA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asn1crypto import algos
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from pkcs11 import MGF, Mechanism

from keyward.keystore.errors import UnsupportedOperation

RSAHashChoice = utils.Prehashed | hashes.HashAlgorithm | utils.NoDigestInfo

_RSA_PKCS1 = {
    "sha1": Mechanism.SHA1_RSA_PKCS,
    "sha224": Mechanism.SHA224_RSA_PKCS,
    "sha256": Mechanism.SHA256_RSA_PKCS,
    "sha384": Mechanism.SHA384_RSA_PKCS,
    "sha512": Mechanism.SHA512_RSA_PKCS,
}
_RSA_PSS = {
    "sha1": Mechanism.SHA1_RSA_PKCS_PSS,
    "sha224": Mechanism.SHA224_RSA_PKCS_PSS,
    "sha256": Mechanism.SHA256_RSA_PKCS_PSS,
    "sha384": Mechanism.SHA384_RSA_PKCS_PSS,
    "sha512": Mechanism.SHA512_RSA_PKCS_PSS,
}
_DIGEST = {
    "sha1": Mechanism.SHA_1,
    "sha224": Mechanism.SHA224,
    "sha256": Mechanism.SHA256,
    "sha384": Mechanism.SHA384,
    "sha512": Mechanism.SHA512,
}
_MGF1 = {
    "sha1": MGF.SHA1,
    "sha224": MGF.SHA224,
    "sha256": MGF.SHA256,
    "sha384": MGF.SHA384,
    "sha512": MGF.SHA512,
}


@dataclass(frozen=True)
class TokenSignature:
    """What to hand to C_SignInit/C_Sign: mechanism, its parameter, and the bytes to sign."""

    mechanism: Mechanism
    parameter: Any
    data: bytes


def _supported(table: dict[str, Mechanism], algorithm: hashes.HashAlgorithm, what: str) -> Mechanism:
    try:
        return table[algorithm.name]
    except KeyError:
        raise UnsupportedOperation(
            f"{what} with {algorithm.name} is not supported by keyward's token keys",
            f"use one of {', '.join(sorted(table))}",
        ) from None


def _check_digest(data: bytes, algorithm: hashes.HashAlgorithm) -> None:
    if len(data) != algorithm.digest_size:
        raise ValueError(
            f"a prehashed {algorithm.name} digest is {algorithm.digest_size} bytes, not {len(data)}"
        )


def rsa_signature(
    data: bytes, pad: padding.AsymmetricPadding, choice: RSAHashChoice, key_size: int
) -> TokenSignature:
    """The token signature for ``RSAPrivateKey.sign(data, pad, choice)``: PKCS#1 v1.5 or PSS."""
    if isinstance(pad, padding.PKCS1v15):
        if isinstance(choice, utils.NoDigestInfo):
            return TokenSignature(Mechanism.RSA_PKCS, None, data)
        if isinstance(choice, utils.Prehashed):
            algorithm = choice._algorithm
            _supported(_RSA_PKCS1, algorithm, "RSA PKCS#1 v1.5")
            _check_digest(data, algorithm)
            digest_info = algos.DigestInfo(
                {"digest_algorithm": {"algorithm": algorithm.name}, "digest": data}
            )
            return TokenSignature(Mechanism.RSA_PKCS, None, digest_info.dump())
        return TokenSignature(_supported(_RSA_PKCS1, choice, "RSA PKCS#1 v1.5"), None, data)
    if isinstance(pad, padding.PSS):
        if isinstance(choice, utils.NoDigestInfo):
            raise UnsupportedOperation("RSA-PSS needs a hash algorithm", "pass a hash, not NoDigestInfo")
        algorithm = choice._algorithm if isinstance(choice, utils.Prehashed) else choice
        mechanism = _supported(_RSA_PSS, algorithm, "RSA-PSS")
        mgf = pad.mgf
        if not isinstance(mgf, padding.MGF1):
            raise UnsupportedOperation("RSA-PSS is supported with MGF1 only", "use padding.MGF1")
        mgf_hash = _MGF1.get(mgf._algorithm.name)
        if mgf_hash is None:
            raise UnsupportedOperation(
                f"RSA-PSS with MGF1-{mgf._algorithm.name} is not supported", "use MGF1 with a SHA-2 hash"
            )
        parameter = (_DIGEST[algorithm.name], mgf_hash, _pss_salt_length(pad, algorithm, key_size))
        if isinstance(choice, utils.Prehashed):
            _check_digest(data, algorithm)
            return TokenSignature(Mechanism.RSA_PKCS_PSS, parameter, data)
        return TokenSignature(mechanism, parameter, data)
    raise UnsupportedOperation(
        f"RSA signatures with {type(pad).__name__} padding are not supported", "use PKCS1v15 or PSS padding"
    )


def _pss_salt_length(pad: padding.PSS, algorithm: hashes.HashAlgorithm, key_size: int) -> int:
    salt: object = pad._salt_length
    if isinstance(salt, int):
        return salt
    if isinstance(salt, padding._DigestLength):
        return algorithm.digest_size
    if isinstance(salt, padding._MaxLength):
        # RFC 8017 9.1.1: emLen = ceil((modBits - 1) / 8); the salt takes what the hash and 2 bytes leave.
        return (key_size - 1 + 7) // 8 - algorithm.digest_size - 2
    raise UnsupportedOperation(
        "PSS.AUTO is only valid when verifying", "sign with PSS.DIGEST_LENGTH, PSS.MAX_LENGTH or a length"
    )


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
    if isinstance(choice, utils.Prehashed):
        _check_digest(data, choice._algorithm)
        return TokenSignature(Mechanism.ECDSA, None, data)
    digest = hashes.Hash(choice)
    digest.update(data)
    return TokenSignature(Mechanism.ECDSA, None, digest.finalize())


def der_ecdsa_signature(raw: bytes) -> bytes:
    """PKCS#11 returns r || s, each as long as the curve order; X.509 and TLS want DER (RFC 3279)."""
    half = len(raw) // 2
    return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))
