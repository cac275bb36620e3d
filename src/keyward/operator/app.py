"""Run keyward's controllers on kopf: wiring, kopf settings, and the checks before start."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import kopf

from keyward import fips
from keyward.errors import UserError
from keyward.issuers.tcs.attestation import KEY_PROVISIONING
from keyward.kube.client import ApiError, Body, Kube
from keyward.kube.resources import (
    CERTIFICATE_REQUESTS,
    EST_ORDERS,
    QUOTE_ATTESTATIONS,
    SIGNER_ANNOTATION,
    Resource,
)
from keyward.kube.watching import PAGE
from keyward.operator import (
    metrics,
    upstream,  # noqa: F401
)

# Importing the handler modules registers their handlers on the registry.
from keyward.operator.est import issuers as est_issuers  # noqa: F401
from keyward.operator.est import orders as est_orders  # noqa: F401
from keyward.operator.est.services import EstControllers
from keyward.operator.est_server.claims import EstClaims
from keyward.operator.est_server.service import UNCONFIGURED_MESSAGE, EstService
from keyward.operator.est_server.tls_sources import tls_source
from keyward.operator.health import ProbeServer
from keyward.operator.leader import LeaderElector, LeasePolicy
from keyward.operator.references import SignerReferences
from keyward.operator.registry import registry
from keyward.operator.request_watches import RequestWatches
from keyward.operator.requests import RequestKind
from keyward.operator.secrets import OwnedObjects, SecretStore, owned_secrets
from keyward.operator.services import Services
from keyward.operator.settings import Settings
from keyward.operator.status import Events, StatusWriter, WritePolicy
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
    if memo.settings.peering_name is None:
        settings.peering.name = "keyward"  # auto-detected: used when the KopfPeering CRDs are installed
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="keyward.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="keyward.io", key="last-handled-configuration"
    )
    settings.posting.enabled = False  # keyward posts its own Events (operator.status.Events)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = memo.settings.api.timeout
    settings.watching.chunk_size = PAGE  # kopf's lists (issuers, EstOrders) in pages, as ours
    settings.batching.idle_timeout = 30.0
    settings.execution.max_workers = max(4, os.cpu_count() or 1)
    if memo.kube_client is None:
        memo.kube_client = await Kube.connect(
            timeout=memo.settings.api.timeout, on_write_failure=_count_write_failure
        )
    build(memo)
    elect(memo)
    _spawn(open_token(memo), "open the token")
    _spawn(start_request_watches(memo), "start the request watches")


def build(services: Services) -> None:
    """Make the controllers and connect them: each gets the narrow pieces it needs."""
    settings = services.settings
    kube = services.kube
    policy = WritePolicy(limit=settings.api.write_backoff_limit, refused=settings.api.write_refused_delay)
    writer = services.writer = StatusWriter(kube, Events(kube, policy=policy), policy=policy)
    events = writer.events
    secrets = services.secret_store = SecretStore(kube)
    source = tls_source(settings, secrets, services.cas, services.tokens)
    claims = EstClaims(
        operator_namespace=settings.operator_namespace,
        default_namespaces=settings.est_default_namespaces,
        unserved=None if source is not None else UNCONFIGURED_MESSAGE,
    )
    issuers = services.tcs_issuer_checks = TcsIssuers(
        kube=kube,
        writer=writer,
        tokens=services.tokens,
        cas=services.cas,
        operator_namespace=settings.operator_namespace,
        leadership=services.leadership,
        secrets=secrets,
        est_claims=claims,
        provisioning=ProvisioningOptions(
            mechanism=settings.key_wrap_mechanism,
            random_nonce=settings.use_random_nonce,
            replica=settings.replica_name,
            service_id=settings.hsm.token_label,
        ),
        settings=settings.tcs_issuers,
    )
    references = SignerReferences(kube)
    requests = services.tcs_requests = TcsRequests(
        cas=services.cas,
        tokens=services.tokens,
        writer=writer,
        describe=issuers.describe,
        recheck=issuers.recheck,
        csr_full_chain=settings.csr_full_cert_chain,
        references=references,
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
        leadership=services.leadership,
        references=references,
    )
    services.est_service = EstService(
        cas=services.cas,
        tokens=services.tokens,
        secrets=secrets,
        events=events,
        source=source,
        listen=settings.est_listen,
        operator_namespace=settings.operator_namespace,
        claims=claims,
        read_issuers=lambda: issuers.read_all(kube, settings.namespaces),
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
    services.request_watches = RequestWatches(
        kube,
        lambda resource, event_type, body: deliver_request(services, resource, event_type, body),
        namespaces=settings.namespaces,
        certificate_requests=settings.cert_manager_issuer,
    )
    metrics.PRESENT.sources = metrics.Sources(
        parked=lambda: _parked(services),
        issuers=lambda: _issuer_states(services),
        token_up=lambda: [(ref.signer_name, services.tokens.is_open) for ref, _ in issuers.states()],
    )


async def start_request_watches(services: Services) -> None:
    """Read every issuer first, then watch the requests: a request met right after a start waits for its
    issuer's check without a message, instead of being told that the issuer does not exist."""
    settings = services.settings
    try:
        for checks in (services.tcs_issuer_checks, services.est.issuers):
            if checks is not None:
                await checks.read_all(services.kube, settings.namespaces)
    except ApiError as exc:  # the issuers' own watches bring them later; requests wait for them then
        log.warning("reading the issuers before the requests failed: %s", exc)
    services.requests.start()


