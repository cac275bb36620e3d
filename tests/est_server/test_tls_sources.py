"""Where the operator's EST server gets its TLS certificate: a TCS issuer (renewed) or a Secret."""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509

from keyward.issuers.signer_names import TCS_GROUP, IssuerRef
from keyward.issuers.tcs.est_ca import TokenWorkers, issue_tls_server_certificate, renewal_time
from keyward.operator.est_server.service import EstService, IssuerTls, SecretTls
from keyward.operator.services import ReadyCa, Runtime
from keyward.operator.settings import Settings
from keyward.pki.pem import pem_chain
from keyward.pki.profile import IssuerPolicy

from .memory import ThreadWorkers, memory_ca

REF = IssuerRef(TCS_GROUP, "TCSIssuer", "tls-ca", "ops")


class Tokens:
    def __init__(self, workers: ThreadWorkers) -> None:
        self.workers = workers

    async def get(self) -> TokenWorkers:
        return self.workers


def memo_with_tls_issuer(workers: ThreadWorkers) -> Runtime:
    memo = Runtime(settings=Settings())
    ca = memory_ca(common_name="tls-ca")
    memo.cas[REF.signer_name] = ReadyCa(REF, ca, IssuerPolicy(), pem_chain([ca.certificate]))
    memo.token = Tokens(workers)  # type: ignore[assignment]
    return memo


async def test_the_issued_tls_certificate_is_renewed_at_two_thirds_of_its_lifetime() -> None:
    clock = [datetime.now(UTC)]
    workers = ThreadWorkers()
    source = IssuerTls(memo_with_tls_issuer(workers), REF, ("est.example", "10.0.0.5"), now=lambda: clock[0])
    first = await source.current()
    assert first is not None and workers.calls == ["issue_tls_server_certificate"]
    leaf = x509.load_pem_x509_certificates(first.chain_pem)[0]
    due = renewal_time(leaf)
    assert abs(source.seconds_until_due() - (due - clock[0]).total_seconds()) < 1

    clock[0] = due - timedelta(seconds=1)
    assert await source.current() is first, "not due yet: the same certificate"
    clock[0] = due + timedelta(seconds=1)
    renewed = await source.current()
    assert renewed is not None and renewed != first
    assert x509.load_pem_x509_certificates(renewed.chain_pem)[0].serial_number != leaf.serial_number
    assert len(workers.calls) == 2


async def test_the_issued_tls_certificate_waits_for_its_issuer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    memo = memo_with_tls_issuer(ThreadWorkers())
    ready = memo.cas.pop(REF.signer_name)
    source = IssuerTls(memo, REF, ("est.example",))
    assert await source.current() is None
    assert any("waits for TCSIssuer ops/tls-ca to be ready" in m for m in caplog.messages)
    memo.cas[REF.signer_name] = ready
    assert await source.current() is not None


def tls_body(chain: bytes, key: bytes, type: str = "kubernetes.io/tls") -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ops", "name": "est-tls"},
        "type": type,
        "data": {"tls.crt": base64.b64encode(chain).decode(), "tls.key": base64.b64encode(key).decode()},
    }


class SecretApi:
    """The one API call SecretTls makes: GET the Secret (when it starts, then every few minutes)."""

    def __init__(self, body: dict[str, Any] | None) -> None:
        self.body, self.gets = body, 0

    async def find(self, resource: Any, name: str, namespace: str) -> dict[str, Any] | None:
        self.gets += 1
        return self.body


async def test_a_tls_secret_is_read_then_followed_through_watch_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    issued = issue_tls_server_certificate(memory_ca(), ["est.example"], IssuerPolicy())
    api = SecretApi(tls_body(issued.chain_pem, issued.key_pem, type="Opaque"))
    memo = Runtime(settings=Settings())
    memo.kube = api  # type: ignore[assignment]
    source = SecretTls(memo, "ops/est-tls")
    assert source.watches("ops", "est-tls") and not source.watches("other", "est-tls")

    assert await source.current() is None
    assert any("must be of type kubernetes.io/tls with tls.crt and tls.key" in m for m in caplog.messages)
    assert not source.offer("ADDED", {"metadata": {"namespace": "ops", "name": "unrelated"}})
    assert source.offer("MODIFIED", tls_body(issued.chain_pem, issued.key_pem))
    material = await source.current()
    assert material is not None and (material.chain_pem, material.key_pem) == (
        issued.chain_pem,
        issued.key_pem,
    )
    assert api.gets == 1, "events, not GETs, between the polls"
    assert source.seconds_until_due() > 250
    assert issued.key_pem.decode() not in caplog.text
    assert repr(material) == "TlsMaterial(<certificate chain>, <key>)", "the key never shows in logs"


async def test_an_issuer_with_spec_est_but_no_tls_source_is_reported_not_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    memo = memo_with_tls_issuer(ThreadWorkers())
    ca = memory_ca(common_name="devices")
    ref = IssuerRef(TCS_GROUP, "TCSIssuer", "devices", "ops")
    memo.cas[ref.signer_name] = ReadyCa(ref, ca, IssuerPolicy(), pem_chain([ca.certificate]), est={})
    service = EstService(memo)
    service.on_ca_ready(ref.signer_name)
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not any("TCSIssuer ops/devices is not served over EST" in m for m in caplog.messages):
            assert asyncio.get_running_loop().time() < deadline, caplog.messages
            await asyncio.sleep(0.01)
    finally:
        await service.stop()
    (message,) = [m for m in caplog.messages if "not served over EST" in m]
    assert (
        "start the operator with --est-tls-secret NS/NAME, or --est-issuer KIND/NS/NAME and --est-hostnames"
        in message
    )
    assert service.server is None
