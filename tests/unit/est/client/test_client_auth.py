"""Client authentication beyond what our EST server offers: HTTP Digest and the re-enrollment fallback."""

from __future__ import annotations

import base64

import pytest
from aiohttp import web
from multidict import CIMultiDict

from keyward.est.client import BasicAuth, DigestAuth, EstClient, EstError
from tests.support.pki import Issuer, ec_key, name

from ..helpers import PASSWORD, USER, Pki
from .client_fixtures import (
    PeerFactory,
    endpoint,
    identity,
    issue_from_body,
    make_csr,
    peer_fixture,  # noqa: F401 - provides the fixture 'peer'
    pkcs7_response,
)
from .closing_server import DigestCheck

BASIC_HEADER = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


class DigestServer:
    """Answers 401 with a Digest challenge until the request carries a valid Digest response."""

    def __init__(self, issuer: Issuer, algorithms: tuple[str, ...] = ("MD5",)) -> None:
        self.issuer = issuer
        self.digest = DigestCheck(algorithms)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        authorization = request.headers.get("Authorization")
        if not self.digest.valid(request.method, request.path_qs, authorization):
            headers = CIMultiDict(("WWW-Authenticate", challenge) for challenge in self.digest.challenges())
            return web.Response(status=401, text="digest required", headers=headers)
        return pkcs7_response(await issue_from_body(self.issuer, request))


async def test_simpleenroll_with_digest_auth(pki: Pki, peer: PeerFactory) -> None:
    server = await peer(DigestServer(pki.alpha).handle)
    csr, _ = make_csr("digest-device")
    async with EstClient(endpoint(pki, server.port), auth=DigestAuth(USER, PASSWORD)) as client:
        chain = await client.simpleenroll(csr)
    assert isinstance(chain, list)
    assert chain[0].subject == name("digest-device")
    assert [seen.authorization is not None for seen in server.seen] == [False, True]
    assert all(PASSWORD not in (seen.authorization or "") for seen in server.seen)


@pytest.mark.parametrize(
    "auth",
    [DigestAuth(USER, "wrong-" + PASSWORD), BasicAuth(USER, PASSWORD)],
    ids=["wrong-password", "basic-to-a-digest-server"],
)
async def test_digest_refusal_is_an_auth_error_naming_the_scheme(
    pki: Pki, peer: PeerFactory, auth: BasicAuth | DigestAuth
) -> None:
    server = await peer(DigestServer(pki.alpha).handle)
    async with EstClient(endpoint(pki, server.port), auth=auth) as client:
        with pytest.raises(EstError) as refused:
            await client.simpleenroll(make_csr("digest-device")[0])
    assert (refused.value.kind, refused.value.status) == ("auth", 401)
    assert "asks for Digest" in str(refused.value)
    assert auth.password not in str(refused.value)


class CertificateOrBasic:
    """Accepts Basic credentials only when no client certificate came, and refuses any certificate: 403."""

    def __init__(self, issuer: Issuer) -> None:
        self.issuer = issuer

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        if ssl_object is not None and ssl_object.getpeercert(binary_form=True):
            return web.Response(status=403, text="this certificate may not renew here")
        if request.headers.get("Authorization") != BASIC_HEADER:
            return web.Response(status=401, text="log in", headers={"WWW-Authenticate": 'Basic realm="x"'})
        return pkcs7_response(await issue_from_body(self.issuer, request))


async def test_renewal_refused_with_403_is_retried_with_basic(pki: Pki, peer: PeerFactory) -> None:
    server = await peer(CertificateOrBasic(pki.alpha).handle, client_trust=[pki.alpha.certificate])
    key = ec_key()
    current = identity(pki.alpha.issue(name("renewing"), key.public_key()), key)
    csr, _ = make_csr("renewing")
    async with EstClient(endpoint(pki, server.port), auth=BasicAuth(USER, PASSWORD)) as client:
        chain = await client.simplereenroll(csr, current=current)
    assert isinstance(chain, list)
    assert chain[0].subject == name("renewing")
    assert [(s.client_certificate, s.authorization is not None) for s in server.seen] == [
        (True, False),
        (False, True),
    ]


