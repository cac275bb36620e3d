"""``ApiServer``: start, stop and point clients at the sandbox Kubernetes API."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from aiohttp import web

from keyward.sandbox.apiserver.app import ServerState, build_app
from keyward.sandbox.apiserver.builtins import builtin_resources
from keyward.sandbox.apiserver.errors import ApiError
from keyward.sandbox.apiserver.operations import Cluster
from keyward.sandbox.apiserver.resources import Registry
from keyward.sandbox.apiserver.store import Store

CONTEXT = "keyward-sandbox"
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class ApiServer:
    """An in-process, in-memory Kubernetes API server for development and tests.

    ``bookmark_interval`` (seconds between BOOKMARK events on watches that allow them) may be
    changed at any time; ``watch_event_log_size`` (events remembered per resource for watch
    replay, at least) before ``start``.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, crd_paths: Sequence[Path] = ()) -> None:
        self.host = host
        self.port = port
        self.crd_paths = [Path(p) for p in crd_paths]
        self.watch_event_log_size = 10000
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
        cluster = Cluster(registry, Store(self.watch_event_log_size))
        namespaces = registry.view("", "v1", "namespaces")
        assert namespaces is not None
        for name in INITIAL_NAMESPACES:
            cluster.create(namespaces, "", {"metadata": {"name": name}})
        for path in self.crd_paths:
            _install_crds(cluster, path)
        state = ServerState(cluster, bookmark_interval=self._bookmark_interval)
        runner = web.AppRunner(
            build_app(state), handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._url = f"http://{host}:{port}"
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

    def write_kubeconfig(self, path: Path, *, namespace: str = "default") -> None:
        """A kubeconfig for kubectl, kopf and kr8s: this server, no credentials, context keyward-sandbox."""
        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": CONTEXT, "cluster": {"server": self.url}}],
            "users": [{"name": CONTEXT, "user": {}}],
            "contexts": [
                {"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace}}
            ],
            "current-context": CONTEXT,
            "preferences": {},
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w") as stream:
            yaml.safe_dump(config, stream, sort_keys=False)

    def request_counts(self) -> dict[str, int]:
        """Requests served since start, and how many were writes (create/update/patch/delete)."""
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
            f"refusing to bind the sandbox API server to {host!r}: it has no authentication or "
            "authorization, so it only listens on loopback; use host='127.0.0.1'"
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
