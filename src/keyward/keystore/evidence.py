"""Attestation evidence over a wrapping public key: what a key manager checks before it sends a CA key.

A provider is a way for a token to vouch for a public key it holds the private half of; the first one
the token offers is used (``choose``):

- ``sgx``: the Crypto API Toolkit for Intel SGX (the seed's PKCS#11 module). C_WrapKey with its mechanism
  CKM_EXPORT_ECDSA_QUOTE_RSA_PUBLIC_KEY and no wrapping key exports an RSA public key together with an
  SGX ECDSA quote (version 3) of the enclave whose report data binds the key's hash and the nonce. The
  output is ``CK_RSA_PUBLIC_KEY_PARAMS`` (exponent and modulus lengths, native CK_ULONGs), the exponent,
  the modulus, then the quote. The toolkit quotes session keys only, so on it the wrapping key lives as
  long as the operator's session, and a restart asks for the key again.
- ``none``: every other token (SoftHSM2, an HSM, a TPM). There is no evidence: the quote is empty and its
  version says ``none``. The key manager then learns nothing about who holds the private key, so the
  transport protects the CA key's confidentiality only, not against a substituted public key; keyward
  says so in the QuoteAttestation and in its log, and ``keyward provision-key`` wraps for such a request
  only when told to (``--accept-unattested``).

The nonce has the seed's format: with ``--use-random-nonce`` (the default) 28 random bytes followed by the
time as a little-endian 32-bit Unix timestamp, which KMRA 2.2 and later expect; without it the fixed bytes
0, 1, ..., 31.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import Mechanism
from pkcs11._pkcs11 import WrapMixin  # type: ignore[attr-defined]

from keyward.keystore.errors import UnsupportedOperation
from keyward.keystore.objects import rsa_public_key

NONCE_BYTES = 32
_NONCE_TIME = struct.Struct("<I")
#: The Crypto API Toolkit's CKM_EXPORT_ECDSA_QUOTE_RSA_PUBLIC_KEY (its p11Defines.h).
CKM_EXPORT_ECDSA_QUOTE_RSA_PUBLIC_KEY = 0x00002111
#: sgx_ql_request_policy_t SGX_QL_PERSISTENT: the quoting enclave stays loaded.
SGX_QL_PERSISTENT = 0
#: CK_ECDSA_QUOTE_RSA_PUBLIC_KEY_PARAMS: CK_LONG qlPolicy, CK_BYTE nonce[NONCE_LENGTH].
_QUOTE_PARAMS = struct.Struct(f"@l{NONCE_BYTES}s")
#: CK_RSA_PUBLIC_KEY_PARAMS: CK_ULONG ulExponentLen, CK_ULONG ulModulusLen.
_RSA_KEY_PARAMS = struct.Struct("@LL")
SGX_QUOTE_VERSION = "ECDSA Quote 3"
NO_EVIDENCE = "none"


@dataclass(frozen=True)
class Evidence:
    """What a token says about a public key: ``quote`` (empty without attestation), its format, and the
    nonce bound into it."""

    provider: str
    quote: bytes
    quote_version: str
    nonce: bytes

    @property
    def attested(self) -> bool:
        return bool(self.quote)


def nonce(random: bool = True, now: float | None = None) -> bytes:
    """The seed's quote nonce: 28 random bytes and a little-endian timestamp, or the fixed 0..31."""
    if not random:
        return bytes(range(NONCE_BYTES))
    stamp = int(time.time() if now is None else now) & 0xFFFFFFFF
    return os.urandom(NONCE_BYTES - _NONCE_TIME.size) + _NONCE_TIME.pack(stamp)


