"""An async RFC 7030 EST client: cacerts, csrattrs, simpleenroll, simplereenroll, serverkeygen.

Built on httpx rather than aiohttp because httpx brings an HTTP Digest implementation (``httpx.DigestAuth``)
and separate connect/read timeouts, takes a ready ``ssl.SSLContext``, and leaves redirects to the caller,
which lets ``client_http`` apply the trust policy on every hop. Nothing here knows Kubernetes or PKCS#11:
the operator passes in trust anchors, credentials and CSRs, and maps ``EstError.kind`` to its conditions.

The client is meant for any RFC 7030 server, so answers are read leniently where the RFCs allow variation
(Content-Type parameters, base64 line breaks, leaf anywhere in the PKCS#7, 204 or 404 for "no CSR
attributes") and strictly where a mistake would hand back something unusable (the leaf must carry the key
of the request).
"""

from __future__ import annotations

import hashlib
import logging
import types
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import keyward
from keyward import fips
from keyward.est import wire
from keyward.est.client.answers import certificates_of, chain_for_key, wrong_type
from keyward.est.client.errors import ErrorKind, EstError, server_text, status_error
from keyward.est.client.http import FreshConnectionRetry, Limits, Reply, Request, exchange
from keyward.est.client.tls import ClientCertificate, client_ssl_context
from keyward.est.wire import WELL_KNOWN, CsrAttrs

__all__ = [
    "BasicAuth",
    "ClientCertificate",
    "CsrAttrs",
    "DigestAuth",
    "ErrorKind",
    "EstClient",
    "EstEndpoint",
    "EstError",
    "Pending",
]

logger = logging.getLogger(__name__)

DEFAULT_PENDING_RETRY = 60.0
# RFC 3986 pchar minus '/', so that each label segment stays one path segment.
_SEGMENT_SAFE = "-._~!$&'()*+,;=:@"


@dataclass(frozen=True)
class EstEndpoint:
    """Where the EST server is and whom to trust for it: ``https://host:port/.well-known/est[/label]/op``.

    ``trust_anchors`` is the Explicit TA database (spec.cacert); the system trust store is never used.
    """

    host: str
    port: int = 443
    label: str = ""
    trust_anchors: tuple[x509.Certificate, ...] = ()

    def __post_init__(self) -> None:
        host = self.host.strip().strip("[]")
        if not host or any(c in host for c in "/?#@ \t\r\n"):
            raise EstError("config", f"spec.host {self.host[:80]!r} is not a host name or IP address")
        if not 1 <= self.port <= 65535:
            raise EstError("config", f"spec.port {self.port} is outside 1-65535")
        segments = [s for s in self.label.split("/") if s]
        if any(s in (".", "..") for s in segments):
            raise EstError("config", f"spec.label {self.label[:80]!r} may not contain '.' or '..' segments")
        if not self.trust_anchors:
            raise EstError(
                "config",
                "no trust anchor for the EST server: put the CA certificate(s) of its TLS certificate into "
                "spec.cacert (the system trust store is never used)",
            )

    def url(self, operation: str) -> httpx.URL:
        segments = [urllib.parse.quote(s, safe=_SEGMENT_SAFE) for s in self.label.split("/") if s]
        path = "/".join([WELL_KNOWN, *segments, operation])
        return httpx.URL(scheme="https", host=self.host.strip().strip("[]"), port=self.port, path=path)


@dataclass(frozen=True)
class BasicAuth:
    """HTTP Basic credentials (RFC 7030 §3.2.3), sent preemptively, to the configured origin only."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class DigestAuth:
    """HTTP Digest credentials (RFC 7616, as RFC 7030 §3.2.3 allows), answered on the server's challenge."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Pending:
    """The server accepted the request but has no certificate yet (202): repeat the same request later.

    ``retry_after`` is in seconds, at least 1 and at most the client's ``max_retry_after``.
    """

    retry_after: float