async def test_renewal_certificate_refused_in_the_handshake_is_retried_with_basic(
    pki: Pki, peer: PeerFactory
) -> None:
    # The server trusts client certificates of the bootstrap CA only: one from another CA fails the handshake.
    server = await peer(CertificateOrBasic(pki.alpha).handle, client_trust=[pki.bootstrap_ca.certificate])
    stranger = Issuer.self_signed("Stranger CA")
    key = ec_key()
    current = identity(stranger.issue(name("renewing"), key.public_key()), key)
    csr, _ = make_csr("renewing")
    async with EstClient(endpoint(pki, server.port), auth=BasicAuth(USER, PASSWORD)) as client:
        chain = await client.simplereenroll(csr, current=current)
    assert isinstance(chain, list)
    assert [(s.client_certificate, s.authorization is not None) for s in server.seen] == [(False, True)]

    async with EstClient(endpoint(pki, server.port)) as without_http_auth:
        with pytest.raises(EstError) as refused:
            await without_http_auth.simplereenroll(csr, current=current)
    assert refused.value.kind == "tls"
    assert refused.value.client_certificate_refused
    assert "refuse a TLS client certificate" in str(refused.value)


async def test_a_broken_client_certificate_is_a_configuration_error(pki: Pki) -> None:
    other_key = ec_key()
    mismatched = identity(pki.bootstrap_certificate, other_key)
    with pytest.raises(EstError) as refused:
        EstClient(endpoint(pki, 443), client_cert=mismatched)
    assert refused.value.kind == "config"
    assert "key must belong to the first certificate" in str(refused.value)


@pytest.fixture
def fips_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """keyward's own choices in FIPS mode (this process's OpenSSL stays as it is; tests/fips runs keyward
    on the FIPS provider)."""
    monkeypatch.setenv("KEYWARD_FIPS", "1")


@pytest.mark.usefixtures("fips_mode")
async def test_fips_mode_refuses_md5_digest_before_sending_credentials(pki: Pki, peer: PeerFactory) -> None:
    server = await peer(DigestServer(pki.alpha).handle)
    async with EstClient(endpoint(pki, server.port), auth=DigestAuth(USER, PASSWORD)) as client:
        with pytest.raises(EstError) as refused:
            await client.simpleenroll(make_csr("digest-device")[0])
    assert refused.value.kind == "config"
    assert "the server asks for HTTP Digest with MD5, which FIPS mode does not allow" in str(refused.value)
    assert "SHA-256" in str(refused.value) and "Basic" in str(refused.value)
    assert [seen.authorization for seen in server.seen] == [None]


@pytest.mark.usefixtures("fips_mode")
@pytest.mark.parametrize("offered", [("SHA-256",), ("MD5", "SHA-256")], ids=["sha256", "md5-and-sha256"])
async def test_fips_mode_answers_sha256_digest(pki: Pki, peer: PeerFactory, offered: tuple[str, ...]) -> None:
    digest_server = DigestServer(pki.alpha, offered)
    server = await peer(digest_server.handle)
    csr, _ = make_csr("digest-device")
    async with EstClient(endpoint(pki, server.port), auth=DigestAuth(USER, PASSWORD)) as client:
        chain = await client.simpleenroll(csr)
    assert isinstance(chain, list) and chain[0].subject == name("digest-device")
    assert digest_server.digest.answered_with == ["SHA-256"]


@pytest.mark.usefixtures("fips_mode")
async def test_fips_mode_leaves_basic_auth_alone(pki: Pki, peer: PeerFactory) -> None:
    server = await peer(CertificateOrBasic(pki.alpha).handle)
    async with EstClient(endpoint(pki, server.port), auth=BasicAuth(USER, PASSWORD)) as client:
        chain = await client.simpleenroll(make_csr("basic-device")[0])
    assert isinstance(chain, list) and chain[0].subject == name("basic-device")
