"""Trust, redirects and time limits: what the client refuses to do, and how it says so."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509

from keyward.est.client import BasicAuth, EstClient, EstEndpoint, EstError
from tests.support.pki import Issuer, ec_key, name, pem

from ..helpers import PASSWORD, USER, Pki
from .client_fixtures import (
    PeerFactory,
    endpoint,
    identity,
    issue_from_body,
    make_csr,
    openssl_s_server,
    peer_fixture,  # noqa: F401 - provides the fixture 'peer'
    pkcs7_response,
    server_identity,
)

BASIC = BasicAuth(USER, PASSWORD)
BASIC_HEADER = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
ENROLL = "/.well-known/est/simpleenroll"


def redirect(status: int, location: str) -> web.Response:
    return web.Response(status=status, headers={"Location": location})


async def issue_if_authorized(pki: Pki, request: web.Request) -> web.StreamResponse:
    if request.headers.get("Authorization") != BASIC_HEADER:
        return web.Response(status=401, text="log in", headers={"WWW-Authenticate": 'Basic realm="est"'})
    return pkcs7_response(await issue_from_body(pki.alpha, request))


async def enroll_error(client: EstClient) -> EstError:
    async with client:
        with pytest.raises(EstError) as refused:
            await client.simpleenroll(make_csr("device")[0])
    return refused.value


# --- server authentication --------------------------------------------------------------------------------


async def test_server_certificate_for_another_host_is_a_tls_error(pki: Pki, peer: PeerFactory) -> None:
    server = await peer(
        issue_if_authorized, tls=server_identity(pki.tls_root, [x509.DNSName("other.example")])
    )
    error = await enroll_error(EstClient(endpoint(pki, server.port, host="localhost"), auth=BASIC))
    assert error.kind == "tls"
    assert "not issued for the host name" in str(error)
    assert server.seen == []  # no request, so no credentials, went to that server


@pytest.mark.parametrize(
    "weak",
    [("-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"), ("-tls1_2", "-cipher", "AES128-GCM-SHA256:AES256-SHA")],
    ids=["tls1.1", "no-forward-secrecy"],
)
async def test_weak_tls_servers_are_refused(pki: Pki, tmp_path: Path, weak: tuple[str, ...]) -> None:
    chain, key = server_identity(pki.tls_root)
    async with openssl_s_server(tmp_path, chain, key, *weak) as server:
        client = EstClient(endpoint(pki, server.port))
        with pytest.raises(EstError) as refused:
            await client.cacerts()
        await client.aclose()
    assert refused.value.kind == "tls"
    assert "TLS 1.2 or later with forward-secret ciphers" in str(refused.value)


async def test_client_certificate_alert_of_an_openssl_server_is_reported(pki: Pki, tmp_path: Path) -> None:
    chain, key = server_identity(pki.tls_root)
    (tmp_path / "clients.pem").write_bytes(pem(pki.bootstrap_ca.certificate))
    verify = ("-Verify", "1", "-verify_return_error", "-CAfile", str(tmp_path / "clients.pem"))
    stranger_key = ec_key()
    stranger = identity(
        Issuer.self_signed("Stranger").issue(name("x"), stranger_key.public_key()), stranger_key
    )
    async with openssl_s_server(tmp_path, chain, key, *verify) as server:
        client = EstClient(endpoint(pki, server.port), client_cert=stranger)
        with pytest.raises(EstError) as refused:
            await client.cacerts()
        await client.aclose()
    assert refused.value.kind == "tls"
    assert refused.value.client_certificate_refused
    assert "UNKNOWN_CA" in str(refused.value)


async def test_cacerts_sends_no_credentials(pki: Pki, peer: PeerFactory) -> None:
    async def cacerts(_request: web.Request) -> web.StreamResponse:
        return pkcs7_response([pki.alpha.certificate])

    server = await peer(cacerts)
    async with EstClient(endpoint(pki, server.port), auth=BASIC) as client:
        assert await client.cacerts() == [pki.alpha.certificate]
    assert server.seen[0].authorization is None


def test_endpoint_without_trust_anchors_is_refused() -> None:
    with pytest.raises(EstError) as refused:
        EstEndpoint("est.example", 443, "", ())
    assert refused.value.kind == "config"
    assert "spec.cacert" in str(refused.value)


# --- redirects --------------------------------------------------------------------------------------------


async def test_same_origin_redirect_keeps_method_body_and_credentials(pki: Pki, peer: PeerFactory) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == ENROLL:
            return redirect(307, "/.well-known/est/moved/simpleenroll")
        return await issue_if_authorized(pki, request)

    server = await peer(handle)
    async with EstClient(endpoint(pki, server.port), auth=BASIC) as client:
        chain = await client.simpleenroll(make_csr("moved-device")[0])
    assert isinstance(chain, list)
    assert chain[0].subject == name("moved-device")
    assert [(s.path, s.authorization) for s in server.seen] == [
        (ENROLL, BASIC_HEADER),
        ("/.well-known/est/moved/simpleenroll", BASIC_HEADER),
    ]


async def test_redirect_to_another_host_gets_no_credentials(pki: Pki, peer: PeerFactory) -> None:
    elsewhere = await peer(lambda request: issue_if_authorized(pki, request))

    async def handle(_request: web.Request) -> web.StreamResponse:
        return redirect(308, f"https://localhost:{elsewhere.port}{ENROLL}")

    server = await peer(handle)
    error = await enroll_error(EstClient(endpoint(pki, server.port), auth=BASIC))
    assert (error.kind, error.status) == ("auth", 401)
    assert f"localhost:{elsewhere.port}" in str(error)
    assert [s.authorization for s in elsewhere.seen] == [None]


async def test_redirect_to_an_untrusted_server_is_a_tls_error(pki: Pki, peer: PeerFactory) -> None:
    rogue = await peer(
        lambda request: issue_if_authorized(pki, request),
        tls=server_identity(Issuer.self_signed("Rogue Root")),
    )

    async def handle(_request: web.Request) -> web.StreamResponse:
        return redirect(302, f"https://127.0.0.1:{rogue.port}{ENROLL}")

    server = await peer(handle)
    error = await enroll_error(EstClient(endpoint(pki, server.port), auth=BASIC))
    assert error.kind == "tls"
    assert "does not verify against the configured trust anchors" in str(error)
    assert rogue.seen == []


@pytest.mark.parametrize(
    ("location", "complaint"),
    [("http://127.0.0.1/.well-known/est/simpleenroll", "only HTTPS"), (ENROLL, "more than 3 redirects")],
    ids=["to-plain-http", "loop"],
)
async def test_refused_redirects(pki: Pki, peer: PeerFactory, location: str, complaint: str) -> None:
    async def handle(_request: web.Request) -> web.StreamResponse:
        return redirect(301, location)

    server = await peer(handle)
    error = await enroll_error(EstClient(endpoint(pki, server.port), auth=BASIC))
    assert error.kind == "redirect"
    assert complaint in str(error)
    assert len(server.seen) <= 4


# --- time limits ------------------------------------------------------------------------------------------


async def test_a_server_that_never_answers_times_out(pki: Pki, peer: PeerFactory) -> None:
    async def silent(_request: web.Request) -> web.StreamResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    server = await peer(silent)
    started = time.monotonic()
    error = await enroll_error(EstClient(endpoint(pki, server.port), auth=BASIC, timeout=0.3))
    assert error.kind == "timeout"
    assert "raise the timeout" in str(error)
    assert time.monotonic() - started < 5


async def test_a_server_dripping_bytes_is_cut_at_the_deadline(pki: Pki, peer: PeerFactory) -> None:
    async def dripping(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/pkcs7-mime"})
        await response.prepare(request)
        while True:
            await response.write(b"M")
            await asyncio.sleep(0.05)

    server = await peer(dripping)
    client = EstClient(endpoint(pki, server.port), auth=BASIC, timeout=0.4, connect_timeout=0.4)
    started = time.monotonic()
    error = await enroll_error(client)
    assert error.kind == "timeout"
    assert "within 0.8 s" in str(error)
    assert time.monotonic() - started < 5
