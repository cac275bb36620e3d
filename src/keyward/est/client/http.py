"""One EST request over HTTPS: redirects under the trust policy, a deadline, and a cap on the body size.

Redirects are followed here rather than by httpx so that each hop is checked: HTTPS only, no credentials
in the URL, and HTTP credentials (Basic/Digest) sent to the original origin only (RFC 7030 §3.2.1 and
§6: credentials go to servers authenticated through the Explicit TA, and a redirect to another origin is
not the server the user configured). Other hosts are still reached through the same TLS context, so they
must present a certificate that verifies against the same anchors for the host name in the URL. A TLS
client certificate stays with every hop: presenting it discloses no secret.

EST requests cannot be turned into GETs, so every redirect repeats the request with its method and body
(the meaning of 307/308, and what an EST server means by 301/302); a 303 is followed for GETs only.

Some EST servers (Cisco's libest among them) answer one request per connection and then close it without
a ``Connection: close`` header, so HTTP/1.1 keeps the connection for the next request, which then meets
the close. ``FreshConnectionRetry`` sends such a request again on a new connection; it sits below httpx's
authentication, so the second leg of HTTP Digest (the answer to the 401 challenge) is covered as well.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from keyward.est.client.errors import EstError, closed_without_answer, transport_error

logger = logging.getLogger(__name__)

REPEATING_REDIRECTS = frozenset({301, 302, 307, 308})
_ERROR_BODY_LIMIT = 8 * 1024


@dataclass(frozen=True)
class Limits:
    """Seconds and bytes. ``timeout`` bounds each read and, with ``connect_timeout``, each whole hop."""

    timeout: float
    connect_timeout: float
    max_response_bytes: int
    max_redirects: int


@dataclass(frozen=True)
class Reply:
    """A complete response (body read, within the cap)."""

    status: int
    headers: httpx.Headers
    body: bytes
    url: httpx.URL

    @property
    def content_type(self) -> str:
        """The raw Content-Type header value ('' when missing)."""
        value: str = self.headers.get("content-type", "")
        return value

    @property
    def media_type(self) -> str:
        """The Content-Type without parameters, lower case ('' when missing)."""
        return self.content_type.split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class Request:
    """What to send: ``where`` names the operation and URL for error messages."""

    method: str
    url: httpx.URL
    where: str
    body: bytes | None = None
    content_type: str | None = None


async def exchange(
    client: httpx.AsyncClient,
    request: Request,
    *,
    auth: httpx.Auth | None,
    limits: Limits,
    presented_certificate: bool,
) -> Reply:
    """Send ``request``, following redirects as the module docstring says; errors are ``EstError``."""
    url = request.url
    method = request.method
    for _hop in range(limits.max_redirects + 1):
        same_origin = _origin(url) == _origin(request.url)
        reply = await _one_hop(
            client,
            request,
            method,
            url,
            auth=auth if same_origin else None,
            limits=limits,
            presented_certificate=presented_certificate,
        )
        location = reply.headers.get("location")
        following = reply.status in REPEATING_REDIRECTS or (reply.status == 303 and method == "GET")
        if not following or location is None:
            return reply
        url = _redirect_target(reply.url, location, request.where)
    raise EstError(
        "redirect",
        f"{request.where}: more than {limits.max_redirects} redirects; point spec.host, spec.port and "
        "spec.label at the EST server itself",
    )


async def _one_hop(
    client: httpx.AsyncClient,
    request: Request,
    method: str,
    url: httpx.URL,
    *,
    auth: httpx.Auth | None,
    limits: Limits,
    presented_certificate: bool,
) -> Reply:
    headers = {"Accept-Encoding": "identity"}
    if request.content_type is not None:
        headers["Content-Type"] = request.content_type
    outgoing = client.build_request(method, url, content=request.body, headers=headers)
    try:
        async with asyncio.timeout(limits.connect_timeout + limits.timeout):
            response = await client.send(outgoing, auth=auth, stream=True, follow_redirects=False)
            try:
                body = await _read_body(response, limits.max_response_bytes, request.where)
            finally:
                await response.aclose()
    except TimeoutError:
        raise EstError(
            "timeout",
            f"{request.where}: the server did not answer completely within "
            f"{limits.connect_timeout + limits.timeout:g} s; retry later, or raise the timeout",
        ) from None
    except (httpx.TransportError, OSError) as exc:
        # OSError: anyio lets ssl.SSLError (a TLS alert while reading) through httpx unwrapped.
        raise transport_error(exc, request.where, presented_certificate=presented_certificate) from None
    return Reply(response.status_code, response.headers, body, response.url)


async def _read_body(response: httpx.Response, cap: int, where: str) -> bytes:
    """The body, refusing more than ``cap`` bytes; error bodies are cut short instead (only text is shown)."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise EstError(
            "protocol",
            f"{where}: the server sent a {encoding[:20]}-encoded body although the client asked for identity",
            status=response.status_code,
        )
    success = 200 <= response.status_code < 300
    declared = response.headers.get("content-length", "")
    if success and declared.isdigit() and int(declared) > cap:
        raise _too_large(where, cap, response.status_code)
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if not success and len(body) >= _ERROR_BODY_LIMIT:
            break
        if len(body) > cap:
            raise _too_large(where, cap, response.status_code)
    return bytes(body)


