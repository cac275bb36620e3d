"""`keyward est-server --workers N`: serving processes sharing the port, supervised, renewed, stopped."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import re
import signal
import socket
import ssl
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from keyward.bench.observe import with_children
from keyward.errors import UserError
from keyward.est.server import EstServer
from keyward.estserver import serve as est_standalone
from keyward.estserver.child import ServingSetup, standalone_server
from keyward.estserver.state import StandaloneState, prepare_state
from keyward.estserver.workers import ServingProcesses, hold_port
from keyward.host import ListenAddress
from keyward.issuers.tcs.est_ca import (
    BasicCredential,
    ServerCertificate,
    TokenWorkers,
    issue_tls_server_certificate,
)
from keyward.keystore import HsmConfig
from keyward.pki.issue import CertificateAuthority
from keyward.pki.profile import IssuerPolicy
from tests.support.estserver import StandaloneServer
from tests.support.waiting import wait_for, wait_until
from tests.unit.est.helpers import openssl_csr_in

SERVING = 2
ROOT = Path(__file__).resolve().parents[3]
AUDIT_PID = re.compile(r"keyward\.est\.audit\[(\d+)\]: EST enrollment")


@pytest.fixture
def est(tmp_path: Path) -> Iterator[StandaloneServer]:
    server = StandaloneServer(tmp_path / "state", ("--workers", str(SERVING))).start()
    yield server
    server.stop()


def serving_pids(server: StandaloneServer) -> set[int]:
    assert server.process is not None
    return set(with_children(server.process.pid)[1:])


def enroll_status(server: StandaloneServer, csr: Path) -> int:
    return server.curl("simpleenroll", "-u", f"est:{server.password}", data=csr).status


def test_every_serving_process_enrolls_and_one_that_dies_is_replaced(
    est: StandaloneServer, tmp_path: Path
) -> None:
    csr, _ = openssl_csr_in(tmp_path, "device", "/CN=device")
    first = serving_pids(est)
    assert len(first) == SERVING
    statuses = [enroll_status(est, csr) for _ in range(16)]  # a new connection each: the kernel spreads them
    assert statuses == [200] * 16
    assert {int(pid) for pid in AUDIT_PID.findall(est.log())} == first, "each process served some"

    victim = min(first)
    os.kill(victim, signal.SIGKILL)  # what a crashing PKCS#11 module does
    wait_until(lambda: victim not in serving_pids(est), timeout=30)
    assert [enroll_status(est, csr) for _ in range(4)] == [200] * 4, "the others serve meanwhile"
    wait_until(lambda: len(serving_pids(est)) == SERVING, timeout=30)
    wait_until(lambda: "is serving again" in est.log(), timeout=30)
    assert f"(pid {victim}) was killed by signal 9; starting another" in est.log()
    assert [enroll_status(est, csr) for _ in range(6)] == [200] * 6


def test_a_serving_process_told_to_terminate_finishes_cleanly_and_is_replaced(
    est: StandaloneServer, tmp_path: Path
) -> None:
    csr, _ = openssl_csr_in(tmp_path, "device", "/CN=device")
    victim = min(serving_pids(est))
    os.kill(victim, signal.SIGTERM)  # what a service manager sends to every process of the group
    wait_until(lambda: f"(pid {victim}) exited (0); starting another" in est.log(), timeout=30)
    wait_until(lambda: len(serving_pids(est)) == SERVING and victim not in serving_pids(est), timeout=30)
    assert [enroll_status(est, csr) for _ in range(4)] == [200] * 4


def test_stopping_the_server_stops_its_serving_processes(est: StandaloneServer) -> None:
    children = serving_pids(est)
    assert est.stop() == 0
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_serving_processes_of_a_killed_server_exit_and_free_the_port(est: StandaloneServer) -> None:
    assert est.process is not None
    children = serving_pids(est)
    est.process.kill()
    est.process.wait()
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), timeout=15)
    with socket.create_server(("127.0.0.1", est.port)):
        pass  # nobody holds the port any more


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneState]:
    prepared = prepare_state(tmp_path_factory.mktemp("serving") / "state")
    yield prepared
    prepared.store.close()


def served_certificate(port: int, ca_file: Path) -> x509.Certificate:
    context = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


@contextlib.asynccontextmanager
async def serving(
    state: StandaloneState,
    count: int = SERVING,
    *,
    config: HsmConfig | None = None,
    make_server: Callable[[TokenWorkers], EstServer] | None = None,
) -> AsyncIterator[tuple[ServingProcesses, int]]:
    """Serving processes (not started) for ``state``'s server on a free port this process holds."""
    held, port = hold_port(ListenAddress("127.0.0.1", 0))
    setup = ServingSetup(
        make_server=make_server
        or functools.partial(standalone_server, state.ca, state.policy, state.credential, state.server_names),
        tls=state.tls,
        listen=ListenAddress("127.0.0.1", port),
    )
    processes = ServingProcesses(config or state.store.config, setup, count)
    try:
        yield processes, port
    finally:
        await processes.stop()
        for sock in held:
            sock.close()


