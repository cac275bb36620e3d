"""The log of a ``keyward est-server`` process under hostile requests: no password, no forged line.

The requests and the checks are those of tests/unit/est/server/test_logs.py (the in-process server).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.estserver import StandaloneServer
from tests.unit.est.server.test_logs import TIMESTAMPED, exchange, hostile_csr, hostile_requests, leaked_parts


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneServer]:
    server = StandaloneServer(tmp_path_factory.mktemp("est-logs") / "state").start()
    yield server
    server.stop()


def test_the_est_server_process_logs_no_password_and_no_forged_line(
    standalone: StandaloneServer, tmp_path: Path
) -> None:
    body = hostile_csr(tmp_path)
    password = standalone.password
    context = ssl.create_default_context(cafile=str(standalone.tls_ca_pem))
    answers = {
        name: exchange(context, standalone.port, raw)
        for name, raw in hostile_requests(password, body).items()
    }
    # keyward's issuance policy refuses control characters in a subject (the in-process CA above has no
    # such policy): the refusal quotes the subject, escaped, and forges no line either.
    refused = answers["cr-lf-in-the-subject"]
    assert refused.startswith(b"HTTP/1.1 400") and b"policy" in refused and b"\\r\\n" in refused
    assert answers["bearer-token"].startswith(b"HTTP/1.1 401")
    standalone.stop()
    log = standalone.log()
    assert "malformed HTTP request" in log and "EST refused" in log and "FORGED" in log
    assert not leaked_parts(log, password)
    assert "\r" not in log
    strays = [line for line in log.splitlines() if not TIMESTAMPED.match(line)]
    assert strays == [], "every line is a log record of the server: no forged line, no traceback"
