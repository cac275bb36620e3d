"""The EST server inside the operator: every ready TCS issuer with spec.est, on one port.

Off until the first such issuer is ready, then started on the operator's event loop (``--est-listen``)
and kept running. Its TLS certificate comes from a kubernetes.io/tls Secret (``--est-tls-secret``,
reloaded when it changes) or is issued, with an in-memory key, by a TCS issuer (``--est-issuer`` for
``--est-hostnames``) and renewed at two thirds of its lifetime. Each enrollment is an audit log line (the
EST server's) and a Kubernetes Event on the issuer (reason ``Enrolled``).

One supervisor task does all of it: it wakes up when an issuer turns ready, when a Secret the server
depends on changes, and when the TLS certificate is due, and retries with backoff what failed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import contextvars
import errno
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import kopf
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from keyward.errors import UserError
from keyward.est.server import AuditRecord, EstServer, ServerTls, TlsSetupError
from keyward.issuers.signer_names import IssuerRef
from keyward.issuers.tcs.est_ca import issue_tls_server_certificate, parse_issuer_reference, renewal_time
from keyward.kube.resources import SECRETS
from keyward.operator.est_server.catalog import DEFAULT_KEY, EstCatalog, SecretCache
from keyward.operator.registry import registry
from keyward.operator.services import Runtime

log = logging.getLogger("keyward.est.operator")

SERVICE_KEY = "est_service"
#: Re-read the TLS Secret this often even without a watch event (a namespace-scoped operator may not
#: watch the Secret's namespace).
SECRET_POLL_SECONDS = 300.0
MAX_BACKOFF_SECONDS = 60.0
TLS_SECRET_TYPE = "kubernetes.io/tls"  # noqa: S105 - a Secret type


@dataclass(frozen=True)
class TlsMaterial:
    chain_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:
        return "TlsMaterial(<certificate chain>, <key>)"


class TlsSource(Protocol):
    description: str

    async def current(self) -> TlsMaterial | None:
        """What to serve now (loading or issuing it when due); None while it is not available yet."""
        ...

    def seconds_until_due(self) -> float: ...

    def offer(self, event_type: str | None, body: Mapping[str, Any]) -> bool:
        """A Secret watch event: True when it concerns this source (the caller then wakes the server)."""
        ...

    def watches(self, namespace: str, name: str) -> bool: ...


class SecretTls:
    """``--est-tls-secret NS/NAME``: a kubernetes.io/tls Secret, followed by watch events and polling."""

    def __init__(self, memo: Runtime, reference: str) -> None:
        self._memo = memo
        self.namespace, _, self.name = reference.partition("/")
        self.description = f"Secret {reference}"
        self._latest: TlsMaterial | None = None
        self._next_poll = 0.0

    def watches(self, namespace: str, name: str) -> bool:
        return (namespace, name) == (self.namespace, self.name)

    def offer(self, event_type: str | None, body: Mapping[str, Any]) -> bool:
        meta = body.get("metadata") or {}
        if not self.watches(meta.get("namespace") or "", meta.get("name") or ""):
            return False
        if event_type != "DELETED":
            material = self._material(body)
            if material is not None:
                self._latest = material
        return True

    async def current(self) -> TlsMaterial | None:
        if time.monotonic() >= self._next_poll:
            body = await self._memo.api.find(SECRETS, self.name, self.namespace)
            self._next_poll = time.monotonic() + SECRET_POLL_SECONDS
            if body is None:
                log.warning(
                    "the EST server's TLS Secret %s/%s does not exist; create it (kubernetes.io/tls) "
                    "or start the operator with another --est-tls-secret",
                    self.namespace,
                    self.name,
                )
            else:
                self._latest = self._material(body) or self._latest
        return self._latest

    def seconds_until_due(self) -> float:
        return max(1.0, self._next_poll - time.monotonic())

    def _material(self, body: Mapping[str, Any]) -> TlsMaterial | None:
        data = body.get("data") or {}
        try:
            chain = base64.b64decode(data.get("tls.crt") or "", validate=True)
            key = base64.b64decode(data.get("tls.key") or "", validate=True)
        except (binascii.Error, ValueError):
            chain = key = b""
        if body.get("type") != TLS_SECRET_TYPE or not chain or not key:
            log.warning(
                "the EST server's TLS Secret %s/%s must be of type %s with tls.crt and tls.key",
                self.namespace,
                self.name,
                TLS_SECRET_TYPE,
            )
            return None
        return TlsMaterial(chain, key)


class IssuerTls:
    """``--est-issuer``: a certificate from a TCS issuer for ``--est-hostnames``, key in memory only."""

    def __init__(
        self,
        memo: Runtime,
        ref: IssuerRef,
        hostnames: tuple[str, ...],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._memo = memo
        self._now = now
        self._ref = ref
        self._hostnames = hostnames
        self.description = f"{ref} for {', '.join(hostnames)}"
        self._material: TlsMaterial | None = None
        self._due: datetime | None = None
        self._waiting_logged = False

    def watches(self, namespace: str, name: str) -> bool:
        return False

    def offer(self, event_type: str | None, body: Mapping[str, Any]) -> bool:
        return False

    async def current(self) -> TlsMaterial | None:
        if self._material is not None and self._due is not None and self._now() < self._due:
            return self._material
        ready = self._memo.cas.get(self._ref.signer_name)
        if ready is None:
            if not self._waiting_logged:
                log.info("the EST server waits for %s to be ready to issue its TLS certificate", self._ref)
                self._waiting_logged = True
            return self._material
        store = await self._memo.tokens.get()
        issued = await store.run(issue_tls_server_certificate, ready.ca, self._hostnames, ready.policy)
        self._material = TlsMaterial(issued.chain_pem, issued.key_pem)
        self._due = renewal_time(issued.certificate)
        log.info(
            "issued the EST server's TLS certificate from %s for %s, serial %x; renewal at %s",
            self._ref,
            ", ".join(self._hostnames),
            issued.certificate.serial_number,
            self._due.isoformat(),
        )
        return self._material

    def seconds_until_due(self) -> float:
        if self._due is None:
            return SECRET_POLL_SECONDS  # waiting for the issuer: its readiness wakes us sooner
        return max(1.0, (self._due - self._now()).total_seconds())


def tls_source(memo: Runtime) -> TlsSource | None:
    settings = memo.settings
    if settings.est_tls_secret:
        return SecretTls(memo, settings.est_tls_secret)
    if settings.est_issuer:
        return IssuerTls(memo, parse_issuer_reference(settings.est_issuer), settings.est_hostnames)
    return None


class EstService:
    """The operator's EST server and the task that keeps it right."""

    def __init__(self, memo: Runtime) -> None:
        self._memo = memo
        self.secrets = SecretCache()
        self.catalog = EstCatalog(memo, self.secrets)
        self._source = tls_source(memo)
        self.server: EstServer | None = None
        self._tls: ServerTls | None = None
        self._served: TlsMaterial | None = None
        self._trust: frozenset[bytes] = frozenset()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._kopf_context: contextvars.Context | None = None
        self._unconfigured_reported: set[str] = set()
        self._prefetched: set[tuple[str, str]] = set()
        self._rejected: TlsMaterial | None = None

    # -- entry points, called from kopf handlers ----------------------------------------------------

    def on_ca_ready(self, _label: str) -> None:
        self._poke()

    def wants(self, body: Mapping[str, Any]) -> bool:
        """Whether a Secret event matters: the TLS Secret, Secrets served issuers read, and cached ones
        (so their updates and deletions count). Other Secrets never reach the handler."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if key in self.secrets or (self._source is not None and self._source.watches(*key)):
            return True
        return key in self.catalog.referenced_secrets()

    def on_secret(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        changed = self.secrets.update(event_type, body)
        if changed:
            self.catalog.forget_warnings()
        if (self._source is not None and self._source.offer(event_type, body)) or (
            changed and self.server is not None
        ):
            self._poke()

    def _poke(self) -> None:
        # Handlers run in kopf's context, which Events are posted through: keep one for the audit hook.
        self._kopf_context = contextvars.copy_context()
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._supervise(), name="est-server")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
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
        await self._prefetch_secrets()
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

    async def _prefetch_secrets(self) -> None:
        """Read once the Secrets an issuer started to reference before the watch had a reason to keep
        them (the watch only passes Secrets that matter at the time of the event)."""
        for namespace, name in self.catalog.referenced_secrets() - self._prefetched:
            self._prefetched.add((namespace, name))
            if (namespace, name) not in self.secrets:
                body = await self._memo.api.find(SECRETS, name, namespace)
                if body is not None and (namespace, name) not in self.secrets:
                    self.secrets.update("ADDED", body)
                    self.catalog.forget_warnings()

    async def _start(self, material: TlsMaterial) -> None:
        server = EstServer(self.catalog.cas, default_label=DEFAULT_KEY, audit=self._audit)
        tls = ServerTls(material.chain_pem, material.key_pem, server.client_trust_anchors())
        listen = self._memo.settings.est_listen
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
        message = (
            "the EST server has no TLS certificate: start the operator with --est-tls-secret NS/NAME, "
            "or --est-issuer KIND/NS/NAME and --est-hostnames"
        )
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
        if self._kopf_context is None:
            return
        post = kopf.warn if warning else kopf.info
        try:
            self._kopf_context.copy().run(post, cast(Any, dict(body)), reason=reason, message=message)
        except LookupError:  # not called from a kopf handler (tests): the log line has to do
            log.debug("no kopf context to post the %s Event in", reason)


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


# -- kopf wiring -------------------------------------------------------------------------------------


@kopf.on.startup(registry=registry)
async def install_est_service(memo: Runtime, **_: Any) -> None:
    service = EstService(memo)
    memo.extras[SERVICE_KEY] = service
    memo.extras.setdefault("ca_ready_listeners", []).append(service.on_ca_ready)


def _wanted_secret(body: Any, memo: Runtime, **_: Any) -> bool:
    service = memo.extras.get(SERVICE_KEY)
    return service is not None and bool(service.wants(body))


@kopf.on.event("", "v1", "secrets", when=_wanted_secret, registry=registry)
async def watch_est_secrets(type: str | None, body: Any, memo: Runtime, **_: Any) -> None:
    """Feed the Secret cache (Basic credentials, client CAs) and the TLS Secret: no GET per enrollment."""
    service = memo.extras.get(SERVICE_KEY)
    if service is not None:
        service.on_secret(type, body)


@kopf.on.cleanup(registry=registry)
async def stop_est_server(memo: Runtime, **_: Any) -> None:
    service = memo.extras.get(SERVICE_KEY)
    if service is not None:
        await service.stop()
