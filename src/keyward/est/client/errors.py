"""What can go wrong talking to an EST server, as one exception type with a ``kind`` a caller can act on.

The operator decides from ``kind`` whether to retry (``timeout``, ``connect``, ``server``, ``auth`` with
re-read credentials) or to give up and report (``config``, ``tls``, ``client``, ``protocol``, ``redirect``,
``too-large``). Messages name the problem and the fix. They quote the server's own text (trimmed) but
never the client's credentials or keys: nothing secret is ever passed in here.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator
from typing import Literal, TypeVar

import httpx

ErrorKind = Literal[
    "auth", "client", "server", "tls", "timeout", "connect", "protocol", "redirect", "too-large", "config"
]

SERVER_TEXT_LIMIT = 300

# Alerts a TLS server sends about the certificate the client presented (OpenSSL's reason codes).
_CLIENT_CERTIFICATE_ALERTS = frozenset(
    {
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    }
)
# X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_NAME_MISMATCH_CODES = frozenset({62, 64})
# X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED
_VALIDITY_CODES = frozenset({9, 10})
_E = TypeVar("_E", bound=BaseException)
_TAGS = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


class EstError(Exception):
    """An EST operation failed; ``str()`` says what happened and what to change.

    ``status`` is the HTTP status when the server answered. ``retry_after`` is the server's Retry-After in
    seconds when it sent one with an error (503). ``client_certificate_refused`` is true when the server
    rejected the TLS client certificate during the handshake (the re-enrollment fallback keys on it).
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        client_certificate_refused: bool = False,
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.client_certificate_refused = client_certificate_refused

    def __repr__(self) -> str:
        return f"EstError(kind={self.kind!r}, status={self.status!r}, message={self.message!r})"


def server_text(body: bytes, content_type: str) -> str:
    """The server's explanation from an error body: tags and control characters out, ~300 characters."""
    text = body[: SERVER_TEXT_LIMIT * 8].decode("utf-8", errors="replace")
    if "html" in content_type or text.lstrip().startswith("<"):
        text = _TAGS.sub(" ", text)
    text = _SPACE.sub(" ", "".join(c if c.isprintable() else " " for c in text)).strip()
    if len(text) > SERVER_TEXT_LIMIT:
        text = text[: SERVER_TEXT_LIMIT - 3].rstrip() + "..."
    return text


def status_error(
    where: str,
    status: int,
    text: str,
    *,
    www_authenticate: str | None = None,
    retry_after: float | None = None,
    credentials: str,
) -> EstError:
    """The error for an HTTP error status. ``credentials`` describes what the client sent (no secrets)."""
    said = f": {text}" if text else ""
    if status == 401:
        schemes = _challenge_schemes(www_authenticate)
        asks = f"it asks for {' or '.join(schemes)}" if schemes else "it sent no WWW-Authenticate challenge"
        return EstError(
            "auth",
            f"{where}: the server refused the credentials (401; {asks}; the client sent {credentials})"
            f"{said}; "
            "check the user name and password (spec.secretName) or the client certificate "
            "(spec.clientCertSecretName) and spec.authMethod",
            status=status,
        )
    if 400 <= status < 500:
        return EstError(
            "client",
            f"{where}: the server refused the request ({status}){said}; the server's message says what to "
            "change (wrong label, a CSR its policy refuses, missing authorization)",
            status=status,
        )
    if 500 <= status < 600:
        later = f"; it asks to retry after {retry_after:.0f} s" if retry_after is not None else ""
        return EstError(
            "server",
            f"{where}: the server failed ({status}){said}{later}; this is a problem of the EST server, "
            "retry later or ask its operator",
            status=status,
            retry_after=retry_after,
        )
    return EstError(
        "protocol",
        f"{where}: the server answered with the unexpected status {status}{said}",
        status=status,
    )


