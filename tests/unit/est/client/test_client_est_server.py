"""The EST client against the project's own EST server: every operation, and the refusals a user meets."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from keyward.est.client import BasicAuth, EstClient, EstEndpoint, EstError, Pending
from keyward.est.wire import decode_csrattrs
from tests.support.pki import Issuer, name

from ..conftest import RFC7030_CSRATTRS
from ..helpers import PASSWORD, USER, Pki, RunningServer
from .client_fixtures import endpoint, identity, make_csr

BASIC = BasicAuth(USER, PASSWORD)


def issued_for(chain: list[x509.Certificate] | Pending, key_owner: x509.CertificateSigningRequest) -> bool:
    assert isinstance(chain, list)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return chain[0].public_key().public_bytes(*spki) == key_owner.public_key().public_bytes(*spki)


async def test_cacerts_of_the_default_and_of_a_labelled_ca(pki: Pki, est: RunningServer) -> None:
    async with EstClient(endpoint(pki, est.port)) as client:
        assert await client.cacerts() == [pki.alpha.certificate]
    async with EstClient(endpoint(pki, est.port, label="/beta/sub/")) as client:
        assert await client.cacerts() == [pki.beta.certificate]


async def test_simpleenroll_with_basic_auth(pki: Pki, est: RunningServer) -> None:
    csr, _ = make_csr("basic-device", sans=["basic-device.example"])
    async with EstClient(endpoint(pki, est.port), auth=BASIC) as client:
        chain = await client.simpleenroll(csr)
    assert isinstance(chain, list)
    assert issued_for(chain, csr)
    assert chain[0].subject == name("basic-device")
    chain[0].verify_directly_issued_by(pki.alpha.certificate)
    assert str(est.audit[-1].client) == f"basic:{USER}"


async def test_wrong_password_is_an_auth_error_without_the_password(pki: Pki, est: RunningServer) -> None:
    wrong = BasicAuth(USER, "not-the-" + PASSWORD)
    async with EstClient(endpoint(pki, est.port), auth=wrong) as client:
        with pytest.raises(EstError) as refused:
            await client.simpleenroll(make_csr("device")[0])
    assert refused.value.kind == "auth"
    assert refused.value.status == 401
    assert "asks for Basic" in str(refused.value)
    assert "wrong user name or password" in str(refused.value)
    assert wrong.password not in str(refused.value) + repr(refused.value) + repr(wrong)


async def test_simpleenroll_with_a_tls_client_certificate(pki: Pki, est: RunningServer) -> None:
    bootstrap = identity(pki.bootstrap_certificate, pki.bootstrap_key)
    csr, _ = make_csr("cert-device")
    async with EstClient(endpoint(pki, est.port), client_cert=bootstrap) as client:
        chain = await client.simpleenroll(csr)
    assert issued_for(chain, csr)
    assert est.audit[-1].client.method == "cert"
    assert est.audit[-1].client.name == "CN=bootstrap-device"


async def test_simplereenroll_with_the_certificate_being_renewed(pki: Pki, est: RunningServer) -> None:
    first_csr, first_key = make_csr("renewing-device", sans=["renewing.example"])
    async with EstClient(endpoint(pki, est.port), auth=BASIC) as client:
        first = await client.simpleenroll(first_csr)
        assert isinstance(first, list)
        renewal_csr, _ = make_csr("renewing-device", sans=["renewing.example"])  # rekey
        renewed = await client.simplereenroll(renewal_csr, current=identity(first[0], first_key))
    assert issued_for(renewed, renewal_csr)
    assert est.audit[-1].operation == "simplereenroll"
    assert est.audit[-1].client.serial == first[0].serial_number


async def test_refused_renewal_certificate_falls_back_to_http_auth(pki: Pki, est: RunningServer) -> None:
    # The bootstrap certificate passes the TLS handshake but was not issued by the CA: 403. The client then
    # retries with Basic, which this server does not accept for renewals: its second, different 403 shows.
    csr, _ = make_csr("bootstrap-device")
    current = identity(pki.bootstrap_certificate, pki.bootstrap_key)
    async with EstClient(endpoint(pki, est.port), auth=BASIC) as client:
        with pytest.raises(EstError) as refused:
            await client.simplereenroll(csr, current=current)
    assert refused.value.kind == "client"
    assert refused.value.status == 403
    assert "HTTP credentials are not enough" in str(refused.value)


async def test_renewal_refused_without_http_auth_reports_the_certificate_refusal(
    pki: Pki, est: RunningServer
) -> None:
    csr, _ = make_csr("bootstrap-device")
    async with EstClient(endpoint(pki, est.port)) as client:
        with pytest.raises(EstError) as refused:
            await client.simplereenroll(csr, current=identity(pki.bootstrap_certificate, pki.bootstrap_key))
    assert (refused.value.kind, refused.value.status) == ("client", 403)
    assert "not issued by this CA" in str(refused.value)


async def test_csrattrs_or_none(pki: Pki, est: RunningServer) -> None:
    async with EstClient(endpoint(pki, est.port), auth=BASIC) as client:
        assert await client.csrattrs() == decode_csrattrs(RFC7030_CSRATTRS)
    async with EstClient(endpoint(pki, est.port, label="beta/sub"), auth=BASIC) as client:
        assert await client.csrattrs() is None  # 204


async def test_serverkeygen_returns_a_key_matching_its_certificate(pki: Pki, est: RunningServer) -> None:
    csr, _ = make_csr("keygen-device")
    async with EstClient(endpoint(pki, est.port), auth=BASIC) as client:
        result = await client.serverkeygen(csr)
    assert isinstance(result, tuple)
    key_der, chain = result
    key = serialization.load_der_private_key(key_der, password=None)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert chain[0].public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    assert chain[0].subject == name("keygen-device")


async def test_pending_enrollment_gives_the_servers_retry_after(pki: Pki, est: RunningServer) -> None:
    async with EstClient(endpoint(pki, est.port), auth=BASIC) as client:
        assert await client.simpleenroll(make_csr("pending")[0]) == Pending(42.0)


async def test_policy_refusal_carries_the_cas_message(pki: Pki, est: RunningServer) -> None:
    async with EstClient(endpoint(pki, est.port), auth=BASIC) as client:
        with pytest.raises(EstError) as refused:
            await client.simpleenroll(make_csr("forbidden")[0])
    assert (refused.value.kind, refused.value.status) == ("client", 400)
    assert "CN=forbidden is not allowed by this CA" in str(refused.value)


async def test_server_certificate_from_another_ca_is_a_tls_error(pki: Pki, est: RunningServer) -> None:
    wrong_anchor = EstEndpoint("127.0.0.1", est.port, "", (Issuer.self_signed("Unrelated Root").certificate,))
    issued_before = len(est.audit)
    async with EstClient(wrong_anchor, auth=BASIC) as client:
        with pytest.raises(EstError) as refused:
            await client.simpleenroll(make_csr("device")[0])
    assert refused.value.kind == "tls"
    assert "spec.cacert" in str(refused.value)
    assert len(est.audit) == issued_before


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connections to it are refused."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


async def test_server_down_is_a_connect_error(pki: Pki, closed_port: int) -> None:
    async with EstClient(endpoint(pki, closed_port)) as client:
        with pytest.raises(EstError) as refused:
            await client.cacerts()
    assert refused.value.kind == "connect"
    assert "refused" in str(refused.value)
