"""Which kind of CA key to create: the few algorithm/size pairs worth a CA key, checked up front.

Checking here, before the token is asked, turns a typo in an issuer spec into a clear message instead
of an opaque PKCS#11 return code after a slow key generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.asymmetric import ec, rsa

Algorithm = Literal["RSA", "ECDSA"]

RSA_SIZES = (2048, 3072, 4096)
#: ECDSA key size in bits → the named curve it means.
EC_CURVES: dict[int, type[ec.EllipticCurve]] = {256: ec.SECP256R1, 384: ec.SECP384R1}


@dataclass(frozen=True)
class KeySpec:
    """A CA key's algorithm and size: RSA 2048/3072/4096 or ECDSA 256 (P-256) / 384 (P-384)."""

    algorithm: Algorithm
    size: int

    def __post_init__(self) -> None:
        if self.algorithm == "RSA":
            if self.size not in RSA_SIZES:
                raise ValueError(
                    f"RSA key size {self.size} is not supported: use one of {', '.join(map(str, RSA_SIZES))}"
                )
        elif self.algorithm == "ECDSA":
            if self.size not in EC_CURVES:
                raise ValueError(
                    f"ECDSA key size {self.size} is not supported: use 256 (P-256) or 384 (P-384)"
                )
        else:
            raise ValueError(f"key algorithm {self.algorithm!r} is not supported: use 'RSA' or 'ECDSA'")

    @classmethod
    def default(cls) -> KeySpec:
        """RSA 3072: accepted by every TLS peer and strong beyond a CA's lifetime (NIST SP 800-57)."""
        return cls("RSA", 3072)

    @classmethod
    def of_public_key(cls, public_key: object) -> KeySpec:
        """The spec of an existing key, e.g. of a CA certificate whose key is about to be unwrapped."""
        if isinstance(public_key, rsa.RSAPublicKey):
            return cls("RSA", public_key.key_size)
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            return cls("ECDSA", public_key.curve.key_size)
        raise ValueError(f"{type(public_key).__name__} keys are not supported: use an RSA or ECDSA key")

    @property
    def curve(self) -> ec.EllipticCurve:
        """The named curve of an ECDSA spec."""
        if self.algorithm != "ECDSA":
            raise ValueError(f"{self} has no curve: only ECDSA keys have one")
        return EC_CURVES[self.size]()

    def __str__(self) -> str:
        return f"{self.algorithm}-{self.size}"