async def test_a_renewed_tls_certificate_reaches_every_serving_process(state: StandaloneState) -> None:
    async with serving(state) as (processes, port):
        await processes.start()
        assert len(processes.pids) == SERVING
        ca_file = state.files.tls_ca_pem
        before = {served_certificate(port, ca_file).serial_number for _ in range(8)}
        assert before == {state.tls.certificate.serial_number}

        assert state.tls_ca is not None
        renewed = await state.store.run(
            issue_tls_server_certificate, state.tls_ca, state.hostnames, state.policy
        )
        processes.renew_tls(renewed)

        async def only_the_renewed_one_served() -> bool:
            after = [await asyncio.to_thread(served_certificate, port, ca_file) for _ in range(12)]
            return {certificate.serial_number for certificate in after} == {renewed.certificate.serial_number}

        await wait_for(only_the_renewed_one_served, 10, "the renewed certificate from every serving process")
    assert processes.pids == ()


async def test_a_serving_process_that_cannot_log_in_stops_the_start_with_the_reason(
    state: StandaloneState,
) -> None:
    elsewhere = dataclasses.replace(state.store.config, token_label="no-such-token")
    async with serving(state, config=elsewhere) as (processes, _):
        with pytest.raises(
            UserError, match=r"a serving process could not log in to the token: .*no-such-token"
        ):
            await processes.start()
        assert processes.pids == (), "nothing is left running"


def test_a_second_server_on_the_same_port_is_refused_even_by_reuseport(est: StandaloneServer) -> None:
    with pytest.raises(OSError, match="Address already in use"):
        hold_port(ListenAddress("127.0.0.1", est.port))


def server_unless(
    marker: Path,
    ca: CertificateAuthority,
    policy: IssuerPolicy,
    credential: BasicCredential,
    signing: TokenWorkers,
) -> EstServer:
    """Runs in a serving process: the standalone server, or a failure while ``marker`` exists."""
    if marker.exists():
        raise RuntimeError(f"{marker.name} says no")
    return standalone_server(ca, policy, credential, (), signing)


async def test_a_serving_process_that_keeps_failing_is_tried_again_after_growing_pauses(
    state: StandaloneState, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the serving processes import server_unless from here
    caplog.set_level(logging.INFO, logger="keyward.est.workers")
    marker = tmp_path / "refusal"
    refusing = functools.partial(server_unless, marker, state.ca, state.policy, state.credential)
    async with serving(state, 1, make_server=refusing) as (processes, port):
        await processes.start()
        (first,) = processes.pids
        marker.touch()
        os.kill(first, signal.SIGKILL)

        async def logged(text: str) -> None:
            await wait_for(lambda: any(text in message for message in caplog.messages), 30, repr(text))

        await logged("starting serving process 0 again in 2 s")  # the pauses double: 1 s, then 2 s
        refusals = [m for m in caplog.messages if m.startswith("serving process 0 could not serve")]
        assert refusals and refusals[0] == "serving process 0 could not serve: RuntimeError: refusal says no"
        assert "starting serving process 0 again in 1 s" in caplog.messages
        marker.unlink()
        await logged("is serving again")
        ca_file = state.files.tls_ca_pem
        assert (await asyncio.to_thread(served_certificate, port, ca_file)) == state.tls.certificate


async def test_the_tls_certificate_is_renewed_when_due_saved_and_handed_to_the_servers(
    state: StandaloneState, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = state.tls
    monkeypatch.setattr(est_standalone, "renewal_time", lambda certificate: datetime.now(UTC))
    installed: list[ServerCertificate] = []
    renewing = asyncio.create_task(est_standalone._renew_forever(state, installed.append))
    try:
        # the renewal loop has no event to wait on: poll what it hands over
        await wait_for(lambda: installed, 30, "the renewed certificate handed to the servers")
    finally:
        renewing.cancel()
    renewed = installed[0]
    assert renewed.certificate.serial_number != old.certificate.serial_number
    assert state.tls is renewed, "serving processes started from now on get it"
    assert state.files.tls_crt.read_bytes() == renewed.chain_pem, "the next start reuses it"
    assert state.files.tls_key.read_bytes() == renewed.key_pem
    assert stat.S_IMODE(state.files.tls_key.stat().st_mode) == 0o600
    assert state.tls_ca is not None
    renewed.certificate.verify_directly_issued_by(state.tls_ca.certificate)
