"""Which TCS issuer answers under which EST label, with its credentials and client trust from Secrets.

The catalog is derived from ``memo.cas`` (the ready TCS issuers) and rebuilt whenever that changes; the
Secrets its CAs read (Basic credentials, client CA certificates) come from a watch-fed cache, so an
enrollment never costs an API call and a changed Secret counts from the next request on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from keyward.est.server.ca import EstCa
from keyward.issuers.tcs.est_ca import BasicCredential, EstServing, TcsEstCa, parse_est_spec
from keyward.kube.resources import decode_bytes
from keyward.operator.services import ReadyCa, Runtime

log = logging.getLogger("keyward.est.operator")

BASIC_AUTH_TYPE = "kubernetes.io/basic-auth"
#: The key of the default CA in the server's mapping: labels are never empty (the CRD pattern says so).
DEFAULT_KEY = ""
_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True)
class CachedSecret:
    """What the EST server may need of a Secret: Basic credentials, public certificates. Nothing else of
    a Secret (private keys, tokens) is kept."""

    type: str
    basic: BasicCredential | None = None
    certificates: Mapping[str, tuple[x509.Certificate, ...]] = field(default_factory=dict)


def cache_entry(body: Mapping[str, Any]) -> CachedSecret:
    secret_type = str(body.get("type") or "Opaque")
    data = body.get("data") or {}
    basic = None
    if secret_type == BASIC_AUTH_TYPE:
        username, password = decode_bytes(data.get("username")), decode_bytes(data.get("password"))
        if username is not None and password is not None:
            basic = BasicCredential(username.decode(errors="replace"), password.decode(errors="replace"))
    certificates: dict[str, tuple[x509.Certificate, ...]] = {}
    for key, value in data.items():
        decoded = decode_bytes(value)
        if decoded is not None and decoded.lstrip().startswith(_PEM_CERTIFICATE):
            try:
                certificates[str(key)] = tuple(x509.load_pem_x509_certificates(decoded))
            except ValueError:
                continue
    return CachedSecret(secret_type, basic, certificates)


class SecretCache:
    """Secrets by (namespace, name), fed by a watch handler."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], CachedSecret] = {}

    def update(self, event_type: str | None, body: Mapping[str, Any]) -> bool:
        """Apply a watch event; True when what the EST server sees of the Secret changed."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if event_type == "DELETED":
            return self._entries.pop(key, None) is not None
        entry = cache_entry(body)
        if self._entries.get(key) == entry:
            return False
        self._entries[key] = entry
        return True

    def get(self, namespace: str, name: str) -> CachedSecret | None:
        return self._entries.get((namespace, name))

    def __contains__(self, key: object) -> bool:
        return key in self._entries


@dataclass(frozen=True)
class ServedIssuer:
    ready: ReadyCa
    serving: EstServing
    secret_namespace: str
    inline_trust: tuple[x509.Certificate, ...] = ()


class EstCatalog:
    """The server's CA mapping (label → CA, plus the default under ``DEFAULT_KEY``), rebuilt lazily."""

    def __init__(self, memo: Runtime, secrets: SecretCache) -> None:
        self._memo = memo
        self._secrets = secrets
        self._basis: list[ReadyCa] = []
        self._cas: dict[str, EstCa] = {}
        self._issuers: dict[str, ServedIssuer] = {}
        self._referenced: frozenset[tuple[str, str]] = frozenset()
        self._warned: set[str] = set()

    def cas(self) -> Mapping[str, EstCa]:
        """What the EST server serves now; called on every request, so it only compares identities
        unless an issuer came, went or changed."""
        current = [ready for ready in self._memo.cas.values() if ready.est is not None]
        changed = len(current) != len(self._basis)
        if changed or any(a is not b for a, b in zip(current, self._basis, strict=True)):
            self._rebuild(current)
        return self._cas

    def issuer_for(self, label: str) -> ServedIssuer | None:
        self.cas()
        return self._issuers.get(label)

    def referenced_secrets(self) -> frozenset[tuple[str, str]]:
        """(namespace, name) of every Secret a served issuer reads: the only Secrets worth caching."""
        self.cas()
        return self._referenced

    def forget_warnings(self) -> None:
        """Secrets changed: problems found from now on are worth a log line again."""
        self._warned.clear()

    def _rebuild(self, current: list[ReadyCa]) -> None:
        self._basis = current
        self._warned.clear()
        cas: dict[str, EstCa] = {}
        issuers: dict[str, ServedIssuer] = {}
        for ready in sorted(current, key=lambda r: r.ref.signer_name):
            served = self._served(ready)
            label = served.serving.label
            if label in issuers:
                log.warning(
                    "%s is not served over EST: label %r is taken by %s; set spec.est.label to another label",
                    ready.ref,
                    label,
                    issuers[label].ready.ref,
                )
                continue
            cas[label], issuers[label] = self._ca(served), served
            if served.serving.default:
                if DEFAULT_KEY in issuers:
                    log.warning(
                        "%s asks to be the default EST CA, but %s is already; "
                        "set spec.est.default on one issuer only",
                        ready.ref,
                        issuers[DEFAULT_KEY].ready.ref,
                    )
                else:
                    cas[DEFAULT_KEY], issuers[DEFAULT_KEY] = cas[label], served
        self._cas, self._issuers = cas, issuers
        self._referenced = frozenset(
            (served.secret_namespace, name)
            for served in issuers.values()
            for name in (served.serving.basic_auth_secret, (served.serving.client_ca_secret or (None,))[0])
            if name
        )
        served_labels = sorted(label for label in issuers if label != DEFAULT_KEY)
        log.info("EST server CAs: %s", ", ".join(served_labels) or "none")

    def _served(self, ready: ReadyCa) -> ServedIssuer:
        serving = parse_est_spec(ready.ref.name, ready.est or {})
        namespace = ready.ref.namespace or self._memo.settings.operator_namespace
        inline: tuple[x509.Certificate, ...] = ()
        if serving.client_ca_pem:
            try:
                inline = tuple(x509.load_pem_x509_certificates(serving.client_ca_pem.encode()))
            except ValueError:
                log.warning(
                    "%s: spec.est.clientCATrust.pem holds no readable PEM certificate; "
                    "no client certificate is trusted until it is fixed",
                    ready.ref,
                )
        return ServedIssuer(ready, serving, namespace, inline)

    def _ca(self, served: ServedIssuer) -> TcsEstCa:
        return TcsEstCa(
            served.serving.label,
            served.ready.ca,
            served.ready.policy,
            self._memo.tokens.get,
            credentials=lambda: self._credentials(served),
            client_trust=lambda: self._client_trust(served),
            on_token_fault=lambda _exc: self._out_of_service(served.ready),
        )

    def _credentials(self, served: ServedIssuer) -> BasicCredential | None:
        name = served.serving.basic_auth_secret
        if name is None:
            return None
        entry = self._secrets.get(served.secret_namespace, name)
        where = f"{served.secret_namespace}/{name}"
        if entry is None:
            self._warn_once(
                f"{served.ready.ref}: Secret {where} (spec.est.basicAuthSecretRef) does not exist; "
                "HTTP Basic enrollment is refused until it does"
            )
            return None
        if entry.basic is None:
            self._warn_once(
                f"{served.ready.ref}: Secret {where} (spec.est.basicAuthSecretRef) must be of type "
                f"{BASIC_AUTH_TYPE} with keys username and password (it is {entry.type}); "
                "HTTP Basic enrollment is refused until it is"
            )
        return entry.basic

    def _client_trust(self, served: ServedIssuer) -> tuple[x509.Certificate, ...]:
        reference = served.serving.client_ca_secret
        if reference is None:
            return served.inline_trust
        name, key = reference
        entry = self._secrets.get(served.secret_namespace, name)
        certificates = entry.certificates.get(key) if entry is not None else None
        if certificates is None:
            self._warn_once(
                f"{served.ready.ref}: Secret {served.secret_namespace}/{name} has no PEM certificate under "
                f"key {key!r} (spec.est.clientCATrust.secretRef); no client certificate is trusted"
            )
            return served.inline_trust
        return served.inline_trust + certificates

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)

    def _out_of_service(self, ready: ReadyCa) -> None:
        """The token failed while signing: take the issuer out until its re-check brings it back, as the
        request signing pipeline does."""
        if self._memo.cas.get(ready.ref.signer_name) is ready:
            self._memo.cas.pop(ready.ref.signer_name, None)
