"""EstIssuer and EstClusterIssuer: keep their Ready condition honest (``operator.issuers`` checks them).

A check reads the credential Secrets (watch-fed, ``operator.secrets``), fetches /cacerts through the
explicit trust anchors and compares the bundle with them (``keyward.issuers.est``). Ready issuers are kept
in memory for the request and order controllers; when an issuer turns ready, whatever waits for it is
woken; a change of a Secret it uses checks it again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from cryptography import x509

from keyward.est.client import EstClient, EstEndpoint
from keyward.issuers.errors import IssuerNotReady
from keyward.issuers.est.issuer import EstCredentials, EstIssuerSpec, SecretLookup, check_est_issuer
from keyward.issuers.signer_names import IssuerRef
from keyward.kube.objects import plain
from keyward.kube.resources import EST_CLUSTER_ISSUERS, EST_ISSUERS
from keyward.operator.issuers import IssuerChecks, Verdict
from keyward.operator.leader import Leadership
from keyward.operator.registry import registry
from keyward.operator.services import Services
from keyward.operator.settings import EstClientSettings
from keyward.operator.status import StatusWriter

ClientFactory = Callable[[EstEndpoint, EstCredentials | None], EstClient]
#: Where the EST seed (kopf) kept its issuer check's result: status.<handler name>.
SEED_ISSUER_FIELD = "estissuer_create"


@dataclass(frozen=True)
class ReadyEstIssuer:
    """An issuer that can enroll now: where its server is, and the CA bundle the server distributes."""

    ref: IssuerRef
    spec: EstIssuerSpec
    ca_certificates: tuple[x509.Certificate, ...]
    secret_namespace: str


def seed_status(*, ready: bool) -> dict[str, Any]:
    """The EST seed's readiness field (its kopf handler's result, ``{"Ready": "True"}``), kept true to the
    Ready condition: the seed's users read it, and the seed itself issued only when it said True."""
    return {SEED_ISSUER_FIELD: {"Ready": "True" if ready else "False"}}


def secret_names(body: Mapping[str, Any]) -> set[str]:
    """The Secrets an EST issuer reads (credentials, client certificate)."""
    spec = body.get("spec") or {}
    return {str(name) for name in (spec.get("secretName"), spec.get("clientCertSecretName")) if name}


class EstIssuers(IssuerChecks[ReadyEstIssuer]):
    def __init__(
        self,
        *,
        writer: StatusWriter,
        settings: EstClientSettings,
        client: ClientFactory,
        secrets: Callable[[str], SecretLookup],
        secret_namespace: Callable[[str | None], str],
        leadership: Leadership,
        on_ready: Callable[[IssuerRef, ReadyEstIssuer], None],
    ) -> None:
        self._client = client
        self._secrets = secrets
        self.secret_namespace = secret_namespace
        super().__init__(
            self._check_issuer,
            writer=writer,
            resources=(EST_ISSUERS, EST_CLUSTER_ISSUERS),
            recheck_ready=settings.recheck_interval,
            recheck_failed=settings.recheck_interval,
            leadership=leadership,
            on_ready=on_ready,
        )

    def secret_changed(self, namespace: str, name: str) -> None:
        """A Secret changed: check again the issuers that read it."""
        self.wake(
            lambda ref, body: self.secret_namespace(ref.namespace) == namespace and name in secret_names(body)
        )

    async def _check_issuer(
        self, ref: IssuerRef, body: Mapping[str, Any], leading: bool
    ) -> Verdict[ReadyEstIssuer]:
        namespace = self.secret_namespace(ref.namespace)
        try:
            spec = EstIssuerSpec.parse(body.get("spec") or {})
            async with self._client(spec.endpoint, None) as client:
                checked = await check_est_issuer(spec, self._secrets(namespace), namespace, client)
        except IssuerNotReady as exc:
            return Verdict(
                None, exc.reason, exc.message, transient=not exc.permanent, status=seed_status(ready=False)
            )
        return Verdict(
            ReadyEstIssuer(ref, spec, checked.ca_certificates, namespace), status=seed_status(ready=True)
        )


for _resource in (EST_ISSUERS, EST_CLUSTER_ISSUERS):

    @kopf.on.event(*_resource.handler_args, registry=registry)
    async def est_issuer_event(type: str, body: Any, memo: Services, **_: Any) -> None:
        memo.est.issuers.observe(type or "ADDED", plain(body))