class EstClient:
    """One EST server (one endpoint and label) with one set of credentials; use as ``async with``.

    ``auth`` (Basic or Digest) and ``client_cert`` (TLS client authentication) are used for enrollment and
    /csrattrs, never for /cacerts. ``timeout`` bounds each read and ``connect_timeout`` the TCP and TLS
    set-up; together they also bound each whole request. ``max_response_bytes`` caps every body.
    """

    def __init__(
        self,
        endpoint: EstEndpoint,
        *,
        auth: BasicAuth | DigestAuth | None = None,
        client_cert: ClientCertificate | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        max_response_bytes: int = 1 << 20,
        max_redirects: int = 3,
        max_retry_after: float = wire.DEFAULT_MAX_RETRY_AFTER,
    ) -> None:
        self._endpoint = endpoint
        self._auth = auth
        self._http_auth = _http_auth(auth)
        self._client_cert = client_cert
        self._limits = Limits(timeout, connect_timeout, max_response_bytes, max_redirects)
        self._max_retry_after = max_retry_after
        self._http = self._new_http(client_cert)

    async def __aenter__(self) -> EstClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- operations -------------------------------------------------------------------------------------

    async def cacerts(self) -> list[x509.Certificate]:
        """The CA certificates the server distributes (RFC 7030 §4.1), in the order they arrived."""
        reply = await self._get("cacerts", authenticated=False)
        if reply.status != 200:
            raise self._unexpected(reply, "cacerts")
        return certificates_of(reply, _where("cacerts", reply.url))

    async def csrattrs(self) -> CsrAttrs | None:
        """What the CA wants in requests (RFC 7030 §4.5); ``None`` when it has no such wishes (204/404)."""
        reply = await self._get("csrattrs", authenticated=True)
        empty = not wire.without_trailing_padding(reply.body)
        if reply.status in (204, 404) or (reply.status == 200 and empty):
            return None
        if reply.status != 200:
            raise self._unexpected(reply, "csrattrs")
        where = _where("csrattrs", reply.url)
        if reply.media_type not in (wire.CSRATTRS, ""):
            raise wrong_type(where, reply, wire.CSRATTRS)
        try:
            return wire.decode_csrattrs(reply.body)
        except wire.WireError as exc:
            raise EstError("protocol", f"{where}: {exc}", status=200) from None

    async def simpleenroll(self, csr: x509.CertificateSigningRequest) -> list[x509.Certificate] | Pending:
        """Enroll ``csr`` (RFC 7030 §4.2.1): the chain with the new certificate first, or ``Pending``."""
        reply = await self._post("simpleenroll", csr, self._http, self._http_auth, self._client_cert)
        return self._enrollment_result(reply, "simpleenroll", csr)

    async def simplereenroll(
        self, csr: x509.CertificateSigningRequest, *, current: ClientCertificate
    ) -> list[x509.Certificate] | Pending:
        """Renew (RFC 7030 §4.2.2), authenticating with the certificate being renewed and its key.

        When the server refuses that certificate (401/403, or a TLS alert about it), the request is sent
        once more with the HTTP credentials given to the constructor (and its client certificate, if any),
        as RFC 7030 §3.3.2 allows; without HTTP credentials the refusal is final.
        """
        renewing = self._new_http(current)
        try:
            reply = await self._post("simplereenroll", csr, renewing, None, current)
        except EstError as refused:
            if not (refused.client_certificate_refused and self._http_auth is not None):
                raise
            reply = await self._fallback(csr)
        else:
            if reply.status in (401, 403) and self._http_auth is not None:
                reply = await self._fallback(csr)
        finally:
            await renewing.aclose()
        return self._enrollment_result(reply, "simplereenroll", csr)

    async def serverkeygen(
        self, csr: x509.CertificateSigningRequest
    ) -> tuple[bytes, list[x509.Certificate]] | Pending:
        """Have the server generate the key (RFC 7030 §4.4): (unencrypted DER PKCS#8, chain leaf first).

        The key is secret: keep it out of logs and store it only where the certificate's user reads it.
        """
        reply = await self._post("serverkeygen", csr, self._http, self._http_auth, self._client_cert)
        if reply.status == 202:
            return self._pending(reply)
        if reply.status != 200:
            raise self._unexpected(reply, "serverkeygen")
        where = _where("serverkeygen", reply.url)
        if reply.media_type != wire.MULTIPART_MIXED:
            raise wrong_type(where, reply, wire.MULTIPART_MIXED)
        try:
            response = wire.decode_serverkeygen(reply.content_type, reply.body)
        except wire.WireError as exc:
            raise EstError("protocol", f"{where}: {exc}", status=200) from None
        key = serialization.load_der_private_key(response.private_key_pkcs8, password=None)
        chain = chain_for_key(list(response.certificates), key.public_key(), where, "the generated key")
        return response.private_key_pkcs8, chain

    # --- plumbing ---------------------------------------------------------------------------------------

    def _new_http(self, identity: ClientCertificate | None) -> httpx.AsyncClient:
        limits = self._limits
        context = client_ssl_context(self._endpoint.trust_anchors, identity)
        return httpx.AsyncClient(
            transport=FreshConnectionRetry(httpx.AsyncHTTPTransport(verify=context, trust_env=False)),
            timeout=httpx.Timeout(limits.timeout, connect=limits.connect_timeout),
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": f"keyward-est-client/{keyward.__version__}"},
        )

    async def _get(self, operation: str, *, authenticated: bool) -> Reply:
        request = Request("GET", self._endpoint.url(operation), self._where(operation))
        return await exchange(
            self._http,
            request,
            auth=self._http_auth if authenticated else None,
            limits=self._limits,
            presented_certificate=self._client_cert is not None,
        )

    async def _post(
        self,
        operation: str,
        csr: x509.CertificateSigningRequest,
        http: httpx.AsyncClient,
        auth: httpx.Auth | None,
        identity: ClientCertificate | None,
    ) -> Reply:
        request = Request(
            "POST", self._endpoint.url(operation), self._where(operation), wire.encode_csr(csr), wire.PKCS10
        )
        return await exchange(
            http, request, auth=auth, limits=self._limits, presented_certificate=identity is not None
        )

    async def _fallback(self, csr: x509.CertificateSigningRequest) -> Reply:
        logger.info(
            "%s: the server refused the certificate being renewed; retrying once with HTTP authentication",
            self._where("simplereenroll"),
        )
        return await self._post("simplereenroll", csr, self._http, self._http_auth, self._client_cert)

    def _enrollment_result(
        self, reply: Reply, operation: str, csr: x509.CertificateSigningRequest
    ) -> list[x509.Certificate] | Pending:
        if reply.status == 202:
            return self._pending(reply)
        if reply.status != 200:
            raise self._unexpected(reply, operation)
        where = _where(operation, reply.url)
        certificates = certificates_of(reply, where)
        return chain_for_key(certificates, csr.public_key(), where, "the request")

    def _pending(self, reply: Reply) -> Pending:
        value = reply.headers.get("retry-after")
        seconds = DEFAULT_PENDING_RETRY
        if value is not None:
            try:
                seconds = wire.parse_retry_after(value, max_seconds=self._max_retry_after)
            except wire.WireError:
                seconds = DEFAULT_PENDING_RETRY
        return Pending(max(1.0, min(seconds, self._max_retry_after)))

    def _unexpected(self, reply: Reply, operation: str) -> EstError:
        where = _where(operation, reply.url)
        text = server_text(reply.body, reply.media_type)
        retry_after: float | None = None
        if reply.status >= 500 and "retry-after" in reply.headers:
            try:
                retry_after = wire.parse_retry_after(
                    reply.headers["retry-after"], max_seconds=self._max_retry_after
                )
            except wire.WireError:
                retry_after = None
        if reply.status == 202:
            return EstError(
                "protocol", f"{where}: the server answered 202 (pending), which this operation does not allow"
            )
        return status_error(
            where,
            reply.status,
            text,
            www_authenticate=reply.headers.get("www-authenticate"),
            retry_after=retry_after,
            credentials=self._credentials_sent(operation),
        )

    def _credentials_sent(self, operation: str) -> str:
        sent = []
        if operation != "cacerts" and self._auth is not None:
            scheme = "Basic" if isinstance(self._auth, BasicAuth) else "Digest"
            sent.append(f"{scheme} credentials for user {self._auth.username[:64]!r}")
        if self._client_cert is not None or operation == "simplereenroll":
            sent.append("a TLS client certificate")
        return " and ".join(sent) or "no credentials"

    def _where(self, operation: str) -> str:
        return _where(operation, self._endpoint.url(operation))


