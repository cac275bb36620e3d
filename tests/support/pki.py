"""An in-memory CA and a stand-in for the token's worker pool, for adapter tests without SoftHSM2.

SOFTHSM2_CONF is process-wide and the keystore tests keep their store open for the whole session, so
these unit tests sign with in-memory keys; the subprocess tests sign in a real token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from keyward.issuers.tcs.est_ca import TokenWorkers
from keyward.pki.issue import CertificateAuthority, self_signed_ca

T = TypeVar("T")


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def memory_ca(
    key: CertificateIssuerPrivateKeyTypes | None = None, common_name: str = "Memory CA"
) -> CertificateAuthority:
    key = key or ec.generate_private_key(ec.SECP256R1())
    return CertificateAuthority(self_signed_ca(key, name(common_name), timedelta(days=365)), key)


def rsa_ca(bits: int = 2048) -> CertificateAuthority:
    return memory_ca(rsa.generate_private_key(public_exponent=65537, key_size=bits), "Memory RSA CA")


def csr(
    common_name: str = "device",
    *,
    key: Any = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.CertificateSigningRequest:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(name(common_name))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())


class ThreadWorkers:
    """Runs issuance jobs on a thread like TokenKeyStore.run_signing; counts calls, can fail like a broken
    token."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.failure: Exception | None = None

    async def run_signing(self, fn: Callable[..., T], *args: Any) -> T:
        self.calls.append(fn.__name__)
        if self.failure is not None:
            raise self.failure
        return await asyncio.to_thread(fn, *args)

    run = run_signing  # TokenKeyStore.run: the same threads when the store has no signing processes

    async def get(self) -> TokenWorkers:
        return self
