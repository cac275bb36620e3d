"""Where the operator's EST server gets its TLS certificate: a TCS issuer (renewed) or a Secret."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509

from keyward.host import ListenAddress
from keyward.issuers.signer_names import IssuerRef
from keyward.issuers.tcs.est_ca import TokenWorkers, issue_tls_server_certificate, renewal_time
from keyward.kube.resources import TCS_GROUP
from keyward.operator.est_server.service import EstService
from keyward.operator.est_server.tls_sources import IssuerTls, SecretTls
from keyward.operator.secrets import SecretStore
from keyward.operator.status import Events
from keyward.operator.tcs.cas import ReadyCa, ReadyCas
from keyward.pki.pem import pem_chain
from keyward.pki.profile import IssuerPolicy
from tests.support.pki import ThreadWorkers, memory_ca
from tests.support.waiting import wait_for
from tests.unit.operator.test_secrets import Follows

REF = IssuerRef(TCS_GROUP, "TCSIssuer", "tls-ca", "ops")


class Tokens:
    def __init__(self, workers: ThreadWorkers) -> None:
        self.workers = workers

    async def get(self) -> TokenWorkers:
        return self.workers


def tls_issuer() -> tuple[ReadyCas, ReadyCa]:
    cas = ReadyCas()
    ca = memory_ca(common_name="tls-ca")
    ready = ReadyCa(REF, ca, IssuerPolicy(), pem_chain([ca.certificate]))
    cas.ready(ready)
    return cas, ready


async def test_the_issued_tls_certificate_is_renewed_at_two_thirds_of_its_lifetime() -> None:
    clock = [datetime.now(UTC)]
    workers = ThreadWorkers()
    cas, _ = tls_issuer()
    source = IssuerTls(cas, Tokens(workers), REF, ("est.example", "10.0.0.5"), now=lambda: clock[0])  # type: ignore[arg-type]
    first = await source.current()
    assert first is not None and workers.calls == ["issue_tls_server_certificate"]
    leaf = x509.load_pem_x509_certificates(first.chain_pem)[0]
    due = renewal_time(leaf)
    assert abs((source.seconds_until_due() or 0) - (due - clock[0]).total_seconds()) < 1

    clock[0] = due - timedelta(seconds=1)
    assert await source.current() is first, "not due yet: the same certificate"
    clock[0] = due + timedelta(seconds=1)
    renewed = await source.current()
    assert renewed is not None and renewed != first
    assert x509.load_pem_x509_certificates(renewed.chain_pem)[0].serial_number != leaf.serial_number
    assert len(workers.calls) == 2


async def test_the_issued_tls_certificate_waits_for_its_issuer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    cas, ready = tls_issuer()
    cas.discard(REF.signer_name)
    source = IssuerTls(cas, Tokens(ThreadWorkers()), REF, ("est.example",))  # type: ignore[arg-type]
    assert await source.current() is None
    assert any("waits for TCSIssuer ops/tls-ca to be ready" in m for m in caplog.messages)
    cas.ready(ready)
    assert await source.current() is not None


def tls_body(chain: bytes, key: bytes, type: str = "kubernetes.io/tls") -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ops", "name": "est-tls"},
        "type": type,
        "data": {"tls.crt": base64.b64encode(chain).decode(), "tls.key": base64.b64encode(key).decode()},
    }


async def test_a_tls_secret_is_read_then_followed_through_its_watch(caplog: pytest.LogCaptureFixture) -> None:
    issued = issue_tls_server_certificate(memory_ca(), ["est.example"], IssuerPolicy())
    follows = Follows({("ops", "est-tls"): tls_body(issued.chain_pem, issued.key_pem, type="Opaque")})
    secrets = SecretStore(follow=follows)
    source = SecretTls(secrets, "ops/est-tls")
    assert source.watches("ops", "est-tls") and not source.watches("other", "est-tls")

    assert await source.current() is None
    assert any("must be of type kubernetes.io/tls with tls.crt and tls.key" in m for m in caplog.messages)
    await secrets.apply("MODIFIED", tls_body(issued.chain_pem, issued.key_pem))
    material = await source.current()
    assert material is not None and (material.chain_pem, material.key_pem) == (
        issued.chain_pem,
        issued.key_pem,
    )
    assert follows.followed == [("ops", "est-tls")], "one narrowed watch, no GET per request"
    assert source.seconds_until_due() is None, "a change of the Secret wakes the server"
    assert issued.key_pem.decode() not in caplog.text
    assert repr(material) == "TlsMaterial(<certificate chain>, <key>)", "the key never shows in logs"
    await secrets.close()


async def test_an_issuer_with_spec_est_but_no_tls_source_is_reported_not_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    cas, _ = tls_issuer()
    ca = memory_ca(common_name="devices")
    ref = IssuerRef(TCS_GROUP, "TCSIssuer", "devices", "ops")
    events = Events(None)  # type: ignore[arg-type]
    posted: list[str] = []
    events.post = lambda body, reason, message, warning=False: posted.append(reason)  # type: ignore[method-assign]
    service = EstService(
        cas=cas,
        tokens=Tokens(ThreadWorkers()),  # type: ignore[arg-type]
        secrets=SecretStore(follow=Follows({})),
        events=events,
        source=None,
        listen=ListenAddress("127.0.0.1", 0),
        operator_namespace="keyward-system",
    )
    body = {"kind": "TCSIssuer", "metadata": {"name": "devices", "namespace": "ops"}, "spec": {"est": {}}}
    service.claims.observe("ADDED", body)
    cas.ready(ReadyCa(ref, ca, IssuerPolicy(), pem_chain([ca.certificate]), est={}, event_body={"kind": "x"}))
    try:
        await wait_for(
            lambda: any("TCSIssuer ops/devices is not served over EST" in m for m in caplog.messages),
            10,
            "the log line saying the issuer is not served",
        )
    finally:
        await service.stop()
    (message,) = [m for m in caplog.messages if "not served over EST" in m]
    assert (
        "start the operator with --est-tls-secret NS/NAME, or --est-issuer KIND/NS/NAME and --est-hostnames"
        in message
    )
    assert service.server is None
    assert posted == ["EstNotServed"], "the issuer gets a Warning Event saying so"
