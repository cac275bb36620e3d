"""The EST server inside the operator: every ready TCS issuer with spec.est, on one port.

Off until the first such issuer is ready, then started on the operator's event loop (``--est-listen``)
and kept running. Its TLS certificate comes from a ``tls_sources`` source. Each enrollment is an audit
log line (the EST server's) and a Kubernetes Event on the issuer (reason ``Enrolled``).

One supervisor task does all of it: it wakes up when an issuer turns ready, when a Secret the server
depends on changes, and when the TLS certificate is due, and retries with backoff what failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from keyward.errors import UserError
from keyward.est.server import AuditRecord, EstServer, ServerTls, TlsSetupError
from keyward.host import ListenAddress, cancel
from keyward.issuers.tcs.est_ca import certificate_names
from keyward.operator import metrics
from keyward.operator.est_server.catalog import DEFAULT_KEY, EstCatalog
from keyward.operator.est_server.claims import EstClaims
from keyward.operator.est_server.tls_sources import TlsMaterial, TlsSource
from keyward.operator.secrets import SecretStore
from keyward.operator.status import Events
from keyward.operator.tcs.cas import ReadyCas
from keyward.operator.tcs.token import TokenProvider

log = logging.getLogger("keyward.est.operator")
MAX_BACKOFF_SECONDS = 60.0
#: Why no issuer is served when the operator has no TLS certificate for the EST server.
UNCONFIGURED_MESSAGE = (
    "the EST server has no TLS certificate: start the operator with --est-tls-secret NS/NAME, "
    "or --est-issuer KIND/NS/NAME and --est-hostnames"
)


class EstService:
    """The operator's EST server and the task that keeps it right."""

    def __init__(
        self,
        *,
        cas: ReadyCas,
        tokens: TokenProvider,
        secrets: SecretStore,
        events: Events,
        source: TlsSource | None,
        listen: ListenAddress,
        operator_namespace: str,
        claims: EstClaims | None = None,
        read_issuers: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._events = events
        self._listen = listen
        self.claims = claims or EstClaims(operator_namespace=operator_namespace)
        #: Reads every TCS issuer once before the server first serves, so that each label's first
        #: claimant is known before anyone is served under it (their events may still be on the way).
        self._read_issuers = read_issuers
        self.catalog = EstCatalog(
            cas, tokens, secrets, operator_namespace, self.claims, server_names=self.server_names
        )
        self._source = source
        self.server: EstServer | None = None
        self._tls: ServerTls | None = None
        self._served: TlsMaterial | None = None
        self._names: tuple[TlsMaterial | None, tuple[str, ...]] = (None, ())
        self._trust: frozenset[bytes] = frozenset()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unconfigured_reported: set[str] = set()
        self._rejected: TlsMaterial | None = None
        cas.listen(self._on_ca_ready)
        secrets.listen(self._on_secret)

    def server_names(self) -> tuple[str, ...]:
        """The names clients reach the server by, those its TLS certificate carries: no device enrolls
        for one of them with server auth (policy rule est-server-names)."""
        served = self._served
        if served is None:
            return ()
        if self._names[0] is not served:
            leaf = x509.load_pem_x509_certificates(served.chain_pem)[0]
            self._names = (served, tuple(certificate_names(leaf)))
        return self._names[1]

    # -- what wakes the server -----------------------------------------------------------------------

    def _on_ca_ready(self, _label: str) -> None:
        self._poke()

    def _on_secret(self, namespace: str, name: str, _secret: Mapping[str, Any] | None) -> None:
        """A watched Secret changed: the TLS Secret, or one a served issuer reads."""
        key = (namespace, name)
        ours = self._source is not None and self._source.watches(*key)
        if ours or key in self.catalog.referenced_secrets():
            self.catalog.forget_warnings()
            self._poke()

    def _poke(self) -> None:
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._supervise(), name="est-server")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)
        server, self.server = self.server, None
        if server is not None:
            await server.stop()

    # -- the supervisor ------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        backoff = 1.0
        while True:
            self._wake.clear()
            timeout: float | None
            try:
                timeout = await self._step()
                backoff = 1.0
            except Exception as exc:
                if isinstance(exc, UserError):
                    log.error("EST server: %s; retrying in %.0fs", exc, backoff)
                else:
                    log.exception("EST server: unexpected failure; retrying in %.0fs", backoff)
                timeout, backoff = backoff, min(backoff * 2, MAX_BACKOFF_SECONDS)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _step(self) -> float | None:
        """Bring the server in line; returns how long to sleep unless woken (None: until woken)."""
        if self.server is None and not self.catalog.cas():
            return None
        await self.catalog.load_secrets()
        if self._source is None:
            self._report_unconfigured()
            return None
        material = await self._source.current()
        if material is None:
            return self._source.seconds_until_due()
        if self.server is None:
            await self._start(material)
        elif material not in (self._served, self._rejected) and self._tls is not None:
            try:
                self._tls.reload_certificate(material.chain_pem, material.key_pem)
            except TlsSetupError as exc:  # keep serving the old one; try again once the source changes
                self._rejected = material
                log.error(
                    "the EST server keeps its TLS certificate: the one from %s is unusable: %s",
                    self._source.description,
                    exc,
                )
            else:
                self._served = material
                log.info("the EST server now serves a new TLS certificate from %s", self._source.description)
        self._refresh_trust()
        return self._source.seconds_until_due()

    async def _start(self, material: TlsMaterial) -> None:
        if self._read_issuers is not None:
            await self._read_issuers()
        server = EstServer(self.catalog.cas, default_label=DEFAULT_KEY, audit=self._audit, observe=_observe)
        tls = ServerTls(material.chain_pem, material.key_pem, server.client_trust_anchors())
        listen = self._listen
        try:
            await server.start(listen.host, listen.port, tls.context)
        except OSError as exc:
            reason = "the address is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise UserError(
                f"cannot listen on {listen} ({reason or exc})", "free the port or change --est-listen"
            ) from None
        self.server, self._tls, self._served = server, tls, material
        self._trust = _fingerprints(server.client_trust_anchors())

    def _refresh_trust(self) -> None:
        if self.server is None or self._tls is None:
            return
        anchors = self.server.client_trust_anchors()
        fingerprints = _fingerprints(anchors)
        if fingerprints != self._trust:
            self._tls.set_client_trust(anchors)
            self._trust = fingerprints

    def _report_unconfigured(self) -> None:
        """Said once per issuer: spec.est asks for a server that has no certificate to serve with."""
        message = UNCONFIGURED_MESSAGE
        for label in list(self.catalog.cas()):
            issuer = self.catalog.issuer_for(label)
            if label == DEFAULT_KEY or issuer is None or label in self._unconfigured_reported:
                continue
            self._unconfigured_reported.add(label)
            log.warning("%s is not served over EST: %s", issuer.ready.ref, message)
            if issuer.ready.event_body is not None:
                self._post(issuer.ready.event_body, "EstNotServed", message, warning=True)

    # -- audit: one Event per enrollment on the issuer -----------------------------------------------

    def _audit(self, record: AuditRecord) -> None:
        issuer = self.catalog.issuer_for(record.label)
        if issuer is None or issuer.ready.event_body is None:
            return
        self._post(issuer.ready.event_body, "Enrolled", event_message(record))

    def _post(self, body: Mapping[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
        self._events.post(body, reason, message, warning=warning)


def _observe(operation: str, status: int, _seconds: float) -> None:
    metrics.EST_REQUESTS.labels(operation, str(status)).inc()


def event_message(record: AuditRecord) -> str:
    """Who enrolled and what they got: names and numbers only, never a secret."""
    sans = ", ".join(record.sans) or "none"
    text = (
        f"EST {record.operation} by {record.client}: subject {record.subject or '(empty)'}, SANs {sans}, "
        f"serial {record.serial:x}, not after {record.not_after.isoformat()}"
    )
    return text[:1000]


def _fingerprints(certificates: list[x509.Certificate]) -> frozenset[bytes]:
    return frozenset(c.fingerprint(hashes.SHA256()) for c in certificates)
