"""Answering EST requests: routing to a CA, authentication, request checks, enrollment, audit.

Every client mistake ends as a 4xx with a one-line text body that names the problem and the fix. A 5xx
means the CA side failed (503 when it says so, 500 for a bug), never that the input was odd.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from cryptography import x509
from cryptography.x509.oid import AttributeOID

from keyward.est import wire
from keyward.est.server.audit import AuditRecord, emit
from keyward.est.server.auth import (
    MalformedAuthorization,
    chains_to,
    issued_by_any,
    load_peer_certificate,
    parse_basic,
    same_subject_and_sans,
)
from keyward.est.server.ca import CaUnavailable, ClientIdentity, EnrollPending, EnrollRejected, EstCa
from keyward.est.server.logs import printable
from keyward.est.server.routes import Operation, parse_est_path
from keyward.pki.errors import RequestError
from keyward.pki.keys import check_request_algorithms

logger = logging.getLogger(__name__)

WWW_AUTHENTICATE = 'Basic realm="estrealm"'


class Refusal(Exception):
    """Ends a request with a 4xx/5xx status and a message for the client."""

    def __init__(
        self, status: int, message: str, headers: Mapping[str, str] | None = None, *, close: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.close = close


@dataclass(frozen=True)
class HandlerSettings:
    default_label: str | None
    max_body: int
    body_timeout: float


class EstRequestHandler:
    """The single aiohttp handler behind ``/.well-known/est/{tail}``."""

    def __init__(
        self,
        cas: Callable[[], Mapping[str, EstCa]],
        settings: HandlerSettings,
        audit: Callable[[AuditRecord], None] | None,
    ) -> None:
        self._cas = cas
        self._settings = settings
        self._audit = audit

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._handle(request)
        except Refusal as refusal:
            # One line per refused request (the access log is off): who, what, and why — never credentials;
            # every client-chosen value escaped (a path with %0D%0A must not start a line of its own).
            logger.info(
                "EST refused %s %s from %s (%s): %d %s",
                printable(request.method, 20),
                printable(request.path),
                printable(request.remote, 64),
                printable(request.headers.get("User-Agent", "no user agent"), 100),
                refusal.status,
                printable(refusal.message, 500),
            )
            return _text(refusal.status, refusal.message, refusal.headers, close=refusal.close)
        except Exception:
            logger.exception(
                "EST server: unexpected error answering %s %s",
                printable(request.method, 20),
                printable(request.path),
            )
            return _text(500, "internal error of the EST server; the server log has the details")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = parse_est_path(request.match_info.get("tail", ""))
        if path is None:
            operations = ", ".join(operation.value for operation in Operation)
            raise Refusal(404, f"no such EST operation; the path must end in one of: {operations}")
        label, ca = self._resolve(path.label)
        operation = path.operation
        if operation is Operation.FULLCMC:
            # 404, not 501: RFC 7030 makes full CMC optional, and a client asking for it is no server fault
            # (5xx would page whoever watches the server's error rate, and generic clients retry 5xx).
            raise Refusal(
                404,
                "full CMC (/fullcmc) is not offered by this server; use /simpleenroll, /simplereenroll "
                "or /serverkeygen",
            )
        if request.method not in operation.methods:
            allowed = ", ".join(sorted(operation.methods))
            raise Refusal(405, f"{operation.value} accepts {allowed} only", {"Allow": allowed})
        if operation is Operation.CACERTS:
            return _cacerts(ca)
        if operation is Operation.CSRATTRS:
            return _csrattrs(ca)
        return await self._enroll(request, label, ca, operation)

    def _resolve(self, label: str | None) -> tuple[str, EstCa]:
        cas = self._cas()
        if label is None:
            label = self._settings.default_label
            if label is None:
                raise Refusal(404, "this server has no default CA; put the CA label in the path")
        ca = cas.get(label)
        if ca is None:
            raise Refusal(404, f"no CA is served under the label {label[:100]!r}")
        return label, ca

    async def _enroll(
        self, request: web.Request, label: str, ca: EstCa, operation: Operation
    ) -> web.Response:
        renewal = operation is Operation.SIMPLEREENROLL
        max_body = self._settings.max_body
        if request.content_length is not None and request.content_length > max_body:
            raise Refusal(413, f"the request body is larger than {max_body} bytes", close=True)
        if operation is Operation.SERVERKEYGEN and _ssl_object(request) is None:
            raise Refusal(403, "/serverkeygen returns a private key and is only served over TLS")
        client = _authenticate(request, ca, renewal=renewal)
        if request.content_type.lower() != "application/pkcs10":
            raise Refusal(415, f"the request must have Content-Type {wire.PKCS10}: base64 of a DER CSR")
        body = await self._read_body(request)
        try:
            csr = wire.decode_csr(body)
        except wire.WireError as exc:
            raise Refusal(400, str(exc)) from None
        try:
            check_request_algorithms(csr)  # before the signature: a refusal names the algorithm
        except RequestError as exc:
            raise Refusal(400, str(exc)) from None
        if not wire.csr_signature_valid(csr):
            raise Refusal(400, "the CSR signature does not verify; sign the request with the key it contains")
        _check_identity_link(csr, _ssl_object(request))
        if renewal and client.certificate is not None and not same_subject_and_sans(csr, client.certificate):
            raise Refusal(
                403,
                "a re-enrollment must keep the Subject and SubjectAltName of the certificate being renewed "
                "(RFC 7030 section 4.2.2); use /simpleenroll for a new identity",
            )
        return await self._issue(label, ca, operation, csr, client)

    async def _issue(
        self,
        label: str,
        ca: EstCa,
        operation: Operation,
        csr: x509.CertificateSigningRequest,
        client: ClientIdentity,
    ) -> web.Response:
        key: bytes | None = None
        try:
            if operation is Operation.SERVERKEYGEN:
                key, chain = await ca.server_keygen(csr, client)
            else:
                chain = await ca.enroll(csr, client, renewal=operation is Operation.SIMPLEREENROLL)
        except EnrollRejected as exc:
            raise Refusal(400, str(exc) or "the CA refused the request") from None
        except EnrollPending as pending:
            return _text(202, str(pending), {"Retry-After": str(pending.retry_after)})
        except CaUnavailable as exc:
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
            raise Refusal(503, str(exc) or "the CA cannot sign right now; retry later", headers) from None
        if not chain:
            raise RuntimeError(f"CA {label!r} returned no certificate for an accepted request")
        self._record(AuditRecord.for_certificate(label, operation.value, client, chain[0]))
        if key is not None:
            content_type, body = wire.encode_serverkeygen(key, chain)
            return web.Response(status=200, body=body, headers={"Content-Type": content_type})
        return _base64_response(wire.encode_certs_only(chain), wire.PKCS7_CERTS_ONLY)

    async def _read_body(self, request: web.Request) -> bytes:
        max_body = self._settings.max_body
        try:
            async with asyncio.timeout(self._settings.body_timeout):
                body = await request.read()
        except TimeoutError:
            raise Refusal(408, "the request body did not arrive in time", close=True) from None
        except web.HTTPRequestEntityTooLarge:
            raise Refusal(413, f"the request body is larger than {max_body} bytes", close=True) from None
        except (HttpProcessingError, ConnectionError):
            raise Refusal(
                400, "the request body is malformed (broken chunked encoding?)", close=True
            ) from None
        if len(body) > max_body:
            raise Refusal(413, f"the request body is larger than {max_body} bytes", close=True)
        return body

    def _record(self, record: AuditRecord) -> None:
        emit(record)
        if self._audit is not None:
            try:
                self._audit(record)
            except Exception:
                # The certificate is issued already; a broken audit sink must not hide it from the client.
                logger.exception("EST server: the audit callback failed")


def _authenticate(request: web.Request, ca: EstCa, *, renewal: bool) -> ClientIdentity:
    """The client's identity for this CA, or a 401/403 Refusal.

    Renewals (RFC 7030 §4.2.2) authenticate with the certificate being renewed, which this CA must have
    issued. Initial enrollment takes HTTP Basic credentials (checked whenever sent) or a TLS client
    certificate chaining to the CA's client trust anchors.
    """
    peer = _peer_certificate(request)
    header = request.headers.get("Authorization")
    if renewal:
        if peer is None:
            if header is None:
                raise _unauthorized(
                    "re-enrollment needs the certificate being renewed as TLS client certificate"
                )
            raise Refusal(
                403,
                "re-enrollment authenticates with the certificate being renewed as TLS client certificate; "
                "HTTP credentials are not enough",
            )
        if not issued_by_any(peer, ca.ca_certificates()):
            raise Refusal(
                403,
                "the TLS client certificate was not issued by this CA or is not valid now; renew with the "
                "current certificate from this CA, or enroll again with /simpleenroll",
            )
        return ClientIdentity.from_certificate(peer)
    if header is not None:
        try:
            credentials = parse_basic(header)
        except MalformedAuthorization as exc:
            raise _unauthorized(str(exc)) from None
        if credentials is None or not ca.check_basic(credentials.username, credentials.password):
            raise _unauthorized("wrong user name or password for this CA")
        return ClientIdentity.from_basic(credentials.username)
    if peer is not None:
        if chains_to(peer, ca.client_ca_trust()):
            return ClientIdentity.from_certificate(peer)
        raise _unauthorized(
            "the TLS client certificate is not trusted by this CA; use a certificate from one of its client "
            "CAs, or HTTP Basic credentials"
        )
    raise _unauthorized("enrollment needs HTTP Basic credentials or a trusted TLS client certificate")


def _unauthorized(message: str) -> Refusal:
    return Refusal(401, message, {"WWW-Authenticate": WWW_AUTHENTICATE})


def _check_identity_link(csr: x509.CertificateSigningRequest, ssl_object: ssl.SSLObject | None) -> None:
    """RFC 7030 §3.5: a CSR whose challengePassword carries the base64 ``tls-unique`` of the TLS session
    links proof of possession to the authenticated session; when the session has a ``tls-unique`` (TLS
    1.2), the value must be this session's. TLS 1.3 has no ``tls-unique`` (RFC 8446), so there the link
    cannot be checked and the CSR is judged like one without it (linking is optional in RFC 7030)."""
    try:
        attribute = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD)
    except x509.AttributeNotFound:
        return
    binding = ssl_object.get_channel_binding("tls-unique") if ssl_object is not None else None
    if binding is None:
        return
    if not hmac.compare_digest(bytes(attribute.value).strip(), base64.b64encode(binding)):
        raise Refusal(
            400,
            "the CSR's challengePassword does not hold this TLS session's tls-unique value (RFC 7030 "
            "section 3.5); put base64(tls-unique) of the connection the CSR is sent on into it, "
            "or leave it out",
        )


def _ssl_object(request: web.Request) -> ssl.SSLObject | None:
    transport = request.transport
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    return ssl_object if isinstance(ssl_object, ssl.SSLObject) else None


def _peer_certificate(request: web.Request) -> x509.Certificate | None:
    ssl_object = _ssl_object(request)
    if ssl_object is None:
        return None
    return load_peer_certificate(ssl_object.getpeercert(binary_form=True))


def _cacerts(ca: EstCa) -> web.Response:
    certificates = list(ca.ca_certificates())
    if not certificates:
        raise Refusal(
            503, "this CA has no certificate yet; retry once the issuer is ready", {"Retry-After": "60"}
        )
    return _base64_response(wire.encode_certs_only(certificates), wire.PKCS7_CERTS_ONLY)


def _csrattrs(ca: EstCa) -> web.Response:
    attributes = ca.csr_attributes()
    if attributes is None or not attributes.items:
        return web.Response(status=204)
    return _base64_response(wire.encode_csrattrs(attributes), wire.CSRATTRS)


def _base64_response(body: bytes, content_type: str) -> web.Response:
    # Content-Transfer-Encoding is meaningless in HTTP (RFC 8951), but RFC 7030 clients look for it.
    headers = {"Content-Type": content_type, "Content-Transfer-Encoding": "base64"}
    return web.Response(status=200, body=body, headers=headers)


def _text(
    status: int, message: str, headers: Mapping[str, str] | None = None, *, close: bool = False
) -> web.Response:
    response = web.Response(status=status, text=message + "\n", headers=dict(headers or {}))
    if close:
        response.force_close()
    return response
