"""``ApiServer``: start, stop and point clients at the sandbox Kubernetes API."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from aiohttp import web

from keyward.sandbox.apiserver import accounts, bootstrap
from keyward.sandbox.apiserver.admission import Admission, SignerCheck
from keyward.sandbox.apiserver.app import ServerState, build_app
from keyward.sandbox.apiserver.auth import DEFAULT_AUDIENCES, DEFAULT_TOKEN_SECONDS, Tokens
from keyward.sandbox.apiserver.builtins import builtin_resources
from keyward.sandbox.apiserver.errors import ApiError
from keyward.sandbox.apiserver.faults import FaultPlan
from keyward.sandbox.apiserver.objects import clone
from keyward.sandbox.apiserver.operations import Cluster
from keyward.sandbox.apiserver.permissions import PermissionLog
from keyward.sandbox.apiserver.rbac import Authorizer, RuleResolver
from keyward.sandbox.apiserver.resources import Registry
from keyward.sandbox.apiserver.store import Store
from keyward.sandbox.apiserver.tls import ServingTls, make_serving_tls
from keyward.statedir import write_private_file

CONTEXT = "keyward-sandbox"
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class ApiServer:
    """An in-process, in-memory Kubernetes API server for development and tests.

    Strict like kube-apiserver: every request needs a bearer token (the admin kubeconfig's, or a
    ServiceAccount's from the TokenRequest API) and is authorized by RBAC (``system:masters`` may do
    anything); admission runs kube's CSR signing/approval plugins and cert-manager's webhook.

    ``anonymous`` lets requests without a token in as ``system:anonymous`` (kube's default; 401
    otherwise). ``faults`` is a fault plan (see ``faults``: a SPEC string or a ``FaultPlan``), also
    reachable as ``api.faults`` to add rules later. ``permission_log_path`` appends each distinct
    authorization decision for a non-admin user as a JSON line; ``api.permissions`` holds them all.
    ``bookmark_interval`` (seconds between BOOKMARK events on watches that allow them) may be
    changed at any time; ``watch_event_log_size`` (events remembered per resource for watch replay,
    at least) before ``start``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        crd_paths: Sequence[Path] = (),
        anonymous: bool = False,
        faults: str | FaultPlan = "",
        permission_log_path: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.crd_paths = [Path(p) for p in crd_paths]
        self.watch_event_log_size = 10000
        self.anonymous = anonymous
        self.faults = faults if isinstance(faults, FaultPlan) else FaultPlan(faults)
        self.permissions = PermissionLog(permission_log_path)
        self.tokens = Tokens()
        self.tls: ServingTls | None = None
        self._bookmark_interval = 5.0
        self._state: ServerState | None = None
        self._runner: web.AppRunner | None = None
        self._url = ""

    @property
    def bookmark_interval(self) -> float:
        return self._bookmark_interval

    @bookmark_interval.setter
    def bookmark_interval(self, seconds: float) -> None:
        self._bookmark_interval = seconds
        if self._state is not None:
            self._state.bookmark_interval = seconds

    @property
    def cluster(self) -> Cluster:
        """Direct access to the objects, for tests that need to look behind the HTTP API."""
        return self._started().cluster

    async def start(self) -> None:
        """Seed the built-in namespaces, install ``crd_paths``, then listen (port 0: any free port)."""
        if self._runner is not None:
            raise RuntimeError("the sandbox API server is already running")
        _require_loopback(self.host)
        registry = Registry()
        for resource in builtin_resources():
            registry.add(resource)
        store = Store(self.watch_event_log_size)
        if self.faults.watch_window is not None:
            store.set_window(self.faults.watch_window)
        cluster = Cluster(registry, store)
        authorizer = Authorizer(RuleResolver(store.get, store.iterate))
        cluster.admission = Admission(registry, SignerCheck(authorizer, self.permissions))
        namespaces = registry.view("", "v1", "namespaces")
        assert namespaces is not None
        for name in INITIAL_NAMESPACES:
            cluster.create(namespaces, "", {"metadata": {"name": name}})
        for plural, objects in (
            ("clusterroles", bootstrap.CLUSTER_ROLES),
            ("clusterrolebindings", bootstrap.CLUSTER_ROLE_BINDINGS),
        ):
            view = registry.view("rbac.authorization.k8s.io", "v1", plural)
            assert view is not None
            for obj in objects:
                cluster.create(view, "", clone(obj))
        for path in self.crd_paths:
            _install_crds(cluster, path)
        state = ServerState(
            cluster,
            self.tokens,
            authorizer,
            self.permissions,
            self.faults,
            anonymous=self.anonymous,
            bookmark_interval=self._bookmark_interval,
        )
        runner = web.AppRunner(
            build_app(state), handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await runner.setup()
        if self.tls is None:
            self.tls = await asyncio.to_thread(make_serving_tls, self.host)
        site = web.TCPSite(runner, self.host, self.port, ssl_context=self.tls.server_context())
        await site.start()
        port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._url = f"https://{host}:{port}"
        state.address = f"{host}:{port}"
        self._state, self._runner = state, runner
        cluster.gc.start()

    async def stop(self) -> None:
        """End every watch, then close the listener; safe to call twice."""
        if self._runner is None or self._state is None:
            return
        for watcher in list(self._state.watchers):
            watcher.close()
        await self._state.cluster.gc.stop()
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:40123``."""
        if not self._url:
            raise RuntimeError("the sandbox API server has no URL yet: await start() first")
        return self._url

    @property
    def ca_pem(self) -> bytes:
        """The CA that signed the serving certificate (the kubeconfig's certificate-authority-data)."""
        if self.tls is None:
            raise RuntimeError("the sandbox API server has no certificate yet: await start() first")
        return self.tls.ca_pem

    def client_ssl_context(self) -> ssl.SSLContext:
        """An SSL context trusting this server, for HTTP clients in tests (httpx ``verify=``)."""
        if self.tls is None:
            raise RuntimeError("the sandbox API server has no certificate yet: await start() first")
        return self.tls.client_context()

    @property
    def admin_token(self) -> str:
        """The bearer token of ``kubernetes-admin`` (``system:masters``), as in the admin kubeconfig."""
        return self.tokens.admin_token

    @property
    def certmanager_webhook(self) -> bool:
        """Whether cert-manager's webhook is installed (True by default); False models a cluster
        without its ValidatingWebhookConfiguration, where any CertificateRequest can be stored."""
        admission = self.cluster.admission
        return admission is not None and admission.certmanager_webhook

    @certmanager_webhook.setter
    def certmanager_webhook(self, installed: bool) -> None:
        admission = self.cluster.admission
        assert admission is not None
        admission.certmanager_webhook = installed

    @contextlib.contextmanager
    def without_certmanager_webhook(self) -> Iterator[None]:
        """For the duration, as if cert-manager's webhook were not installed (restored after).

        Tests use it to store CertificateRequests the webhook would refuse (not a CSR, a bad signature),
        to prove an issuer's own checks; on a real cluster with cert-manager they cannot exist."""
        before = self.certmanager_webhook
        self.certmanager_webhook = False
        try:
            yield
        finally:
            self.certmanager_webhook = before

    def issue_token(self, namespace: str, name: str, seconds: int = DEFAULT_TOKEN_SECONDS) -> str:
        """A token for an existing ServiceAccount, as ``kubectl create token NAME -n NAMESPACE`` gets."""
        account = self.cluster.store.get(("", "serviceaccounts"), namespace, name)
        if account is None:
            raise ValueError(f'ServiceAccount "{namespace}/{name}" does not exist; create it first')
        token, _ = self.tokens.issue(account, seconds, DEFAULT_AUDIENCES)
        return token

    def service_account_kubeconfig(
        self, path: Path, namespace: str, name: str, *, seconds: int = 24 * 3600, **grant: Any
    ) -> Path:
        """Create ServiceAccount ``namespace/name`` (and its namespace), bind RBAC to it, and write a
        kubeconfig authenticating as it (a TokenRequest token valid ``seconds``).

        ``grant`` is what ``accounts.grant`` takes: ``rules`` become a Role named ``name`` in
        ``namespace``, ``cluster_rules`` a ClusterRole named ``namespace:name``; ``roles`` are
        Role/ClusterRole manifests (dicts, YAML text or a YAML file, such as a shipped ClusterRole),
        each stored and bound to the account.
        """
        token = self.service_account_token(namespace, name, seconds=seconds, **grant)
        self.write_kubeconfig(path, namespace=namespace, token=token, user=f"{namespace}:{name}")
        return Path(path)

    def service_account_token(
        self, namespace: str, name: str, *, seconds: int = 24 * 3600, **grant: Any
    ) -> str:
        """``service_account_kubeconfig`` without the file: the account, its RBAC, and a token for it."""
        accounts.grant(self.cluster, namespace, name, **grant)
        return self.issue_token(namespace, name, seconds)

    def write_kubeconfig(
        self, path: Path, *, namespace: str = "default", token: str | None = None, user: str = CONTEXT
    ) -> None:
        """A kubeconfig for kubectl, kopf and kr8s: this server, context keyward-sandbox, mode 0600.

        It authenticates with ``token``, by default the admin token (cluster-admin, like kind's)."""
        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": CONTEXT,
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(self.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": user, "user": {"token": token or self.admin_token}}],
            "contexts": [
                {"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user, "namespace": namespace}}
            ],
            "current-context": CONTEXT,
            "preferences": {},
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # It holds a token: written through a new file, never through a link already at ``path``.
        write_private_file(path, yaml.safe_dump(config, sort_keys=False).encode(), mode=0o600)

    def request_counts(self) -> dict[str, int]:
        """Requests served since start, and how many were writes (create/update/patch/delete of stored
        objects: a review or a TokenRequest, answered and never stored, is a request only)."""
        state = self._started()
        return {"requests": state.requests, "writes": state.writes}

    def _started(self) -> ServerState:
        if self._state is None:
            raise RuntimeError("the sandbox API server is not started: await start() first")
        return self._state


def _require_loopback(host: str) -> None:
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"refusing to bind the sandbox API server to {host!r}: it is a development tool speaking "
            "plain HTTP (tokens travel in the clear), so it only listens on loopback; use host='127.0.0.1'"
        )


def _install_crds(cluster: Cluster, path: Path) -> None:
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(
            f"cannot read CRDs from {path}: {exc}; pass YAML files of CustomResourceDefinitions in crd_paths"
        ) from exc
    view = cluster.registry.view("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    assert view is not None
    for document in documents:
        if not isinstance(document, dict) or document.get("kind") != "CustomResourceDefinition":
            kind = document.get("kind") if isinstance(document, dict) else type(document).__name__
            raise ValueError(
                f"{path} holds a {kind}, not a CustomResourceDefinition; crd_paths may only name CRD files"
            )
        try:
            cluster.create(view, "", document)
        except ApiError as exc:
            raise ValueError(f"the CRD in {path} was rejected: {exc.message}") from exc