def _count_write_failure(error: ApiError, _method: str) -> None:
    metrics.API_WRITE_FAILURES.labels(str(error.status)).inc()


def _parked(services: Services) -> list[tuple[str, int]]:
    tcs, est = services.tcs, services.est
    counts = [
        tcs.certificate_requests.waiting.reasons(),
        tcs.csrs.waiting.reasons(),
        est.requests.waiting.reasons(),
        est.orders.waiting.reasons(),
    ]
    return [item for count in counts for item in count.items()]


def _issuer_states(services: Services) -> list[metrics.IssuerState]:
    states = [*services.tcs_issuers.states(), *services.est.issuers.states()]
    return [metrics.IssuerState(ref.kind, ref.namespace or "", ref.name, ready) for ref, ready in states]


def missing(services: Services) -> list[str]:
    """What readiness still waits for (empty: ready)."""
    waits = []
    watches = [*services.owned, services.request_watches]
    if not services.owned or any(watch is None or not watch.synced for watch in watches):
        waits.append("the watches are not established yet")
    if not services.tokens.is_open:
        reason = services.tokens.last_error or "not opened yet"
        waits.append(f"the PKCS#11 token is not open ({reason})")
    if services.elector is not None and not services.elector.decided:
        waits.append("leader election has not decided yet")
    return waits


async def open_token(services: Services) -> None:
    """Open the token at start (the first issuer would anyway), and keep trying while it fails, so
    readiness tells the truth before the first request."""
    while not services.tokens.is_open:
        try:
            await services.tokens.get()
        except UserError as exc:
            log.warning("the PKCS#11 token cannot be opened yet: %s; retrying in 10s", exc)
            await asyncio.sleep(10)


def elect(services: Services) -> None:
    """Lead at once, or (``--leader-elect``) once the Lease is ours; a new leader replays what waits."""
    services.leadership.listen(lambda: _spawn(replay(services), "replay"))
    if not services.settings.leader_elect:
        services.leadership.lead()
        return
    services.elector = LeaderElector(
        services.kube,
        services.settings.operator_namespace,
        services.leadership,
        lost=lambda: _lose_leadership(services),
        policy=LeasePolicy.lasting(services.settings.lease_duration),
    )
    services.elector.start()


def _lose_leadership(services: Services) -> None:
    services.leadership_lost = True
    services.stop_requested.set()


async def deliver_request(services: Services, resource: Resource, event_type: str, body: Body) -> None:
    """A request's event to the controller of the issuer family it names (a standby signs nothing: the
    leader lists every request again when it takes over)."""
    if not services.leadership.leading:
        return
    body.setdefault("apiVersion", resource.api_version)
    body.setdefault("kind", resource.kind)
    tcs, est = services.tcs, services.est
    kinds = est.requests.kinds
    pipeline = tcs.certificate_requests if resource is CERTIFICATE_REQUESTS else tcs.csrs
    est_kind: RequestKind = kinds.certificate_requests if resource is CERTIFICATE_REQUESTS else kinds.csrs
    if event_type == "DELETED":  # a request gone while unwatched is known by its uid alone
        await pipeline.on_event(event_type, body)
        await est.requests.on_event(est_kind, event_type, body)
        return
    spec = body.get("spec") or {}
    if pipeline.kind.wants(spec):
        await pipeline.on_event(event_type, body)
    elif est_kind.wants(spec):
        await est.requests.on_event(est_kind, event_type, body)


