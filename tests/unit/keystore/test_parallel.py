"""Signing from many threads at once is correct; the worker pool keeps the event loop free."""

from __future__ import annotations

import asyncio
import ctypes
import threading
from concurrent.futures import ThreadPoolExecutor

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from keyward.keystore import HsmConfig, KeystoreClosed, TokenECPrivateKey, TokenKeyStore, TokenRSAPrivateKey

THREADS = 8
SIGNATURES_PER_THREAD = 10


def test_parallel_signing_from_many_threads_is_correct(
    rsa_key: TokenRSAPrivateKey, ec_key: TokenECPrivateKey
) -> None:
    start_together = threading.Barrier(THREADS, timeout=30)

    def sign_many(worker: int) -> list[tuple[bytes, bytes, bytes]]:
        start_together.wait()
        results = []
        for n in range(SIGNATURES_PER_THREAD):
            message = f"worker {worker} message {n}".encode()
            results.append(
                (
                    message,
                    rsa_key.sign(message, padding.PKCS1v15(), hashes.SHA256()),
                    ec_key.sign(message, ec.ECDSA(hashes.SHA256())),
                )
            )
        return results

    with ThreadPoolExecutor(THREADS) as pool:
        batches = list(pool.map(sign_many, range(THREADS)))

    assert sum(len(batch) for batch in batches) == THREADS * SIGNATURES_PER_THREAD
    for batch in batches:
        for message, rsa_signature, ec_signature in batch:
            rsa_key.public_key().verify(rsa_signature, message, padding.PKCS1v15(), hashes.SHA256())
            ec_key.public_key().verify(ec_signature, message, ec.ECDSA(hashes.SHA256()))


async def test_run_signs_in_the_worker_pool_not_on_the_loop(
    store: TokenKeyStore, ec_key: TokenECPrivateKey
) -> None:
    loop_thread = threading.current_thread()
    signing_threads: set[threading.Thread] = set()

    def sign(message: bytes) -> bytes:
        signing_threads.add(threading.current_thread())
        return ec_key.sign(message, ec.ECDSA(hashes.SHA256()))

    messages = [f"request {n}".encode() for n in range(16)]
    signatures = await asyncio.wait_for(asyncio.gather(*(store.run(sign, m) for m in messages)), timeout=30)

    for message, signature in zip(messages, signatures, strict=True):
        ec_key.public_key().verify(signature, message, ec.ECDSA(hashes.SHA256()))
    assert loop_thread not in signing_threads
    assert all(thread.name.startswith("keyward-token") for thread in signing_threads)


def test_signing_survives_the_token_dropping_every_session(
    store: TokenKeyStore, hsm_config: HsmConfig, rsa_key: TokenRSAPrivateKey
) -> None:
    rsa_key.sign(b"before", padding.PKCS1v15(), hashes.SHA256())
    # What a token reset looks like to the process: every session closed and the user logged out.
    slot = pkcs11.lib(hsm_config.module).get_token(token_label=hsm_config.token_label).slot
    assert ctypes.CDLL(hsm_config.module).C_CloseAllSessions(ctypes.c_ulong(slot.slot_id)) == 0

    signature = rsa_key.sign(b"after", padding.PKCS1v15(), hashes.SHA256())

    rsa_key.public_key().verify(signature, b"after", padding.PKCS1v15(), hashes.SHA256())
    assert store.find_key(rsa_key.label) is not None


async def test_closed_store_refuses_work_clearly(hsm_config: HsmConfig, store: TokenKeyStore) -> None:
    closed = TokenKeyStore.open(hsm_config, workers=1)
    closed.close()
    with pytest.raises(KeystoreClosed, match="open the key store again"):
        await closed.run(closed.labels)
    with pytest.raises(KeystoreClosed):
        closed.labels()