def _too_large(where: str, cap: int, status: int) -> EstError:
    return EstError(
        "too-large",
        f"{where}: the response is larger than {cap} bytes, far more than an EST answer needs; check that "
        "the URL points at an EST server",
        status=status,
    )


def _redirect_target(current: httpx.URL, location: str, where: str) -> httpx.URL:
    try:
        target = current.join(location)
    except httpx.InvalidURL:
        raise EstError("redirect", f"{where}: the server redirected to an invalid URL") from None
    if target.scheme != "https":
        raise EstError(
            "redirect",
            f"{where}: the server redirected to a {target.scheme or 'relative'} URL; only HTTPS redirects "
            "are followed (EST needs TLS); configure the final HTTPS address instead",
        )
    if target.userinfo:
        raise EstError(
            "redirect",
            f"{where}: the server redirected to a URL with credentials in it; such redirects are refused",
        )
    return target


class FreshConnectionRetry(httpx.AsyncBaseTransport):
    """Sends a request again on a new connection when a kept-alive one turns out closed by the server.

    Only a request that went out on a reused connection and got no response header at all is sent again:
    the server closed that connection after its previous answer and never read this request, so sending
    it again cannot do anything twice. A failure on a fresh connection is final. httpx drops a connection
    that failed, so each new attempt reuses another kept-alive connection or opens a new one; after
    ``attempts`` the error is the caller's.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, attempts: int = 3) -> None:
        self._inner = inner
        self._attempts = attempts

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        outer_trace = request.extensions.get("trace")
        attempt = 1
        while True:
            watch = _ConnectionWatch(outer_trace)
            request.extensions = {**request.extensions, "trace": watch}
            try:
                return await self._inner.handle_async_request(request)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                stale = not watch.opened and not watch.answered and closed_without_answer(exc)
                if not stale or attempt >= self._attempts:
                    raise
            logger.debug(
                "%s %s: the server had closed the kept-alive connection; sending again on another one",
                request.method,
                request.url,
            )
            attempt += 1

    async def aclose(self) -> None:
        await self._inner.aclose()


class _ConnectionWatch:
    """httpcore's ``trace`` extension: did this attempt open a connection, did response headers arrive?"""

    def __init__(self, outer: Callable[[str, dict[str, Any]], Awaitable[None]] | None) -> None:
        self._outer = outer
        self.opened = False
        self.answered = False

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event.startswith("connection.connect_tcp."):
            self.opened = True
        elif event == "http11.receive_response_headers.complete":
            self.answered = True
        if self._outer is not None:
            await self._outer(event, info)


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, url.host.lower(), url.port or 443