def parse_quoted_public_key(data: bytes) -> tuple[rsa.RSAPublicKey, bytes]:
    """The RSA public key and the rest (the quote) of ``CK_RSA_PUBLIC_KEY_PARAMS || e || n || quote``, as
    the toolkit exports a key (and as SGX workloads put it in their CSRs); ``ValueError`` when malformed."""
    if len(data) < _RSA_KEY_PARAMS.size:
        raise ValueError(f"{len(data)} bytes are too few for CK_RSA_PUBLIC_KEY_PARAMS")
    exponent_length, modulus_length = _RSA_KEY_PARAMS.unpack_from(data)
    start = _RSA_KEY_PARAMS.size
    end = start + exponent_length + modulus_length
    if not 0 < exponent_length <= 4 or not 0 < modulus_length <= 2048 or end > len(data):
        raise ValueError(
            f"CK_RSA_PUBLIC_KEY_PARAMS gives an exponent of {exponent_length} and a modulus of "
            f"{modulus_length} bytes, which do not fit the {len(data)} bytes given"
        )
    exponent = int.from_bytes(data[start : start + exponent_length], "big")
    modulus = int.from_bytes(data[start + exponent_length : end], "big")
    try:
        key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    except ValueError as exc:
        raise ValueError(f"the exported RSA public key is not valid: {exc}") from None
    return key, data[end:]


class EvidenceProvider(Protocol):
    name: str
    quote_version: str
    #: Whether the wrapping key may be a token object (kept over restarts) with this provider.
    token_object: bool

    def offered(self, mechanisms: Collection[object]) -> bool:
        """Whether a token offering ``mechanisms`` (its slot's mechanism list) can give this evidence."""
        ...

    def attest(self, public_key: Any, nonce: bytes) -> bytes:
        """The quote over the public key object ``public_key`` (in a session of the token)."""
        ...


class SgxQuotes:
    """SGX ECDSA quotes from the Crypto API Toolkit."""

    name = "sgx"
    quote_version = SGX_QUOTE_VERSION
    token_object = False

    def offered(self, mechanisms: Collection[object]) -> bool:
        return CKM_EXPORT_ECDSA_QUOTE_RSA_PUBLIC_KEY in mechanisms

    def attest(self, public_key: Any, nonce: bytes) -> bytes:
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"an SGX quote nonce is {NONCE_BYTES} bytes, not {len(nonce)}")
        exported = WrapMixin.wrap_key(
            _NoWrappingKey(public_key.session),
            public_key,
            mechanism=_mechanism(CKM_EXPORT_ECDSA_QUOTE_RSA_PUBLIC_KEY, "EXPORT_ECDSA_QUOTE_RSA_PUBLIC_KEY"),
            mechanism_param=_QUOTE_PARAMS.pack(SGX_QL_PERSISTENT, nonce),
        )
        try:
            quoted, quote = parse_quoted_public_key(exported)
        except ValueError as exc:
            raise UnsupportedOperation(
                f"the token's SGX quote could not be read: {exc}", "check the Crypto API Toolkit's version"
            ) from None
        if quoted.public_numbers() != rsa_public_key(public_key).public_numbers() or not quote:
            raise UnsupportedOperation(
                "the token's SGX quote is not over the wrapping key it was asked to quote",
                "check the Crypto API Toolkit's version",
            )
        return quote


class NoAttestation:
    """Tokens without attestation: no quote; the transport is confidential, not authenticated."""

    name = NO_EVIDENCE
    quote_version = NO_EVIDENCE
    token_object = True

    def offered(self, mechanisms: Collection[object]) -> bool:
        return True

    def attest(self, public_key: Any, nonce: bytes) -> bytes:
        return b""


#: In order of preference: the first the token offers gives the evidence.
PROVIDERS: tuple[EvidenceProvider, ...] = (SgxQuotes(), NoAttestation())


def choose(mechanisms: Collection[object]) -> EvidenceProvider:
    """The provider for a token that offers ``mechanisms``."""
    return next(provider for provider in PROVIDERS if provider.offered(mechanisms))


class _NoWrappingKey:
    """C_WrapKey's hWrappingKey for the toolkit's export mechanism: none (handle 0), in ``session``."""

    key_type = None
    handle = 0

    def __init__(self, session: Any) -> None:
        self.session = session


def _mechanism(value: int, name: str) -> Mechanism:
    """A vendor mechanism python-pkcs11's ``Mechanism`` does not list, as a member it accepts."""
    try:
        return Mechanism(value)
    except ValueError:
        member = int.__new__(Mechanism, value)
        member._name_ = name
        member._value_ = value
        return member
