"""Run keyward's controllers on kopf: wiring, kopf settings, and the checks before start."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import kopf

from keyward.errors import UserError
from keyward.issuers.tcs.attestation import KEY_PROVISIONING
from keyward.kube.client import Kube
from keyward.kube.resources import QUOTE_ATTESTATIONS, SIGNER_ANNOTATION

# Importing the handler modules registers their handlers on the registry.
from keyward.operator.est import issuers as est_issuers  # noqa: F401
from keyward.operator.est import orders as est_orders  # noqa: F401
from keyward.operator.est import requests as est_requests  # noqa: F401
from keyward.operator.est.services import EstControllers
from keyward.operator.est_server.service import EstService
from keyward.operator.est_server.tls_sources import tls_source
from keyward.operator.registry import registry
from keyward.operator.secrets import OwnedObjects, SecretStore, owned_secrets
from keyward.operator.services import Services
from keyward.operator.settings import Settings
from keyward.operator.status import Events, StatusWriter
from keyward.operator.tcs import requests as tcs_requests  # noqa: F401
from keyward.operator.tcs.attestations import RequestAttestations, label_of
from keyward.operator.tcs.issuers import TcsIssuers
from keyward.operator.tcs.provisioning import ProvisioningOptions
from keyward.operator.tcs.requests import TcsRequests

log = logging.getLogger("keyward.operator")
FINALIZER = "keyward.io/finalizer"


@kopf.on.login(registry=registry)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own credential sources (the default registry's login handlers are not in ours)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup(registry=registry)
async def configure(settings: kopf.OperatorSettings, memo: Services, **_: Any) -> None:
    settings.peering.name = "keyward"  # auto-detected: used when the KopfPeering CRDs are installed
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="keyward.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="keyward.io", key="last-handled-configuration"
    )
    settings.posting.enabled = False  # keyward posts its own Events (operator.status.Events)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    settings.batching.idle_timeout = 30.0
    settings.execution.max_workers = max(4, os.cpu_count() or 1)
    if memo.kube_client is None:
        memo.kube_client = await Kube.connect()
    build(memo)


def build(services: Services) -> None:
    """Make the controllers and connect them: each gets the narrow pieces it needs."""
    settings = services.settings
    kube = services.kube
    events = Events(kube)
    writer = services.writer = StatusWriter(kube, events)
    secrets = services.secret_store = SecretStore(kube)
    issuers = services.tcs_issuer_checks = TcsIssuers(
        kube=kube,
        writer=writer,
        tokens=services.tokens,
        cas=services.cas,
        operator_namespace=settings.operator_namespace,
        secrets=secrets,
        provisioning=ProvisioningOptions(
            mechanism=settings.key_wrap_mechanism,
            random_nonce=settings.use_random_nonce,
            replica=settings.replica_name,
            service_id=settings.hsm.token_label,
        ),
    )
    requests = services.tcs_requests = TcsRequests(
        cas=services.cas,
        tokens=services.tokens,
        writer=writer,
        describe=issuers.describe,
        csr_full_chain=settings.csr_full_cert_chain,
        attestations=RequestAttestations(
            kube=kube,
            writer=writer,
            timeout=settings.quote_verification_timeout,
            operator_namespace=settings.operator_namespace,
            service_id=settings.hsm.token_label,
        ),
    )
    services.est_controllers = EstControllers(
        kube=kube,
        writer=writer,
        secrets=secrets,
        settings=settings.est_client,
        operator_namespace=settings.operator_namespace,
        cluster_namespace=settings.est_cluster_namespace,
        csr_full_chain=settings.csr_full_cert_chain,
    )
    services.est_service = EstService(
        cas=services.cas,
        tokens=services.tokens,
        secrets=secrets,
        events=events,
        source=tls_source(settings, secrets, services.cas, services.tokens),
        listen=settings.est_listen,
        operator_namespace=settings.operator_namespace,
    )
    namespaces = settings.namespaces
    if namespaces and settings.operator_namespace not in namespaces:
        namespaces = (*namespaces, settings.operator_namespace)  # cluster issuers' Secrets live there

    def quote_attestation_changed(event_type: str, body: dict[str, Any]) -> None:
        """An answer (or a deletion) of one of keyward's QuoteAttestations: who waits for it looks again."""
        meta = body.get("metadata") or {}
        if (body.get("spec") or {}).get("type") == KEY_PROVISIONING:
            issuers.wake_signer(str((meta.get("annotations") or {}).get(SIGNER_ANNOTATION) or ""))
        else:
            requests.wake(label_of(str(meta.get("namespace") or ""), str(meta.get("name") or "")))

    services.owned = [
        owned_secrets(kube, namespaces, issuers.secret_changed),
        OwnedObjects(kube, QUOTE_ATTESTATIONS, namespaces, quote_attestation_changed),
    ]
    for owned in services.owned:
        owned.start()


@kopf.on.cleanup(registry=registry)
async def stop(memo: Services, **_: Any) -> None:
    if memo.est_service is not None:
        await memo.est_service.stop()
    for closable in (memo.tcs_issuer_checks, memo.tcs_requests, memo.est_controllers):
        if closable is not None:
            closable.close()
    for owned in memo.owned:
        await owned.close()
    if memo.secret_store is not None:
        await memo.secret_store.close()
    if memo.writer is not None:
        memo.writer.close()
        await memo.writer.events.drain()
    memo.tokens.close()


def preflight(settings: Settings, *, wait_for_token: bool) -> None:
    """Fail fast, with one clear line, on what a user can fix before anything starts."""
    check_kube_credentials()
    asyncio.run(_check_api_reachable())
    if not wait_for_token:
        from keyward.keystore import TokenKeyStore

        TokenKeyStore.open(settings.hsm).close()


def check_kube_credentials() -> None:
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig:
        missing = [p for p in kubeconfig.split(os.pathsep) if p and not Path(p).is_file()]
        if missing:
            raise UserError(
                f"kubeconfig {missing[0]} (from KUBECONFIG) does not exist",
                "point KUBECONFIG at a kubeconfig file, or run `keyward sandbox` for a local API",
            )
        return
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return  # in-cluster service account
    if not (Path.home() / ".kube" / "config").is_file():
        raise UserError(
            "no Kubernetes credentials: KUBECONFIG is unset and ~/.kube/config does not exist",
            "set KUBECONFIG (or --kubeconfig), or run `keyward sandbox` for a local API",
        )


async def _check_api_reachable() -> None:
    try:
        kube = await asyncio.wait_for(Kube.connect(), timeout=10)
        await asyncio.wait_for(kube.version(), timeout=10)
    except UserError:
        raise
    except Exception as exc:  # any connection failure is the same user-facing problem
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"cannot reach the Kubernetes API ({reason})",
            "check that the cluster is up and that KUBECONFIG points at it",
        ) from exc


def run(settings: Settings) -> None:
    """Run the operator until it is stopped (SIGINT/SIGTERM)."""
    memo = Services(settings=settings)
    kopf.configure(verbose=settings.verbose, log_prefix=False)
    for noisy in ("httpx", "httpcore", "kr8s"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if settings.verbose else logging.WARNING)
    asyncio.run(
        kopf.operator(
            registry=registry,
            memo=memo,
            standalone=settings.standalone,
            clusterwide=not settings.namespaces,
            namespaces=list(settings.namespaces),
            liveness_endpoint=(
                f"http://{settings.health_listen}/healthz" if settings.health_listen.port else None
            ),
        )
    )
