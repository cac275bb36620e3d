"""The Python clients the project uses, kr8s and kopf, work against the sandbox (list, watch, patch)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import httpx
import kopf
import kr8s.asyncio
import pytest
import yaml

from keyward.sandbox.apiserver import ApiServer
from tests.support.waiting import wait_for

from .helpers import HERE, WIDGETS, widget

MERGE = {"Content-Type": "application/merge-patch+json"}


async def test_kr8s_connects_with_the_kubeconfig_and_watches(
    api_server: ApiServer, kubeconfig: Path, client: httpx.AsyncClient, namespace: str
) -> None:
    api = await kr8s.asyncio.api(kubeconfig=str(kubeconfig))
    assert (await api.version())["minor"] == "32"
    seen: list[tuple[str, str]] = []

    async def watch() -> None:
        async for kind, obj in api.watch("widgets.example.com", namespace=namespace):
            seen.append((kind, obj.name))
            if len(seen) == 3:
                return

    def watchers() -> int:
        return len(api_server.cluster.store.subscribers(("example.com", "widgets")))

    before = watchers()
    watching = asyncio.create_task(watch())

    async def subscribed() -> bool:
        return watchers() > before

    await wait_for(subscribed)
    url = WIDGETS.format(ns=namespace)
    await client.post(url, json=widget("w"))
    await client.patch(f"{url}/w", json={"spec": {"port": 1}}, headers=MERGE)
    await client.delete(f"{url}/w")
    await asyncio.wait_for(watching, 10)
    assert seen == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]


async def run_marking_operator(
    kubeconfig: Path, client: httpx.AsyncClient, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kopf operator (logged in with ``kubeconfig``) marks widgets Ready; wait until both are."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    registry = kopf.OperatorRegistry()
    url = WIDGETS.format(ns=namespace)
    await client.post(url, json=widget("before"))

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.watching.server_timeout = 30
        settings.posting.enabled = False

    @kopf.on.create("example.com", "v1", "widgets", registry=registry)
    def mark_ready(patch: kopf.Patch, **_: Any) -> None:
        patch.status["phase"] = "Ready"

    stop = asyncio.Event()
    operator = asyncio.create_task(
        kopf.operator(registry=registry, namespaces=[namespace], standalone=True, stop_flag=stop)
    )
    try:
        await client.post(url, json=widget("after"))

        async def both_ready() -> bool:
            items = (await client.get(url)).json()["items"]
            return [i.get("status", {}).get("phase") for i in items] == ["Ready", "Ready"]

        await wait_for(both_ready, timeout=15)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(operator, 15)


async def test_kopf_operator_lists_watches_and_patches_status(
    kubeconfig: Path, client: httpx.AsyncClient, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await run_marking_operator(kubeconfig, client, namespace, monkeypatch)


WIDGET_OPERATOR_RULES = [
    {"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["list", "watch", "patch"]},
    {"apiGroups": ["example.com"], "resources": ["widgets/status"], "verbs": ["patch"]},
]
KOPF_CLUSTER_RULES = [  # kopf scans CRDs and namespaces cluster-wide even when it serves one namespace
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
]


async def test_kopf_runs_with_a_service_account_kubeconfig_and_the_log_shows_what_it_used(
    api_server: ApiServer,
    client: httpx.AsyncClient,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    config = api_server.service_account_kubeconfig(
        tmp_path / "operator",
        namespace,
        "widget-operator",
        rules=WIDGET_OPERATOR_RULES,
        cluster_rules=KOPF_CLUSTER_RULES,
    )
    await run_marking_operator(config, client, namespace, monkeypatch)
    user = f"system:serviceaccount:{namespace}:widget-operator"
    used = api_server.permissions.entries(user)
    assert not api_server.permissions.entries(user, allowed=False), "the role was enough"
    assert {(e.verb, e.resource, e.subresource) for e in used if e.resource} >= {
        ("list", "widgets", ""),
        ("watch", "widgets", ""),
        ("patch", "widgets", ""),
    }
    assert all(e.namespace == namespace for e in used if e.resource == "widgets")
    granted = WIDGET_OPERATOR_RULES + KOPF_CLUSTER_RULES
    discovery = [e for e in used if e.path]  # granted by system:discovery, not by the roles
    assert api_server.permissions.not_granted_by(granted, user) == discovery


async def test_kopf_peering_works_with_its_crds_installed_at_runtime(
    kubeconfig: Path, client: httpx.AsyncClient, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for crd in yaml.safe_load_all((HERE / "kopf-peering-crds.yaml").read_text()):
        response = await client.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)
        assert response.status_code in (201, 409), response.text
    peering = f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings"
    assert (await client.post(peering, json={"metadata": {"name": "team"}})).status_code == 201
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False

    @kopf.on.create("example.com", "v1", "widgets", registry=registry)
    def noop(**_: Any) -> None:
        return None

    stop = asyncio.Event()
    operator = asyncio.create_task(
        kopf.operator(registry=registry, namespaces=[namespace], peering_name="team", stop_flag=stop)
    )

    async def peers() -> dict[str, Any]:
        status: dict[str, Any] = (await client.get(f"{peering}/team")).json().get("status", {})
        return status

    try:

        async def announced() -> bool:
            return len(await peers()) == 1

        await wait_for(announced, timeout=15)
        (identity,) = (await peers()).values()
        assert set(identity) == {"priority", "lifetime", "lastseen"}
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(operator, 15)

    async def withdrawn() -> bool:
        return await peers() == {}

    await wait_for(withdrawn)
