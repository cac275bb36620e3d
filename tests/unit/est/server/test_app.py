"""The application without TLS, for what needs no real client: a changing CA set and failing CAs."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from keyward.est.server import AuditRecord, EstCa, EstServer
from keyward.est.server.auth import chains_to, issued_by_any
from keyward.est.server.ca import CaUnavailable, ClientIdentity
from keyward.est.wire import decode_certs_only
from tests.support.pki import Issuer, ec_key, name

from ..helpers import PASSWORD, USER, MemoryCa

CSR_BODY = base64.b64encode(
    x509.CertificateSigningRequestBuilder()
    .subject_name(name("plain-client"))
    .sign(ec_key(), hashes.SHA256())
    .public_bytes(serialization.Encoding.DER)
)
ENROLL_HEADERS = {
    "Content-Type": "application/pkcs10",
    "Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
}
ISSUER = Issuer.self_signed("Plain CA")
ClientFactory = Callable[[EstServer], Awaitable[TestClient]]


@pytest.fixture
async def client_for() -> AsyncIterator[ClientFactory]:
    clients: list[TestClient] = []

    async def make(server: EstServer) -> TestClient:
        client = TestClient(TestServer(server.app()))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def test_cas_added_and_removed_at_runtime_are_served_or_not(client_for: ClientFactory) -> None:
    cas: dict[str, EstCa] = {"first": MemoryCa("first", ISSUER)}
    client = await client_for(EstServer(lambda: cas, default_label=None))
    assert (await client.get("/.well-known/est/first/cacerts")).status == 200
    assert (await client.get("/.well-known/est/later/cacerts")).status == 404

    cas["later"] = MemoryCa("later", Issuer.self_signed("Later CA"))
    response = await client.get("/.well-known/est/later/cacerts")
    assert response.status == 200
    assert decode_certs_only(await response.read())[0].subject == name("Later CA")

    del cas["first"]
    assert (await client.get("/.well-known/est/first/cacerts")).status == 404


async def test_without_a_default_label_the_short_path_is_404(client_for: ClientFactory) -> None:
    client = await client_for(EstServer({"only": MemoryCa("only", ISSUER)}, default_label=None))
    response = await client.get("/.well-known/est/cacerts")
    assert response.status == 404
    assert "no default CA" in await response.text()


async def test_serverkeygen_is_refused_without_tls(client_for: ClientFactory) -> None:
    client = await client_for(EstServer({"a": MemoryCa("a", ISSUER)}, default_label="a"))
    response = await client.post("/.well-known/est/serverkeygen", data=CSR_BODY, headers=ENROLL_HEADERS)
    assert response.status == 403
    assert "only served over TLS" in await response.text()


class FailingCa(MemoryCa):
    def __init__(self, failure: Exception, certificates: Sequence[x509.Certificate] | None = None) -> None:
        super().__init__("failing", ISSUER)
        self._failure = failure
        self._certificates = certificates

    def ca_certificates(self) -> Sequence[x509.Certificate]:
        return super().ca_certificates() if self._certificates is None else self._certificates

    async def enroll(
        self, csr: x509.CertificateSigningRequest, client: ClientIdentity, *, renewal: bool
    ) -> list[x509.Certificate]:
        raise self._failure


async def test_ca_that_cannot_sign_gives_503_with_retry_after(client_for: ClientFactory) -> None:
    ca = FailingCa(CaUnavailable("the token is not reachable; retry later", retry_after=30))
    client = await client_for(EstServer({"f": ca}, default_label="f"))
    response = await client.post("/.well-known/est/simpleenroll", data=CSR_BODY, headers=ENROLL_HEADERS)
    assert response.status == 503
    assert response.headers["Retry-After"] == "30"
    assert "token is not reachable" in await response.text()


async def test_ca_without_certificates_gives_503_on_cacerts(client_for: ClientFactory) -> None:
    client = await client_for(EstServer({"f": FailingCa(RuntimeError(), certificates=[])}, default_label="f"))
    response = await client.get("/.well-known/est/cacerts")
    assert response.status == 503


async def test_a_ca_bug_is_a_500_that_reveals_nothing_and_the_server_goes_on(
    client_for: ClientFactory,
) -> None:
    ca = FailingCa(RuntimeError("internal detail that must not reach the client"))
    client = await client_for(EstServer({"f": ca}, default_label="f"))
    response = await client.post("/.well-known/est/simpleenroll", data=CSR_BODY, headers=ENROLL_HEADERS)
    assert response.status == 500
    assert "internal detail" not in await response.text()
    assert (await client.get("/.well-known/est/cacerts")).status == 200


async def test_a_failing_audit_sink_does_not_withhold_the_certificate(client_for: ClientFactory) -> None:
    def broken_sink(record: AuditRecord) -> None:
        raise OSError("disk full")

    server = EstServer({"a": MemoryCa("a", ISSUER)}, default_label="a", audit=broken_sink)
    client = await client_for(server)
    response = await client.post("/.well-known/est/simpleenroll", data=CSR_BODY, headers=ENROLL_HEADERS)
    assert response.status == 200
    assert decode_certs_only(await response.read())[0].subject == name("plain-client")


def test_expired_or_foreign_certificates_are_not_accepted_for_renewal() -> None:
    key = ec_key()
    now = datetime.now(UTC)
    current = ISSUER.issue(name("device"), key.public_key())
    expired = ISSUER.issue(name("device"), key.public_key(), not_before=now - timedelta(days=3))
    foreign = Issuer.self_signed("Other CA").issue(name("device"), key.public_key())
    assert issued_by_any(current, [ISSUER.certificate])
    assert not issued_by_any(expired, [ISSUER.certificate])
    assert not issued_by_any(foreign, [ISSUER.certificate])
    assert chains_to(current, [ISSUER.certificate])
    assert not chains_to(expired, [ISSUER.certificate])
    assert not chains_to(current, [])
    assert not chains_to(foreign, [ISSUER.certificate])
