"""Which TCS issuer answers under which EST label, with its credentials and client trust from Secrets.

The catalog serves each label's holder (``est_server.claims``: first come keeps a label) while that
issuer is ready, and is rebuilt whenever the ready TCS CAs or the claims change; the Secrets its CAs read
(Basic credentials, client CA certificates) come from the watch-fed ``SecretStore``, so an enrollment
never costs an API call and a changed Secret counts from the next request on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from keyward.est.server.ca import EstCa
from keyward.issuers.tcs.est_ca import BasicCredential, EstServing, TcsEstCa, parse_est_spec
from keyward.kube.objects import decode_bytes
from keyward.kube.resources import BASIC_AUTH_SECRET_TYPE
from keyward.operator.est_server.claims import EstClaims
from keyward.operator.secrets import SecretStore
from keyward.operator.tcs.cas import ReadyCa, ReadyCas
from keyward.operator.tcs.token import TokenProvider

log = logging.getLogger("keyward.est.operator")

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
    if secret_type == BASIC_AUTH_SECRET_TYPE:
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


class ParsedSecrets:
    """``CachedSecret``s made from the store's copies, parsed once per version of each Secret."""

    def __init__(self, store: SecretStore) -> None:
        self._store = store
        self._parsed: dict[tuple[str, str], tuple[object, CachedSecret]] = {}

    def get(self, namespace: str, name: str) -> CachedSecret | None:
        body = self._store.peek(namespace, name)
        if body is None:
            return None
        version = (body.get("metadata") or {}).get("resourceVersion") or id(body)
        parsed = self._parsed.get((namespace, name))
        if parsed is None or parsed[0] != version:
            parsed = self._parsed[(namespace, name)] = (version, cache_entry(body))
        return parsed[1]


@dataclass(frozen=True)
class ServedIssuer:
    ready: ReadyCa
    serving: EstServing
    secret_namespace: str
    inline_trust: tuple[x509.Certificate, ...] = ()


class EstCatalog:
    """The server's CA mapping (label → CA, plus the default under ``DEFAULT_KEY``), rebuilt lazily."""

    def __init__(
        self,
        cas: ReadyCas,
        tokens: TokenProvider,
        store: SecretStore,
        operator_namespace: str,
        claims: EstClaims,
        *,
        server_names: Callable[[], Sequence[str]] = lambda: (),
    ) -> None:
        self._ready_cas = cas
        self._claims = claims
        self._claims_version = -1
        self._server_names = server_names
        self._tokens = tokens
        self._store = store
        self._secrets = ParsedSecrets(store)
        self._operator_namespace = operator_namespace
        self._basis: list[ReadyCa] = []
        self._cas: dict[str, EstCa] = {}
        self._issuers: dict[str, ServedIssuer] = {}
        self._referenced: frozenset[tuple[str, str]] = frozenset()
        self._warned: set[str] = set()

    def cas(self) -> Mapping[str, EstCa]:
        """What the EST server serves now; called on every request, so it only compares identities
        unless an issuer came, went or changed."""
        current = [ready for ready in self._ready_cas if ready.est is not None]
        changed = len(current) != len(self._basis) or self._claims.version != self._claims_version
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

    async def load_secrets(self) -> None:
        """Wait until every Secret a served issuer reads has been read once (and is watched from then on),
        so the first enrollments see them."""
        for namespace, name in self.referenced_secrets():
            await self._store.get(namespace, name)

    def forget_warnings(self) -> None:
        """Secrets changed: problems found from now on are worth a log line again."""
        self._warned.clear()

    def _rebuild(self, current: list[ReadyCa]) -> None:
        """Each label to its holder, if that issuer is ready with the spec.est it claimed the label by
        (until its check catches up with a changed spec, the label waits rather than go elsewhere)."""
        self._basis, self._claims_version = current, self._claims.version
        self._warned.clear()
        assignment = self._claims.assignment()
        ready_by_signer = {ready.ref.signer_name: ready for ready in current}
        cas: dict[str, EstCa] = {}
        issuers: dict[str, ServedIssuer] = {}
        for label, claim in assignment.holders.items():
            ready = ready_by_signer.get(claim.ref.signer_name)
            if ready is None:
                continue
            served = self._served(ready)
            if served.serving.label != label:
                continue
            cas[label], issuers[label] = self._ca(served), served
            if assignment.default is claim:
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
        namespace = ready.ref.namespace or self._operator_namespace
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
            self._tokens.get,
            credentials=lambda: self._credentials(served),
            client_trust=lambda: self._client_trust(served),
            on_token_fault=lambda _exc: self._out_of_service(served.ready),
            server_names=self._server_names,
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
                f"{BASIC_AUTH_SECRET_TYPE} with keys username and password (it is {entry.type}); "
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
        self._ready_cas.discard(ready.ref.signer_name, only=ready)
