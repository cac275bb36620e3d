"""Signing processes: issuance jobs run in other processes with their own token sessions, a crash there
costs only the job it had, and neither the PIN nor key material ever travels."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from keyward.issuers.contract import from_certificate_request
from keyward.issuers.objects import RequestFields
from keyward.issuers.tcs.ca import decode_and_sign
from keyward.keystore import (
    HsmConfig,
    KeySpec,
    KeystoreClosed,
    KeystoreError,
    TokenKeyStore,
    TokenNotFound,
    TokenRSAPrivateKey,
)
from keyward.keystore.processes import SigningProcessDied, SigningProcesses
from keyward.pki.errors import RequestError
from keyward.pki.issue import CertificateAuthority, IssuedCertificate, self_signed_ca
from keyward.pki.profile import IssuerPolicy

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def signing_store(hsm_config: HsmConfig) -> AsyncIterator[TokenKeyStore]:
    store = TokenKeyStore.open(hsm_config, workers=1, processes=2)
    try:
        yield store
    finally:
        store.close()


def _ca(store: TokenKeyStore, spec: KeySpec) -> CertificateAuthority:
    key = store.generate_key(f"tcsissuer.tcs.intel.com/test.proc-{uuid.uuid4().hex[:8]}", spec)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signing process test CA")])
    return CertificateAuthority(self_signed_ca(key, name, timedelta(days=30)), key)


async def _sign(store: TokenKeyStore, request: RequestFields, ca: CertificateAuthority) -> IssuedCertificate:
    return await store.run_signing(decode_and_sign, from_certificate_request, request, ca, IssuerPolicy())


def _certificate_request(common_name: str) -> dict[str, object]:
    """A CertificateRequest as the API returns it, for a fresh P-256 key."""
    import base64

    from cryptography.hazmat.primitives import serialization

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = csr.public_bytes(serialization.Encoding.PEM)
    return {
        "metadata": {"name": "r", "namespace": "n", "uid": "u", "managedFields": [{"big": "x" * 4000}]},
        "spec": {"request": base64.b64encode(pem).decode(), "usages": ["server auth"], "duration": "1h"},
    }


async def test_requests_are_decoded_and_signed_in_other_processes(signing_store: TokenKeyStore) -> None:
    ca = _ca(signing_store, KeySpec("RSA", 2048))
    names = [f"svc-{n}.example.com" for n in range(12)]
    jobs = [
        signing_store.run_signing(
            decode_and_sign, from_certificate_request, RequestFields.from_body(_certificate_request(name)),
            ca, IssuerPolicy(),
        )
        for name in names
    ]  # fmt: skip
    issued = await asyncio.gather(*jobs)

    for name, result in zip(names, issued, strict=True):
        assert result.certificate.subject.rfc4514_string() == f"CN={name}"
        ca.verify_issued(result.certificate)  # signed by the CA key in the token
        assert result.ca_certificate == ca.certificate
    pids = await asyncio.gather(*(signing_store.run_signing(os.getpid) for _ in range(8)))
    assert os.getpid() not in pids
    assert set(pids) <= set(signing_store.signing_pids)
    assert len(signing_store.signing_pids) == 2


async def test_a_key_made_after_the_processes_started_signs_there(signing_store: TokenKeyStore) -> None:
    await signing_store.run_signing(os.getpid)  # the processes are up and logged in
    ca = _ca(signing_store, KeySpec("ECDSA", 256))
    request = RequestFields.from_body(_certificate_request("late.example.com"))

    issued = await signing_store.run_signing(
        decode_and_sign, from_certificate_request, request, ca, IssuerPolicy()
    )

    ca.verify_issued(issued.certificate)


async def test_errors_come_back_with_their_type_and_message(signing_store: TokenKeyStore) -> None:
    ca = _ca(signing_store, KeySpec("ECDSA", 256))
    broken = RequestFields.from_body({"spec": {"request": "bm90IGEgQ1NS"}})  # base64 of "not a CSR"

    with pytest.raises(RequestError, match="not a PEM or DER PKCS#10"):
        await signing_store.run_signing(decode_and_sign, from_certificate_request, broken, ca, IssuerPolicy())
    with pytest.raises(KeystoreError, match="could not send back its result"):
        await signing_store.run_signing(threading.Lock)  # a result that cannot travel
    assert await signing_store.run_signing(int, "42") == 42  # and the process goes on


async def test_a_crashed_process_fails_only_its_job_and_is_replaced(signing_store: TokenKeyStore) -> None:
    ca = _ca(signing_store, KeySpec("ECDSA", 256))
    await asyncio.gather(*(signing_store.run_signing(os.getpid) for _ in range(4)))
    victim, survivor = signing_store.signing_pids
    stuck = [asyncio.ensure_future(signing_store.run_signing(time.sleep, 30)) for _ in range(2)]
    # Both processes are asleep in their job: a job in a child process reports nothing until it ends, so
    # there is no condition to wait for; the pause only lets the jobs reach the children.
    await asyncio.sleep(0.5)

    os.kill(victim, signal.SIGKILL)
    done, _ = await asyncio.wait(stuck, timeout=10, return_when=asyncio.FIRST_COMPLETED)

    assert len(done) == 1
    with pytest.raises(SigningProcessDied, match="killed by signal 9"):
        done.pop().result()
    request = RequestFields.from_body(_certificate_request("after-crash.example.com"))
    issued = await signing_store.run_signing(
        decode_and_sign, from_certificate_request, request, ca, IssuerPolicy()
    )
    ca.verify_issued(issued.certificate)
    assert victim not in signing_store.signing_pids
    assert survivor in signing_store.signing_pids
    for job in stuck:
        job.cancel()


async def test_the_pin_reaches_the_processes_only_through_their_socket(
    signing_store: TokenKeyStore, hsm_config: HsmConfig
) -> None:
    await asyncio.gather(*(signing_store.run_signing(os.getpid) for _ in range(4)))
    for pid in signing_store.signing_pids:
        for place in ("cmdline", "environ"):
            seen = await asyncio.to_thread(Path(f"/proc/{pid}/{place}").read_bytes)
            assert hsm_config.user_pin.encode() not in seen


def test_a_token_key_pickles_as_a_reference_not_as_key_material(signing_store: TokenKeyStore) -> None:
    key = signing_store.generate_key(
        f"tcsissuer.tcs.intel.com/test.pickle-{uuid.uuid4().hex[:8]}", KeySpec("RSA", 2048)
    )
    assert isinstance(key, TokenRSAPrivateKey)

    pickled = pickle.dumps(key)

    assert len(pickled) < 1024  # CKA_ID, label, token and public key: no private key fits in that
    # Outside a signing process the reference leads nowhere, and says so.
    script = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"
    result = subprocess.run(
        [sys.executable, "-c", script], input=pickled, capture_output=True, timeout=30, check=False
    )
    assert result.returncode != 0
    assert b"can only be sent to their key store's signing processes" in result.stderr


async def test_a_process_that_cannot_log_in_fails_the_job_with_the_token_error(hsm_config: HsmConfig) -> None:
    processes = SigningProcesses(replace(hsm_config, user_pin="wrong-pin-0000"), 1)
    try:
        with pytest.raises(KeystoreError) as failure:
            await processes.run(os.getpid)
    finally:
        processes.close()
    assert "PIN" in str(failure.value) or "log in" in str(failure.value)
    assert "wrong-pin-0000" not in str(failure.value)


async def test_closing_fails_waiting_jobs_and_stops_the_processes(hsm_config: HsmConfig) -> None:
    store = TokenKeyStore.open(hsm_config, workers=1, processes=1)
    await store.run_signing(os.getpid)
    (pid,) = store.signing_pids
    waiting = [asyncio.ensure_future(store.run_signing(time.sleep, 0.2)) for _ in range(5)]
    await asyncio.sleep(0.05)  # one job reaches the process (nothing to observe), the others wait

    store.close()

    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert any(isinstance(result, KeystoreClosed) for result in results)
    assert not await asyncio.to_thread(Path(f"/proc/{pid}").exists)  # stopped and reaped
    with pytest.raises(KeystoreClosed):
        await store.run_signing(os.getpid)


async def test_without_processes_issuance_jobs_run_in_the_worker_threads(hsm_config: HsmConfig) -> None:
    with TokenKeyStore.open(hsm_config, workers=1) as store:
        assert store.signing_processes == 0
        assert await store.run_signing(os.getpid) == os.getpid()
        thread = await store.run_signing(lambda: threading.current_thread().name)
        assert thread.startswith("keyward-token")
        key = store.generate_key(f"test.threads-{uuid.uuid4().hex[:8]}", KeySpec("RSA", 2048))
        assert isinstance(key, TokenRSAPrivateKey)
        signature = await store.run_signing(key.sign, b"m", padding.PKCS1v15(), hashes.SHA256())
    public = key.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(signature, b"m", padding.PKCS1v15(), hashes.SHA256())


class _ForgetfulModule:
    """A module whose first slot lists leave the token out, as SoftHSM2 does in a process that loads it
    while another process logs in (seen in a benchmark run: that process then made a second token)."""

    def __init__(self, misses: int) -> None:
        self.misses = misses
        self.events: list[str] = []

    def get_tokens(self, token_label: str) -> list[str]:
        self.events.append("list")
        if self.misses:
            self.misses -= 1
            return []
        return [f"token {token_label}"]

    def initialize(self) -> None:
        self.events.append("initialize")


@pytest.fixture
def forgetful(monkeypatch: pytest.MonkeyPatch) -> _ForgetfulModule:
    from keyward.keystore import module

    library = _ForgetfulModule(misses=2)
    monkeypatch.setattr(module, "finalize", lambda path: library.events.append("finalize"))
    monkeypatch.setattr(module, "TOKEN_LOOKUP_PAUSE", 0.0)
    return library


FAKE_MODULE = HsmConfig(module="/nowhere/forgetful-pkcs11.so", token_label="busy", user_pin="1234")


def test_a_token_left_out_of_the_slot_list_is_found_after_the_module_reads_its_tokens_again(
    forgetful: _ForgetfulModule,
) -> None:
    from keyward.keystore.module import open_or_initialize_token

    token = open_or_initialize_token(forgetful, FAKE_MODULE)  # type: ignore[arg-type]

    assert token == "token busy"  # the existing token, not a new one
    assert forgetful.events == ["list", "finalize", "initialize"] * 2 + ["list"]


def test_a_signing_process_never_makes_a_token_of_its_own(
    forgetful: _ForgetfulModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keyward.keystore import module

    monkeypatch.setattr(module, "TOKEN_LOOKUPS", 2)  # the token stays missing
    monkeypatch.setattr(module, "_init_token", lambda *args: pytest.fail("a token was initialized"))

    with pytest.raises(TokenNotFound, match="there is no token 'busy'"):
        module.open_token(forgetful, FAKE_MODULE)  # type: ignore[arg-type]


def test_the_module_is_not_read_again_while_another_key_store_uses_it(
    forgetful: _ForgetfulModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keyward.keystore import module

    monkeypatch.setitem(module._users, FAKE_MODULE.module, 2)  # re-initializing would end its sessions

    assert module.find_token_settled(forgetful, FAKE_MODULE) is None  # type: ignore[arg-type]
    assert forgetful.events == ["list"]


async def test_closing_kills_a_process_stuck_in_its_job_instead_of_hanging(hsm_config: HsmConfig) -> None:
    store = TokenKeyStore.open(hsm_config, workers=1, processes=2)
    await asyncio.gather(*(store.run_signing(os.getpid) for _ in range(4)))
    pids = store.signing_pids
    stuck = [asyncio.ensure_future(store.run_signing(time.sleep, 60)) for _ in range(2)]  # a hung module
    await asyncio.sleep(0.3)  # the jobs reach the processes (a job in a child reports nothing until it ends)

    started = time.monotonic()
    store.close()

    assert time.monotonic() - started < 10, "close waited for the stuck jobs"
    for job in stuck:
        with pytest.raises(KeystoreClosed):
            await job
    for pid in pids:
        assert not await asyncio.to_thread(Path(f"/proc/{pid}").exists)
