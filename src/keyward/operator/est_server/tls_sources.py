"""Where the operator's EST server gets its TLS certificate.

From a kubernetes.io/tls Secret (``--est-tls-secret``, reloaded when it changes), or issued with an
in-memory key by a TCS issuer (``--est-issuer`` for ``--est-hostnames``) and renewed at two thirds of
its lifetime.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from keyward.issuers.signer_names import IssuerRef
from keyward.issuers.tcs.est_ca import issue_tls_server_certificate, parse_issuer_reference, renewal_time
from keyward.kube.resources import TLS_SECRET_TYPE
from keyward.operator.secrets import SecretStore
from keyward.operator.settings import Settings
from keyward.operator.tcs.cas import ReadyCas
from keyward.operator.tcs.token import TokenProvider

log = logging.getLogger("keyward.est.operator")
#: How long to wait for the issuer of ``--est-issuer`` before asking again (its readiness wakes us sooner).
ISSUER_WAIT_SECONDS = 300.0


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

    def seconds_until_due(self) -> float | None:
        """When to ask ``current`` again unless woken (None: only when woken)."""
        ...

    def watches(self, namespace: str, name: str) -> bool:
        """Whether a change of this Secret concerns the source (the server then wakes)."""
        ...


class SecretTls:
    """``--est-tls-secret NS/NAME``: a kubernetes.io/tls Secret, followed by its own narrowed watch."""

    def __init__(self, secrets: SecretStore, reference: str) -> None:
        self._secrets = secrets
        self.namespace, _, self.name = reference.partition("/")
        self.description = f"Secret {reference}"
        self._latest: TlsMaterial | None = None
        self._missing_reported = False

    def watches(self, namespace: str, name: str) -> bool:
        return (namespace, name) == (self.namespace, self.name)

    async def current(self) -> TlsMaterial | None:
        body = await self._secrets.get(self.namespace, self.name)
        if body is None:
            if not self._missing_reported:
                log.warning(
                    "the EST server's TLS Secret %s/%s does not exist; create it (kubernetes.io/tls) "
                    "or start the operator with another --est-tls-secret",
                    self.namespace,
                    self.name,
                )
                self._missing_reported = True
        else:
            self._missing_reported = False
            self._latest = self._material(body) or self._latest
        return self._latest

    def seconds_until_due(self) -> float | None:
        return None  # a change of the Secret wakes the server

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
        cas: ReadyCas,
        tokens: TokenProvider,
        ref: IssuerRef,
        hostnames: tuple[str, ...],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._cas = cas
        self._tokens = tokens
        self._now = now
        self._ref = ref
        self._hostnames = hostnames
        self.description = f"{ref} for {', '.join(hostnames)}"
        self._material: TlsMaterial | None = None
        self._due: datetime | None = None
        self._waiting_logged = False

    def watches(self, namespace: str, name: str) -> bool:
        return False

    async def current(self) -> TlsMaterial | None:
        if self._material is not None and self._due is not None and self._now() < self._due:
            return self._material
        ready = self._cas.get(self._ref.signer_name)
        if ready is None:
            if not self._waiting_logged:
                log.info("the EST server waits for %s to be ready to issue its TLS certificate", self._ref)
                self._waiting_logged = True
            return self._material
        store = await self._tokens.get()
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

    def seconds_until_due(self) -> float | None:
        if self._due is None:
            return ISSUER_WAIT_SECONDS  # waiting for the issuer: its readiness wakes us sooner
        return max(1.0, (self._due - self._now()).total_seconds())


def tls_source(
    settings: Settings, secrets: SecretStore, cas: ReadyCas, tokens: TokenProvider
) -> TlsSource | None:
    if settings.est_tls_secret:
        return SecretTls(secrets, settings.est_tls_secret)
    if settings.est_issuer:
        return IssuerTls(cas, tokens, parse_issuer_reference(settings.est_issuer), settings.est_hostnames)
    return None