def transport_error(exc: BaseException, where: str, *, presented_certificate: bool) -> EstError:
    """Translate a connection, TLS or timeout failure of httpx into an ``EstError``."""
    if isinstance(exc, httpx.TimeoutException):
        phase = "connecting" if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout) else "waiting"
        return EstError(
            "timeout",
            f"{where}: timed out {phase} for the server; check that the host and port reach an EST server "
            "and that it is not overloaded, or raise the timeout",
        )
    verification = _find(exc, ssl.SSLCertVerificationError)
    if verification is not None:
        return _verification_error(verification, where)
    tls = _find(exc, ssl.SSLError)
    if tls is not None and not isinstance(tls, ssl.SSLEOFError):
        return _tls_error(tls, where, presented_certificate=presented_certificate)
    if presented_certificate and closed_without_answer(exc):
        # Servers on Python's asyncio (ours among them) drop the connection instead of sending an alert.
        return EstError(
            "tls",
            f"{where}: the server closed the connection during TLS set-up without answering, which is how "
            "some servers refuse a TLS client certificate; use a certificate issued by a CA the EST server "
            "trusts for clients, still valid, with its own key",
            client_certificate_refused=True,
        )
    if tls is not None:
        return _tls_error(tls, where, presented_certificate=False)
    if isinstance(exc, httpx.ConnectError):
        return _connect_error(exc, where)
    if isinstance(exc, httpx.RemoteProtocolError):
        return EstError(
            "server",
            f"{where}: the server closed the connection without a valid answer ({_short(exc)}); retry later, "
            "and check that the port serves HTTPS",
        )
    return EstError("server", f"{where}: the connection to the server failed ({_short(exc)}); retry later")


def _verification_error(error: ssl.SSLCertVerificationError, where: str) -> EstError:
    detail = error.verify_message or error.reason or "rejected"
    if error.verify_code in _NAME_MISMATCH_CODES:
        fix = (
            "the server certificate is not issued for the host name or address the client connects to "
            f"({detail}); set spec.host to a name the certificate lists, or fix the server certificate"
        )
    elif error.verify_code in _VALIDITY_CODES:
        fix = f"the server certificate is not valid now ({detail}); the EST server must renew its certificate"
    else:
        fix = (
            f"the server certificate does not verify against the configured trust anchors ({detail}); "
            "put the CA of the EST server's TLS certificate into spec.cacert (the system trust store is "
            "never used)"
        )
    return EstError("tls", f"{where}: TLS failed: {fix}")


def _tls_error(error: ssl.SSLError, where: str, *, presented_certificate: bool) -> EstError:
    reason = error.reason or _short(error)
    if presented_certificate and reason in _CLIENT_CERTIFICATE_ALERTS:
        return EstError(
            "tls",
            f"{where}: the server refused the TLS client certificate ({reason}); use a certificate issued "
            "by a CA the EST server trusts for clients, still valid, with its own key",
            client_certificate_refused=True,
        )
    return EstError(
        "tls",
        f"{where}: the TLS handshake failed ({reason}); the server must offer TLS 1.2 or later with "
        "forward-secret ciphers, and speak HTTPS on that port",
    )


def closed_without_answer(exc: BaseException) -> bool:
    """Whether the server closed the connection (or reset it) before a response arrived."""
    if _find(exc, ssl.SSLEOFError) is not None or isinstance(exc, httpx.ReadError | ConnectionError):
        return True
    return isinstance(exc, httpx.RemoteProtocolError) and "without sending a response" in str(exc)


def _connect_error(exc: BaseException, where: str) -> EstError:
    if _find(exc, socket.gaierror) is not None:
        problem = "the host name does not resolve; check spec.host"
    elif _find(exc, ConnectionRefusedError) is not None:
        problem = "the connection was refused; check spec.host and spec.port and that the EST server runs"
    else:
        problem = f"cannot connect ({_short(exc)}); check spec.host, spec.port and the network path"
    return EstError("connect", f"{where}: {problem}")


def _challenge_schemes(header: str | None) -> list[str]:
    """Auth schemes of a WWW-Authenticate value: the first word of each challenge, no parameters."""
    if not header:
        return []
    schemes: list[str] = []
    for piece in _QUOTED.sub('""', header).split(","):
        words = piece.split()
        if words and "=" not in words[0] and words[0].lower() not in {s.lower() for s in schemes}:
            schemes.append(words[0][:20])
    return schemes[:4]


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _find(exc: BaseException, kind: type[_E]) -> _E | None:
    return next((cause for cause in _causes(exc) if isinstance(cause, kind)), None)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]