def _http_auth(auth: BasicAuth | DigestAuth | None) -> httpx.Auth | None:
    if isinstance(auth, BasicAuth):
        return httpx.BasicAuth(auth.username, auth.password)
    if isinstance(auth, DigestAuth):
        return (
            _FipsDigestAuth(auth.username, auth.password)
            if fips.enabled()
            else httpx.DigestAuth(auth.username, auth.password)
        )
    return None


class _FipsDigestAuth(httpx.DigestAuth):
    """HTTP Digest in FIPS mode: SHA-256 only (RFC 7616). Of several challenges the server offers, the
    SHA-256 one is answered; MD5 or SHA-1 alone is refused with an ``EstError`` naming FIPS, before any
    response is computed (``hashlib`` would otherwise fall back to its own MD5 outside the provider)."""

    _ALGORITHM_TO_HASH_FUNCTION: dict[str, Callable[[bytes], Any]] = {
        "SHA-256": hashlib.sha256,
        "SHA-256-SESS": hashlib.sha256,
    }

    def _parse_challenge(self, request: httpx.Request, response: httpx.Response, auth_header: str) -> Any:
        offered = [
            super(_FipsDigestAuth, self)._parse_challenge(request, response, header)
            for header in response.headers.get_list("www-authenticate")
            if header.lower().startswith("digest ")
        ]
        for challenge in offered:
            if challenge.algorithm.upper() in self._ALGORITHM_TO_HASH_FUNCTION:
                return challenge
        asked = " or ".join(dict.fromkeys(c.algorithm.upper() for c in offered)) or "MD5"
        raise EstError(
            "config",
            f"EST at {request.url}: "
            + fips.refusal(
                f"the server asks for HTTP Digest with {asked}",
                "Digest with SHA-256 (configure the server for algorithm=SHA-256), or Basic or a TLS "
                "client certificate (spec.authMethod)",
            ),
        )


def _where(operation: str, url: httpx.URL) -> str:
    return f"EST {operation} at {url}"
