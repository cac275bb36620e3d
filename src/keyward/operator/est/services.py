"""The EST side of one operator process: the issuer checks, the request and order controllers, and how
they reach each other (narrow callables, no shared runtime object)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keyward.est.client import EstClient, EstEndpoint
from keyward.issuers.est.issuer import EstCredentials, SecretLookup
from keyward.issuers.est.orders import RetryPolicy
from keyward.issuers.objects import SecretView
from keyward.issuers.signer_names import IssuerRef
from keyward.kube.client import Kube
from keyward.operator.est.issuers import EstIssuers, ReadyEstIssuer
from keyward.operator.est.orders import EstOrders
from keyward.operator.est.requests import EstRequests
from keyward.operator.leader import Leadership
from keyward.operator.references import SignerReferences
from keyward.operator.secrets import SecretStore
from keyward.operator.settings import EstClientSettings
from keyward.operator.status import StatusWriter


class EstControllers:
    def __init__(
        self,
        *,
        kube: Kube,
        writer: StatusWriter,
        secrets: SecretStore,
        settings: EstClientSettings,
        operator_namespace: str,
        cluster_namespace: str,
        csr_full_chain: bool,
        leadership: Leadership,
        references: SignerReferences | None = None,
    ) -> None:
        self.settings = settings
        self.leadership = leadership
        self.secrets = secrets
        self._cluster_namespace = cluster_namespace
        self.connect_timeout = min(10.0, settings.timeout)
        #: One attempt (two requests at most: the re-enrollment fallback) must end within this.
        self.attempt_deadline = 2 * (self.connect_timeout + settings.timeout)
        policy = RetryPolicy(
            auth_retry_delay=settings.auth_retry_delay,
            backoff_limit=settings.backoff_limit,
            max_retry_duration=settings.max_retry_duration,
            lease=self.attempt_deadline + 5.0,
        )
        self.issuers = EstIssuers(
            writer=writer,
            settings=settings,
            client=self.client,
            secrets=self.secret_lookup,
            secret_namespace=self.secret_namespace,
            leadership=leadership,
            on_ready=self._issuer_ready,
        )
        self.requests = EstRequests(
            kube=kube,
            writer=writer,
            issuers=self.issuers,
            operator_namespace=operator_namespace,
            csr_full_chain=csr_full_chain,
            references=references,
        )
        self.orders = EstOrders(
            kube=kube,
            writer=writer,
            issuers=self.issuers,
            kinds=self.requests.kinds,
            client=self.client,
            secrets=self.secret_lookup,
            policy=policy,
            attempt_deadline=self.attempt_deadline,
            recreate=self.requests.order_deleted,
        )
        self.requests.orders = self.orders
        secrets.listen(self._secret_changed)

    def secret_namespace(self, issuer_namespace: str | None) -> str:
        """Namespaced issuers: their own namespace; cluster issuers: CLUSTER_SCOPE_NAMESPACE or ours."""
        return issuer_namespace or self._cluster_namespace

    def secret_lookup(self, namespace: str) -> SecretLookup:
        async def lookup(name: str) -> SecretView | None:
            secret = await self.secrets.get(namespace, name)
            return SecretView.from_body(secret) if secret is not None else None

        return lookup

    def client(self, endpoint: EstEndpoint, credentials: EstCredentials | None = None) -> EstClient:
        credentials = credentials or EstCredentials()
        return EstClient(
            endpoint,
            auth=credentials.auth,
            client_cert=credentials.client_cert,
            timeout=self.settings.timeout,
            connect_timeout=self.connect_timeout,
        )

    def _issuer_ready(self, ref: IssuerRef, _ready: ReadyEstIssuer) -> None:
        self.requests.wake(ref.signer_name)
        self.orders.wake(ref.signer_name)

    def _secret_changed(self, namespace: str, name: str, _secret: Mapping[str, Any] | None) -> None:
        self.issuers.secret_changed(namespace, name)

    def close(self) -> None:
        self.issuers.close()
        self.requests.close()
        self.orders.close()
