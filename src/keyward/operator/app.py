"""Run keyward's controllers on kopf: wiring, kopf settings, and the checks before start."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import kopf

from keyward.errors import UserError
from keyward.kube.client import Kube

# Importing the handler modules registers them on the registry.
from keyward.operator.est import issuers as est_issuers  # noqa: F401
from keyward.operator.est import orders as est_orders  # noqa: F401
from keyward.operator.est import requests as est_requests  # noqa: F401
from keyward.operator.est_server import service as est_server  # noqa: F401
from keyward.operator.registry import registry
from keyward.operator.services import Runtime
from keyward.operator.settings import Settings
from keyward.operator.tcs import certificaterequests, csrs, indices  # noqa: F401
from keyward.operator.tcs import issuers as tcs_issuers  # noqa: F401
from keyward.operator.tcs.certificaterequests import CertificateRequestAdapter
from keyward.operator.tcs.csrs import CsrAdapter
from keyward.operator.tcs.indices import IssuerStates
from keyward.operator.tcs.pipeline import SigningPipeline

log = logging.getLogger("keyward.operator")
FINALIZER = "keyward.io/finalizer"


@kopf.on.login(registry=registry)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own credential sources (the default registry's login handlers are not in ours)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup(registry=registry)
async def configure(settings: kopf.OperatorSettings, memo: Runtime, **_: Any) -> None:
    settings.peering.name = "keyward"  # auto-detected: used when the KopfPeering CRDs are installed
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="keyward.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="keyward.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    settings.batching.idle_timeout = 30.0
    settings.execution.max_workers = max(4, os.cpu_count() or 1)

    if memo.kube is None:
        memo.kube = await Kube.connect()
    pipelines = [
        SigningPipeline(memo, CertificateRequestAdapter(), IssuerStates()),
        SigningPipeline(memo, CsrAdapter(full_chain=memo.settings.csr_full_cert_chain), IssuerStates()),
    ]
    memo.extras["tcs_certificate_requests"], memo.extras["tcs_csrs"] = pipelines
    memo.extras["kick_requests"] = lambda label: [p.kick(label) for p in pipelines]


@kopf.on.cleanup(registry=registry)
async def close_token(memo: Runtime, **_: Any) -> None:
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
    memo = Runtime(settings=settings)
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