async def replay(services: Services) -> None:
    """Taking over from another replica: every request and order it may have left is seen again (the
    watch events that reached this replica while it stood by were not acted on)."""
    if not services.settings.leader_elect:
        return  # the only replica: the watches deliver everything
    await services.requests.relist()
    est = services.est
    namespaces: list[str | None] = list(services.settings.namespaces) or [None]
    for namespace in namespaces:
        for body in await services.kube.list(EST_ORDERS, namespace):
            await est.orders.on_event("ADDED", body)


_background: set[asyncio.Task[None]] = set()


def _spawn(work: Coroutine[Any, Any, None], name: str) -> None:
    task = asyncio.get_running_loop().create_task(work, name=name)
    _background.add(task)
    task.add_done_callback(_background.discard)


@kopf.on.cleanup(registry=registry)
async def stop(memo: Services, **_: Any) -> None:
    if memo.elector is not None:
        await memo.elector.stop()
    if memo.est_service is not None:
        await memo.est_service.stop()
    for closable in (memo.tcs_issuer_checks, memo.tcs_requests, memo.est_controllers):
        if closable is not None:
            closable.close()
    if memo.request_watches is not None:
        await memo.request_watches.close()
    for owned in memo.owned:
        await owned.close()
    if memo.secret_store is not None:
        await memo.secret_store.close()
    if memo.writer is not None:
        memo.writer.close()
        await memo.writer.events.drain()
    memo.tokens.close()
    memo.stop_requested.set()  # ends kopf's stop-flag waiter: otherwise it waits 5 s for it to hang up


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


async def _serve(memo: Services) -> None:
    """The probes and metrics first (a port in use is one clear error), then kopf until stopped."""
    settings = memo.settings
    probes = memo.probes = ProbeServer(
        settings.health_listen,
        settings.metrics_listen,
        lambda: missing(memo),
        health_path=settings.health_path,
    )
    await probes.start()
    try:
        await kopf.operator(
            registry=registry,
            memo=memo,
            standalone=settings.standalone,
            peering_name=settings.peering_name,
            priority=settings.priority,
            clusterwide=not settings.namespaces,
            namespaces=list(settings.namespaces),
            stop_flag=memo.stop_requested,
        )
    finally:
        await probes.stop()


def configure_logging(settings: Settings) -> None:
    """Log level and format (kopf's --debug/--verbose/--quiet/--log-format, the TCS seed's --zap-*)."""
    kopf.configure(
        debug=settings.debug, log_format=kopf.LogFormat[settings.log_format.upper()], log_prefix=False
    )
    logging.getLogger().setLevel(settings.log_level)
    for noisy in ("httpx", "httpcore", "kr8s"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if settings.debug else logging.WARNING)


def log_start(settings: Settings) -> None:
    """What a user migrating from a seed needs to see once: where CAs live and where Secrets go."""
    hsm = settings.hsm
    log.info(
        "PKCS#11 module %s (%s), token %r", hsm.module, hsm.module_source or "configured", hsm.token_label
    )
    log.info(
        "operator namespace %s (from %s): cluster issuers' Secrets live there",
        settings.operator_namespace,
        settings.operator_namespace_source,
    )
    if not settings.cert_manager_issuer:
        log.info("--cert-manager-issuer=false: cert-manager CertificateRequests are left to others")


def run(settings: Settings) -> None:
    """Run the operator until it is stopped (SIGINT/SIGTERM)."""
    memo = Services(settings=settings)
    configure_logging(settings)
    log_start(settings)
    fips_status = fips.last_status()
    if fips_status is not None:
        log.info("%s", fips_status.describe())
    asyncio.run(_serve(memo))
    if memo.leadership_lost:
        raise SystemExit(1)  # leadership lost: restarted as a standby (the pod's restart policy)
