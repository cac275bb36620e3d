"""(a) Raw token signatures per second: C_Sign through keyward's token keys, in the store's signing
processes (one per worker, as the operator runs them).

This is the ceiling for everything above it: a certificate costs one signature, so pki, the operator and
the EST server can at best approach this rate.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from keyward.bench.rates import Job
from keyward.keystore import (
    KeySpec,
    TokenECPrivateKey,
    TokenKeyStore,
    TokenPrivateKey,
    TokenRSAPrivateKey,
    create_softhsm_store,
)

#: The CA keys benchmarked: the TCSIssuer default and the fastest supported key.
BENCH_KEYS = (KeySpec("RSA", 3072), KeySpec("ECDSA", 256))
#: About the size of a leaf certificate's TBSCertificate, the data a CA key really signs.
MESSAGE_SIZE = 1024


def key_name(spec: KeySpec) -> str:
    """``RSA-3072`` / ``ECDSA-P256``: how results are keyed in the report."""
    return f"ECDSA-P{spec.size}" if spec.algorithm == "ECDSA" else str(spec)


@dataclass
class BenchToken:
    """A fresh SoftHSM2 store with one CA key per benchmarked spec."""

    store: TokenKeyStore
    keys: dict[str, TokenPrivateKey]
    workers: int


@contextmanager
def bench_token(state_dir: Path, workers: int | None = None) -> Iterator[BenchToken]:
    """Create a SoftHSM2 store in ``state_dir`` (one per process: SoftHSM2 reads its config once)."""
    workers = workers or os.cpu_count() or 1
    config = create_softhsm_store(state_dir, token_label="keyward-bench")  # noqa: S106 (a label)
    store = TokenKeyStore.open(config, workers=workers, processes=workers)
    try:
        keys = {key_name(spec): _fresh_key(store, f"bench-{key_name(spec)}", spec) for spec in BENCH_KEYS}
        yield BenchToken(store, keys, workers)
    finally:
        store.close()


def _fresh_key(store: TokenKeyStore, label: str, spec: KeySpec) -> TokenPrivateKey:
    store.delete(label)  # a reused --state-dir keeps its token
    return store.generate_key(label, spec)


def raw_signature(key: TokenPrivateKey, message: bytes) -> bytes:
    """One signature as a CA makes it: SHA-256 over a TBS-sized message, PKCS#1 v1.5 or ECDSA."""
    if isinstance(key, TokenRSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, TokenECPrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    raise TypeError(f"cannot benchmark a {type(key).__name__}")


def signature_job(token: BenchToken, key: TokenPrivateKey) -> Job:
    """(a) One raw token signature in a signing process of the store."""
    return functools.partial(token.store.run_signing, raw_signature, key, os.urandom(MESSAGE_SIZE))
