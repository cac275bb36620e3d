"""The client against a libest-like server that closes every connection after one answer, unannounced.

Each test runs several operations with one client, so that every request after the first would go out on
a connection the server has closed; each must reach the server on a fresh one and succeed.
"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from keyward.est.client import BasicAuth, ClientCertificate, DigestAuth, EstClient, EstError
from keyward.est.wire import decode_csrattrs
from tests.support.pki import name

from ..conftest import RFC7030_CSRATTRS
from ..helpers import PASSWORD, USER, Pki
from .client_fixtures import endpoint, identity, make_csr
from .closing_server import Authentication, ClosingEstServer, closing_est_server


def spki(certificate_or_csr: x509.Certificate | x509.CertificateSigningRequest) -> bytes:
    return certificate_or_csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def one_answer_per_connection(server: ClosingEstServer) -> None:
    connections = [answered.connection for answered in server.answered]
    assert len(connections) == len(set(connections)), server.answered


async def enroll_twice(client: EstClient, server: ClosingEstServer, pki: Pki) -> None:
    """cacerts, then two enrollments: three operations, each after a connection the server closed."""
    assert await client.cacerts() == [pki.alpha.certificate]
    for device in ("first-device", "second-device"):
        csr, _ = make_csr(device)
        chain = await client.simpleenroll(csr)
        assert isinstance(chain, list)
        assert chain[0].subject == name(device)
        assert spki(chain[0]) == spki(csr)
        chain[0].verify_directly_issued_by(pki.alpha.certificate)
    one_answer_per_connection(server)


async def test_digest_retry_goes_out_on_a_fresh_connection(pki: Pki) -> None:
    async with (
        closing_est_server(pki, "digest") as server,
        EstClient(endpoint(pki, server.port), auth=DigestAuth(USER, PASSWORD)) as client,
    ):
        await enroll_twice(client, server, pki)
    enrollments = [(a.status, (a.authorization or "").split(" ")[0]) for a in server.answered[1:]]
    # The challenge (401, no credentials), then the Digest answer on another connection; httpx answers
    # later requests with the known challenge right away, so the second enrollment may need no 401.
    assert enrollments[:2] == [(401, ""), (200, "Digest")]
    assert [e for e in enrollments if e[0] == 200] == [(200, "Digest")] * 2
    assert server.reused, "the client never met a closed connection: the test proves nothing"
    assert all(PASSWORD not in (a.authorization or "") for a in server.answered)


async def test_basic_enrollments_on_a_server_that_closes_every_connection(pki: Pki) -> None:
    async with (
        closing_est_server(pki, "basic") as server,
        EstClient(endpoint(pki, server.port), auth=BasicAuth(USER, PASSWORD)) as client,
    ):
        await enroll_twice(client, server, pki)
    assert [a.status for a in server.answered] == [200, 200, 200]
    assert server.reused


async def test_client_certificate_enrollments_on_a_server_that_closes_every_connection(pki: Pki) -> None:
    bootstrap: ClientCertificate = identity(pki.bootstrap_certificate, pki.bootstrap_key)
    async with (
        closing_est_server(pki, "certificate") as server,
        EstClient(endpoint(pki, server.port), client_cert=bootstrap) as client,
    ):
        await enroll_twice(client, server, pki)
    assert [a.status for a in server.answered] == [200, 200, 200]
    assert server.reused


@pytest.mark.parametrize("authentication", ["basic", "digest"])
async def test_csrattrs_with_trailing_nul_bytes_and_line_breaks(
    pki: Pki, authentication: Authentication
) -> None:
    auth = BasicAuth(USER, PASSWORD) if authentication == "basic" else DigestAuth(USER, PASSWORD)
    async with (
        closing_est_server(pki, authentication) as server,
        EstClient(endpoint(pki, server.port), auth=auth) as client,
    ):
        assert await client.cacerts() == [pki.alpha.certificate]
        assert await client.csrattrs() == decode_csrattrs(RFC7030_CSRATTRS)
    one_answer_per_connection(server)


async def test_a_request_the_server_drops_on_a_fresh_connection_is_not_sent_again(pki: Pki) -> None:
    # Only a request on a reused connection is sent again; here the server read it and may have acted.
    async with (
        closing_est_server(pki, "basic", answers=False) as server,
        EstClient(endpoint(pki, server.port), auth=BasicAuth(USER, PASSWORD)) as client,
    ):
        with pytest.raises(EstError) as failed:
            await client.simpleenroll(make_csr("device")[0])
    assert failed.value.kind == "server"
    assert "closed the connection without a valid answer" in str(failed.value)
    assert [(a.method, a.path.rpartition("/")[2]) for a in server.answered] == [("POST", "simpleenroll")]
