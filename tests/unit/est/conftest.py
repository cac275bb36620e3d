"""One PKI and one EST server for the whole area: the server serves two CAs, one under a label with '/'."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keyward.est.server import AuditRecord, EstServer, EstTimeouts, ServerTls
from keyward.est.wire import decode_csrattrs

from .helpers import LoopThread, MemoryCa, Pki, RunningServer

# RFC 7030 section 4.5.2's example: challengePassword, an EC key on P-384, macAddress, ecdsa-with-SHA384.
RFC7030_CSRATTRS = (
    "MEEGCSqGSIb3DQEJBzASBgcqhkjOPQIBMQcGBSuBBAAiMBYGCSqGSIb3DQEJDjEJBgcrBgEBAQEWBggqhkjOPQQDAw=="
)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("est-pki"))


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


def start_server(pki: Pki, loop_thread: LoopThread, **options: object) -> RunningServer:
    alpha = MemoryCa(
        "alpha",
        pki.alpha,
        client_trust=[pki.bootstrap_ca.certificate],
        attributes=decode_csrattrs(RFC7030_CSRATTRS),
    )
    beta = MemoryCa("beta/sub", pki.beta)
    audit: list[AuditRecord] = []
    server = EstServer(
        {"alpha": alpha, "beta/sub": beta},
        default_label="alpha",
        audit=audit.append,
        **options,
    )
    tls = ServerTls(pki.server_chain_pem(), pki.server_key_pem(), server.client_trust_anchors())
    loop_thread.run(server.start("127.0.0.1", 0, tls.context))
    return RunningServer(server, tls, loop_thread, audit)


@pytest.fixture(scope="session")
def est(pki: Pki, loop_thread: LoopThread) -> Iterator[RunningServer]:
    running = start_server(pki, loop_thread, max_body=16 * 1024, timeouts=EstTimeouts(idle=10.0, body=5.0))
    yield running
    loop_thread.run(running.server.stop())
