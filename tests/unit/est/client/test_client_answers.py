"""How the client reads answers of other RFC 7030 servers: pending, leniency where allowed, broken answers."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from aiohttp import web
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from keyward.est.client import BasicAuth, EstClient, EstError, Pending
from tests.support.pki import ec_key, name

from ..helpers import PASSWORD, USER, Pki
from .client_fixtures import (
    PeerFactory,
    endpoint,
    make_csr,
    peer_fixture,  # noqa: F401 - provides the fixture 'peer'
)

BASIC = BasicAuth(USER, PASSWORD)


def answer(status: int, body: bytes = b"", **headers: str) -> web.Response:
    return web.Response(
        status=status, body=body, headers={k.replace("_", "-"): v for k, v in headers.items()}
    )


async def answered(pki: Pki, peer: PeerFactory, response: web.Response) -> EstClient:
    """A client of a peer that gives ``response`` to any request."""

    async def handle(_request: web.Request) -> web.StreamResponse:
        return response

    server = await peer(handle)
    return EstClient(endpoint(pki, server.port), auth=BASIC)


async def enroll_error(client: EstClient) -> EstError:
    async with client:
        with pytest.raises(EstError) as refused:
            await client.simpleenroll(make_csr("device")[0])
    return refused.value


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        ("120", 120.0),
        (timedelta(minutes=10), 600.0),  # an HTTP date, computed when the test runs
        ("999999999999", 24 * 3600.0),  # bounded to a day
        (timedelta(days=-1), 1.0),  # an HTTP date in the past: soon, not now
        (None, 60.0),  # a server that forgets the header
    ],
    ids=["seconds", "http-date", "huge", "date-in-the-past", "missing"],
)
async def test_pending_honours_retry_after(
    pki: Pki, peer: PeerFactory, retry_after: str | timedelta | None, expected: float
) -> None:
    if isinstance(retry_after, timedelta):
        retry_after = format_datetime(datetime.now(UTC) + retry_after, usegmt=True)
    headers = {"Retry-After": retry_after} if retry_after else {}
    client = await answered(pki, peer, answer(202, b"pending", **headers))
    async with client:
        pending = await client.simpleenroll(make_csr("device")[0])
    assert isinstance(pending, Pending)
    assert expected - 15 <= pending.retry_after <= expected


@pytest.mark.parametrize("encoding", ["base64-one-line", "base64-crlf", "raw-der"])
async def test_enrollment_answers_of_other_servers_are_understood(
    pki: Pki, peer: PeerFactory, encoding: str
) -> None:
    request, _ = make_csr("lenient")
    leaf = pki.alpha.issue(request.subject, request.public_key())
    der = _pkcs7_in_order([pki.alpha.certificate, leaf])
    on_the_wire = [c.chosen.dump() for c in cms.ContentInfo.load(der)["content"]["certificates"]]
    assert on_the_wire[1] == leaf.public_bytes(serialization.Encoding.DER)  # the leaf is not first
    body = {
        "base64-one-line": base64.b64encode(der),
        "base64-crlf": b"\r\n".join(base64.encodebytes(der).splitlines()) + b"\r\n",
        "raw-der": der,
    }[encoding]

    async def handle(_request: web.Request) -> web.StreamResponse:
        content_type = "Application/PKCS7-MIME; name=cert.p7c; smime-type=certs-only"
        return answer(200, body, Content_Type=content_type, Content_Transfer_Encoding="binary")

    server = await peer(handle)
    async with EstClient(endpoint(pki, server.port), auth=BASIC) as client:
        assert await client.simpleenroll(request) == [leaf, pki.alpha.certificate]


@pytest.mark.parametrize(
    ("response", "complaint"),
    [
        (answer(200, b"<html><body>Welcome</body></html>", Content_Type="text/html"), "answered text/html"),
        (answer(200, b"MIIBx", Content_Type="application/pkcs7-mime"), "not valid base64"),
        (answer(200, b"", Content_Type="application/pkcs7-mime"), "empty"),
    ],
    ids=["html-page", "truncated-base64", "empty-body"],
)
async def test_broken_enrollment_answers_are_protocol_errors(
    pki: Pki, peer: PeerFactory, response: web.Response, complaint: str
) -> None:
    error = await enroll_error(await answered(pki, peer, response))
    assert error.kind == "protocol"
    assert complaint in str(error)


async def test_pkcs7_without_certificates_is_a_protocol_error(pki: Pki, peer: PeerFactory) -> None:
    signed_data = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [],
            "encap_content_info": {"content_type": "data"},
            "signer_infos": [],
        }
    )
    der = cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()
    response = answer(200, base64.b64encode(der), Content_Type="application/pkcs7-mime")
    error = await enroll_error(await answered(pki, peer, response))
    assert error.kind == "protocol"
    assert "no certificate" in str(error)


async def test_certificate_for_another_key_is_refused(pki: Pki, peer: PeerFactory) -> None:
    stray = pki.alpha.issue(name("someone-else"), ec_key().public_key())
    body = base64.b64encode(_pkcs7_in_order([stray]))
    error = await enroll_error(
        await answered(pki, peer, answer(200, body, Content_Type="application/pkcs7-mime"))
    )
    assert error.kind == "protocol"
    assert "carries the public key of the request" in str(error)


@pytest.mark.parametrize("size", ["declared", "streamed"])
async def test_oversized_answers_are_cut_off(pki: Pki, peer: PeerFactory, size: str) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/pkcs7-mime"})
        if size == "declared":
            response.content_length = 10 << 20
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"A" * 4096)
        return response

    server = await peer(handle)
    client = EstClient(endpoint(pki, server.port), auth=BASIC, max_response_bytes=64 * 1024)
    error = await enroll_error(client)
    assert error.kind == "too-large"
    assert "larger than 65536 bytes" in str(error)


async def test_server_failures_are_server_errors_with_retry_after(pki: Pki, peer: PeerFactory) -> None:
    response = answer(503, b"CA token offline", Content_Type="text/plain", Retry_After="30")
    error = await enroll_error(await answered(pki, peer, response))
    assert (error.kind, error.status, error.retry_after) == ("server", 503, 30.0)
    assert "CA token offline" in str(error)


async def test_long_error_pages_are_trimmed_to_their_text(pki: Pki, peer: PeerFactory) -> None:
    page = b"<html><head><title>Bad</title></head><body><p>Request refused:</p>" + b"x" * 5000 + b"</body>"
    error = await enroll_error(await answered(pki, peer, answer(400, page, Content_Type="text/html")))
    assert (error.kind, error.status) == ("client", 400)
    assert "Bad Request refused:" in str(error)
    assert "<" not in str(error)
    assert len(str(error)) < 700


@pytest.mark.parametrize(
    ("status", "body"),
    [(204, b""), (404, b""), (200, b""), (200, b"\r\n\x00")],
    ids=["204", "404", "200-empty", "200-only-a-line-break-and-nul"],
)
async def test_csrattrs_absent_is_none(pki: Pki, peer: PeerFactory, status: int, body: bytes) -> None:
    response = answer(status, body, Content_Type="application/csrattrs") if body else answer(status)
    async with await answered(pki, peer, response) as client:
        assert await client.csrattrs() is None


def _pkcs7_in_order(certificates: list[x509.Certificate]) -> bytes:
    """A certs-only PKCS#7 with the certificates in exactly this order (BER, as some servers write it).

    DER would sort the SET OF; the sorted block is rewritten in the requested order (same length).
    """
    ders = [c.public_bytes(serialization.Encoding.DER) for c in certificates]
    signed_data = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [],
            "encap_content_info": {"content_type": "data"},
            "certificates": [cms.CertificateChoices.load(d) for d in ders],
            "signer_infos": [],
        }
    )
    encoded = bytes(cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump())
    sorted_block = b"".join(sorted(ders, key=encoded.index))
    assert sorted_block in encoded
    return encoded.replace(sorted_block, b"".join(ders))
