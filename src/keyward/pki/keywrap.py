"""The wrapped-key format of TCS key provisioning (tcs.md): ``WSWK || WKEY``.

WSWK is a fresh AES-256 key (the SWK) encrypted with RSA-OAEP (SHA-1, MGF1-SHA1, empty label) under the
wrapping public key a token published in its QuoteAttestation: as long as that key's modulus (384 bytes
for RSA-3072). WKEY is the CA private key as PKCS#8 DER under the SWK, with AES key wrap with padding
(RFC 5649, ``aes_key_wrap_pad``, the default) or AES-GCM (``aes_gcm``: a 12-byte IV, then the ciphertext
and its 16-byte tag). Intel KMRA's ``km-wrap`` makes the same bytes, and so does openssl alone
(``pkeyutl`` with RSA-OAEP SHA-1, ``enc -id-aes256-wrap-pad``).

This is the key manager's side, for ``keyward provision-key``; the token's side (C_UnwrapKey of both
parts, so the CA key never exists outside the token) is ``keyward.keystore.unwrap``.
"""

from __future__ import annotations

import os
from typing import Literal, get_args

from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

WrapMechanism = Literal["aes_key_wrap_pad", "aes_gcm"]
WRAP_MECHANISMS: tuple[WrapMechanism, ...] = get_args(WrapMechanism)
DEFAULT_WRAP_MECHANISM: WrapMechanism = "aes_key_wrap_pad"
SWK_BYTES = 32
GCM_IV_BYTES = 12
#: The longest WKEY a CA key makes (an RSA-4096 key is about 2.4 KB as PKCS#8): more is not a wrapped key.
MAX_WKEY_BYTES = 4096
#: The shortest WKEY: RFC 5649 output is at least 16 bytes (GCM: IV and tag alone are 28).
MIN_WKEY_BYTES = 16


def wrap_mechanism(text: str) -> WrapMechanism:
    """``text`` as a wrap mechanism; ``ValueError`` naming the two there are."""
    for mechanism in WRAP_MECHANISMS:
        if text == mechanism:
            return mechanism
    raise ValueError(f"key wrap mechanism {text!r} is not one of {', '.join(WRAP_MECHANISMS)}")


def oaep_sha1() -> padding.OAEP:
    """RSA-OAEP with SHA-1 and MGF1-SHA1 and no label: what tcs.md fixes for WSWK (and km-wrap uses)."""
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303


def wrap_private_key(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    wrapping_key: rsa.RSAPublicKey,
    mechanism: WrapMechanism = DEFAULT_WRAP_MECHANISM,
) -> bytes:
    """``WSWK || WKEY``: ``key`` wrapped so that only the holder of ``wrapping_key``'s private half (the
    token) can unwrap it. The SWK is fresh for every call and forgotten when it returns."""
    swk = os.urandom(SWK_BYTES)
    wswk = wrapping_key.encrypt(swk, oaep_sha1())
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    if mechanism == "aes_key_wrap_pad":
        return wswk + keywrap.aes_key_wrap_with_padding(swk, pkcs8)
    iv = os.urandom(GCM_IV_BYTES)
    return wswk + iv + AESGCM(swk).encrypt(iv, pkcs8, None)


def check_wrapped_size(wrapped: bytes, modulus_bytes: int) -> str | None:
    """Why ``wrapped`` cannot be ``WSWK || WKEY`` for a wrapping key of ``modulus_bytes``, or None."""
    wkey = len(wrapped) - modulus_bytes
    if wkey < MIN_WKEY_BYTES:
        return (
            f"{len(wrapped)} bytes, too short for WSWK || WKEY: the RSA-OAEP encrypted AES key alone is "
            f"{modulus_bytes} bytes, and the wrapped CA key at least {MIN_WKEY_BYTES} more (truncated?)"
        )
    if wkey > MAX_WKEY_BYTES:
        return (
            f"{len(wrapped)} bytes, more than any wrapped CA key ({modulus_bytes} + at most "
            f"{MAX_WKEY_BYTES}): it is not a wrapped key"
        )
    return None
