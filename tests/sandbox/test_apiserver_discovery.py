"""Conformance: discovery and the endpoints clients probe (kube-apiserver.md "Discovery")."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import httpx
import pytest
import yaml

from keyward.sandbox.apiserver import ApiServer

from .helpers import http_client


async def test_version_reports_kubernetes_1_32(client: httpx.AsyncClient) -> None:
    version = (await client.get("/version")).json()
    assert (version["major"], version["minor"]) == ("1", "32")
    assert version["gitVersion"].startswith("v1.32.")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/livez", "/readyz/ping"])
async def test_health_endpoints_answer_ok(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert (response.status_code, response.text) == (200, "ok")


async def test_api_lists_the_core_version(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api")).json()
    assert body["kind"] == "APIVersions"
    assert body["versions"] == ["v1"]


async def test_apis_lists_every_group_with_versions_and_preferred_version(client: httpx.AsyncClient) -> None:
    body = (await client.get("/apis")).json()
    assert body["kind"] == "APIGroupList"
    groups = {g["name"]: g for g in body["groups"]}
    for name in ("apiextensions.k8s.io", "certificates.k8s.io", "coordination.k8s.io", "events.k8s.io"):
        assert groups[name]["preferredVersion"] == {"groupVersion": f"{name}/v1", "version": "v1"}
    assert [v["version"] for v in groups["example.com"]["versions"]] == ["v1", "v1beta1"]
    single = (await client.get("/apis/example.com")).json()
    assert single["kind"] == "APIGroup"
    assert single["preferredVersion"]["version"] == "v1"


async def resources(client: httpx.AsyncClient, path: str) -> dict[str, dict]:
    body = (await client.get(path)).json()
    assert body["kind"] == "APIResourceList"
    return {r["name"]: r for r in body["resources"]}


async def test_resource_lists_describe_kind_names_scope_verbs_and_subresources(
    client: httpx.AsyncClient,
) -> None:
    core = await resources(client, "/api/v1")
    assert {"namespaces", "namespaces/status", "secrets", "configmaps", "events"} <= set(core)
    assert core["secrets"]["namespaced"] is True
    assert core["namespaces"]["namespaced"] is False
    assert core["configmaps"]["shortNames"] == ["cm"]
    assert set(core["secrets"]["verbs"]) >= {"create", "delete", "get", "list", "patch", "update", "watch"}
    csr = await resources(client, "/apis/certificates.k8s.io/v1")
    entry = csr["certificatesigningrequests"]
    assert (entry["kind"], entry["singularName"], entry["shortNames"]) == (
        "CertificateSigningRequest",
        "certificatesigningrequest",
        ["csr"],
    )
    assert {"certificatesigningrequests/status", "certificatesigningrequests/approval"} <= set(csr)
    widgets = await resources(client, "/apis/example.com/v1")
    assert widgets["widgets"]["shortNames"] == ["wd"]
    assert widgets["widgets"]["categories"] == ["gizmos"]
    assert "widgets/status" in widgets
    assert "gadgets/status" not in widgets
    crds = await resources(client, "/apis/apiextensions.k8s.io/v1")
    assert crds["customresourcedefinitions"]["shortNames"] == ["crd", "crds"]
    assert "leases" in await resources(client, "/apis/coordination.k8s.io/v1")
    assert "events" in await resources(client, "/apis/events.k8s.io/v1")


async def test_events_are_served_by_core_v1_and_events_k8s_io_v1_over_one_store(
    client: httpx.AsyncClient, namespace: str
) -> None:
    event = {
        "metadata": {"generateName": "ev-"},
        "involvedObject": {"kind": "Widget", "name": "w", "namespace": namespace},
        "reason": "Tested",
        "message": "hello",
        "type": "Normal",
    }
    created = (await client.post(f"/api/v1/namespaces/{namespace}/events", json=event)).json()
    name = created["metadata"]["name"]
    modern = (await client.get(f"/apis/events.k8s.io/v1/namespaces/{namespace}/events/{name}")).json()
    assert modern["apiVersion"] == "events.k8s.io/v1"
    assert (modern["note"], modern["regarding"]["name"]) == ("hello", "w")
    selected = await client.get(
        f"/api/v1/namespaces/{namespace}/events",
        params={"fieldSelector": "involvedObject.name=w,reason=Tested"},
    )
    assert [e["metadata"]["name"] for e in selected.json()["items"]] == [name]


async def test_trailing_slashes_are_accepted_as_kube_apiserver_does(client: httpx.AsyncClient) -> None:
    for path in ("/version/", "/api/", "/apis/", "/api/v1/", "/apis/example.com/v1/", "/api/v1/namespaces/"):
        assert (await client.get(path)).status_code == 200, path


async def test_unknown_paths_are_404_status_objects(client: httpx.AsyncClient) -> None:
    for path in ("/apis/nope.example/v1/things", "/api/v1/nothings", "/apis/example.com/v9", "/random"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json()["kind"] == "Status"


async def test_openapi_v3_declares_server_side_field_validation_per_resource(
    client: httpx.AsyncClient,
) -> None:
    index = (await client.get("/openapi/v3")).json()["paths"]
    assert {"api/v1", "apis/example.com/v1", "apis/certificates.k8s.io/v1"} <= set(index)
    document = (await client.get(index["apis/example.com/v1"]["serverRelativeURL"])).json()
    operation = document["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"]
    assert operation["x-kubernetes-group-version-kind"] == {
        "group": "example.com",
        "version": "v1",
        "kind": "Widget",
    }
    assert {"name": "fieldValidation", "in": "query"}.items() <= operation["parameters"][0].items()


def test_kubeconfig_points_at_the_server_with_the_admin_token_and_is_private(
    api_server: ApiServer, tmp_path: Path
) -> None:
    path = tmp_path / "nested" / "config"
    api_server.write_kubeconfig(path, namespace="work")
    config = yaml.safe_load(path.read_text())
    assert config["current-context"] == "keyward-sandbox"
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == api_server.url and api_server.url.startswith("https://")
    assert base64.b64decode(cluster["certificate-authority-data"]) == api_server.ca_pem
    assert config["users"][0]["user"] == {"token": api_server.admin_token}
    assert config["contexts"][0]["context"]["namespace"] == "work"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_the_server_refuses_non_loopback_addresses() -> None:
    with pytest.raises(ValueError, match="only listens on loopback"):
        await ApiServer(host="0.0.0.0").start()  # noqa: S104 - the point of the test


async def test_stop_ends_open_watches_and_a_second_stop_is_harmless() -> None:
    server = ApiServer()
    await server.start()
    async with (
        http_client(server) as client,
        client.stream("GET", "/api/v1/namespaces", params={"watch": "1"}) as stream,
    ):
        lines = stream.aiter_lines()
        assert '"ADDED"' in await anext(lines)
        await server.stop()
        remaining = [line async for line in lines]
    assert len(remaining) == 3  # the other initial namespaces, then the stream ended
    await server.stop()
