"""Conformance: objects, metadata, errors and the write verbs (kube-apiserver.md "Objects and metadata")."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from keyward.sandbox.apiserver import ApiServer

from .helpers import WIDGETS, unique, widget

MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
STRATEGIC = {"Content-Type": "application/strategic-merge-patch+json"}


async def create_widget(client: httpx.AsyncClient, ns: str, name: str, **spec: object) -> dict:
    response = await client.post(WIDGETS.format(ns=ns), json=widget(name, **spec))
    assert response.status_code == 201, response.text
    return response.json()


async def test_create_assigns_uid_creation_timestamp_resource_version_and_generation_1(
    client: httpx.AsyncClient, namespace: str
) -> None:
    created = await create_widget(client, namespace, "w")
    meta = created["metadata"]
    assert uuid.UUID(meta["uid"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    stamp = datetime.strptime(meta["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 5
    assert isinstance(meta["resourceVersion"], str) and int(meta["resourceVersion"]) > 0
    assert meta["generation"] == 1


async def test_every_write_yields_a_strictly_larger_resource_version(
    client: httpx.AsyncClient, namespace: str
) -> None:
    url = WIDGETS.format(ns=namespace) + "/w"
    versions = [int((await create_widget(client, namespace, "w"))["metadata"]["resourceVersion"])]
    current = (await client.get(url)).json()
    current["spec"]["port"] = 1000
    versions.append(int((await client.put(url, json=current)).json()["metadata"]["resourceVersion"]))
    patched = await client.patch(url, json={"metadata": {"finalizers": ["example.com/hold"]}}, headers=MERGE)
    versions.append(int(patched.json()["metadata"]["resourceVersion"]))
    status = await client.patch(url + "/status", json={"status": {"phase": "Ready"}}, headers=MERGE)
    versions.append(int(status.json()["metadata"]["resourceVersion"]))
    marked = await client.delete(url)
    versions.append(int(marked.json()["metadata"]["resourceVersion"]))
    assert versions == sorted(set(versions)), versions


async def test_generation_increments_only_when_something_outside_metadata_and_status_changes(
    client: httpx.AsyncClient, namespace: str
) -> None:
    url = WIDGETS.format(ns=namespace) + "/w"
    await create_widget(client, namespace, "w")
    labelled = await client.patch(url, json={"metadata": {"labels": {"a": "b"}}}, headers=MERGE)
    assert labelled.json()["metadata"]["generation"] == 1
    status = await client.patch(url + "/status", json={"status": {"phase": "Ready"}}, headers=MERGE)
    assert status.json()["metadata"]["generation"] == 1
    spec = await client.patch(url, json={"spec": {"port": 8443}}, headers=MERGE)
    assert spec.json()["metadata"]["generation"] == 2
    same = await client.patch(url, json={"spec": {"port": 8443}}, headers=MERGE)
    assert same.json()["metadata"]["generation"] == 2


async def test_status_change_counts_for_generation_without_status_subresource(
    client: httpx.AsyncClient,
) -> None:
    url = "/apis/example.com/v1/gadgets"
    name = unique("g")
    created = await client.post(url, json={"metadata": {"name": name}, "spec": {"size": 1}})
    assert created.json()["metadata"]["generation"] == 1
    patched = await client.patch(f"{url}/{name}", json={"status": {"seen": True}}, headers=MERGE)
    assert patched.json()["metadata"]["generation"] == 2
    assert patched.json()["status"] == {"seen": True}


async def test_write_that_changes_nothing_keeps_the_resource_version(
    client: httpx.AsyncClient, namespace: str
) -> None:
    created = await create_widget(client, namespace, "w", port=80)
    url = WIDGETS.format(ns=namespace) + "/w"
    again = await client.patch(url, json={"spec": {"port": 80}}, headers=MERGE)
    assert again.json()["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_generate_name_appends_five_random_characters(
    client: httpx.AsyncClient, namespace: str
) -> None:
    body = widget("")
    body["metadata"] = {"generateName": "gen-"}
    names = set()
    for _ in range(3):
        response = await client.post(WIDGETS.format(ns=namespace), json=body)
        assert response.status_code == 201
        names.add(response.json()["metadata"]["name"])
    assert len(names) == 3
    assert all(re.fullmatch(r"gen-[a-z0-9]{5}", name) for name in names), names


async def test_namespaced_create_into_missing_namespace_is_404_not_found(client: httpx.AsyncClient) -> None:
    response = await client.post(WIDGETS.format(ns="no-such-namespace"), json=widget("w"))
    assert response.status_code == 404
    body = response.json()
    assert body["reason"] == "NotFound"
    assert body["message"] == 'namespaces "no-such-namespace" not found'
    assert body["details"] == {"name": "no-such-namespace", "kind": "namespaces"}


async def test_create_of_an_existing_name_is_409_already_exists(
    client: httpx.AsyncClient, namespace: str
) -> None:
    await create_widget(client, namespace, "w")
    response = await client.post(WIDGETS.format(ns=namespace), json=widget("w"))
    assert response.status_code == 409
    assert response.json()["reason"] == "AlreadyExists"
    assert response.json()["message"] == 'widgets.example.com "w" already exists'


async def test_update_with_stale_resource_version_is_409_conflict(
    client: httpx.AsyncClient, namespace: str
) -> None:
    stale = await create_widget(client, namespace, "w")
    url = WIDGETS.format(ns=namespace) + "/w"
    await client.patch(url, json={"spec": {"port": 1}}, headers=MERGE)
    stale["spec"]["port"] = 2
    response = await client.put(url, json=stale)
    assert response.status_code == 409
    body = response.json()
    assert body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]
    assert (await client.get(url)).json()["spec"]["port"] == 1


@pytest.mark.parametrize("subresource", ["", "/status"])
async def test_merge_patch_carrying_stale_resource_version_is_409_conflict(
    client: httpx.AsyncClient, namespace: str, subresource: str
) -> None:
    created = await create_widget(client, namespace, "w")
    url = WIDGETS.format(ns=namespace) + "/w"
    await client.patch(url, json={"metadata": {"labels": {"moved": "on"}}}, headers=MERGE)
    stale = created["metadata"]["resourceVersion"]
    patch = {"metadata": {"resourceVersion": stale}, "status": {"phase": "Ready"}, "spec": {"port": 7}}
    response = await client.patch(url + subresource, json=patch, headers=MERGE)
    assert response.status_code == 409
    assert response.json()["reason"] == "Conflict"


async def test_merge_patches_with_the_same_resource_version_succeed_exactly_once(
    client: httpx.AsyncClient, namespace: str
) -> None:
    created = await create_widget(client, namespace, "w")
    rv = created["metadata"]["resourceVersion"]
    url = WIDGETS.format(ns=namespace) + "/w/status"
    patches = [
        client.patch(
            url, json={"metadata": {"resourceVersion": rv}, "status": {"phase": phase}}, headers=MERGE
        )
        for phase in ("Ready", "Failed", "Pending")
    ]
    codes = sorted(r.status_code for r in await asyncio.gather(*patches))
    assert codes == [200, 409, 409]


@pytest.mark.parametrize(
    ("method", "suffix", "body", "headers"),
    [
        ("GET", "", None, {}),
        ("PUT", "", widget("gone"), {}),
        ("PATCH", "", {"spec": {"port": 1}}, MERGE),
        ("PATCH", "/status", {"status": {"phase": "Ready"}}, MERGE),
        ("DELETE", "", None, {}),
    ],
)
async def test_get_update_patch_delete_of_a_missing_object_is_404_not_found(
    client: httpx.AsyncClient, namespace: str, method: str, suffix: str, body: dict | None, headers: dict
) -> None:
    url = WIDGETS.format(ns=namespace) + "/gone" + suffix
    response = await client.request(method, url, json=body, headers=headers)
    assert response.status_code == 404
    assert response.json()["message"] == 'widgets.example.com "gone" not found'


async def test_error_bodies_are_status_objects(client: httpx.AsyncClient, namespace: str) -> None:
    response = await client.post(WIDGETS.format(ns=namespace), json=widget("bad", port=123456))
    body = response.json()
    assert {k: body[k] for k in ("kind", "apiVersion", "status", "reason", "code")} == {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": "Invalid",
        "code": 422,
    }
    assert body["details"]["name"] == "bad"
    assert body["details"]["group"] == "example.com"
    assert body["details"]["kind"] == "Widget"
    assert body["details"]["causes"][0]["field"] == "spec.port"
    assert response.headers["content-type"].startswith("application/json")


async def test_put_replaces_the_whole_object(client: httpx.AsyncClient, namespace: str) -> None:
    created = await create_widget(client, namespace, "w", port=80, tags=["aa", "bb"])
    created["spec"] = {"host": "other.example"}
    replaced = await client.put(WIDGETS.format(ns=namespace) + "/w", json=created)
    assert replaced.status_code == 200
    assert replaced.json()["spec"] == {"host": "other.example", "port": 443, "mode": "safe"}


async def test_put_of_a_custom_resource_needs_a_resource_version(
    client: httpx.AsyncClient, namespace: str
) -> None:
    await create_widget(client, namespace, "w")
    response = await client.put(WIDGETS.format(ns=namespace) + "/w", json=widget("w"))
    assert response.status_code == 422
    assert "metadata.resourceVersion" in response.json()["message"]


async def test_merge_patch_merges_objects_and_null_deletes(client: httpx.AsyncClient, namespace: str) -> None:
    await create_widget(client, namespace, "w", labels={"a": "1", "b": "2"}, tags=["aa", "bb"])
    patch = {"spec": {"labels": {"a": None, "c": "3"}, "tags": ["cc"]}}
    response = await client.patch(WIDGETS.format(ns=namespace) + "/w", json=patch, headers=MERGE)
    assert response.json()["spec"]["labels"] == {"b": "2", "c": "3"}
    assert response.json()["spec"]["tags"] == ["cc"]


async def test_json_patch_applies_rfc_6902_operations(client: httpx.AsyncClient, namespace: str) -> None:
    await create_widget(client, namespace, "w", tags=["aa"])
    ops = [
        {"op": "add", "path": "/spec/tags/-", "value": "bb"},
        {"op": "replace", "path": "/spec/port", "value": 8080},
        {"op": "copy", "from": "/spec/host", "path": "/spec/labels"},
        {"op": "remove", "path": "/spec/labels"},
        {"op": "move", "from": "/spec/tags/0", "path": "/spec/tags/1"},
        {"op": "test", "path": "/spec/tags", "value": ["bb", "aa"]},
    ]
    response = await client.patch(WIDGETS.format(ns=namespace) + "/w", json=ops, headers=JSON_PATCH)
    assert response.status_code == 200, response.text
    assert response.json()["spec"]["tags"] == ["bb", "aa"]
    assert response.json()["spec"]["port"] == 8080


async def test_json_patch_with_failing_test_operation_is_422_and_changes_nothing(
    client: httpx.AsyncClient, namespace: str
) -> None:
    created = await create_widget(client, namespace, "w")
    url = WIDGETS.format(ns=namespace) + "/w"
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
        {"op": "replace", "path": "/spec/port", "value": 1},
    ]
    response = await client.patch(url, json=ops, headers=JSON_PATCH)
    assert response.status_code == 422
    assert (await client.get(url)).json()["metadata"]["resourceVersion"] == created["metadata"][
        "resourceVersion"
    ]


async def test_strategic_merge_patch_is_applied_as_merge_patch_to_builtins(
    client: httpx.AsyncClient, namespace: str
) -> None:
    url = f"/api/v1/namespaces/{namespace}/configmaps"
    await client.post(url, json={"metadata": {"name": "cm"}, "data": {"a": "1", "b": "2"}})
    patch = {"data": {"a": None, "c": "3"}, "$setElementOrder/data": ["c"]}
    response = await client.patch(f"{url}/cm", json=patch, headers=STRATEGIC)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"b": "2", "c": "3"}


async def test_strategic_merge_patch_of_a_custom_resource_is_415_as_on_kube(
    client: httpx.AsyncClient, namespace: str
) -> None:
    await create_widget(client, namespace, "w")
    response = await client.patch(WIDGETS.format(ns=namespace) + "/w", json={"spec": {}}, headers=STRATEGIC)
    assert response.status_code == 415
    assert "application/merge-patch+json" in response.json()["message"]


async def test_server_side_apply_creates_then_merges(client: httpx.AsyncClient, namespace: str) -> None:
    url = WIDGETS.format(ns=namespace) + "/applied"
    headers = {"Content-Type": "application/apply-patch+yaml"}
    manifest = (
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: applied\nspec:\n  host: a.example\n"
    )
    created = await client.patch(url, content=manifest, headers=headers, params={"fieldManager": "test"})
    assert created.status_code == 201, created.text
    updated = await client.patch(url, content=manifest.replace("a.example", "b.example"), headers=headers)
    assert updated.status_code == 200
    assert updated.json()["spec"]["host"] == "b.example"


async def test_secret_string_data_is_stored_as_base64_data(client: httpx.AsyncClient, namespace: str) -> None:
    body = {"metadata": {"name": "s"}, "stringData": {"token": "abc"}, "data": {"other": "eHl6"}}
    response = await client.post(f"/api/v1/namespaces/{namespace}/secrets", json=body)
    assert response.status_code == 201
    secret = response.json()
    assert secret["data"] == {"other": "eHl6", "token": "YWJj"}
    assert "stringData" not in secret
    assert secret["type"] == "Opaque"


async def test_tls_secret_requires_certificate_and_key(client: httpx.AsyncClient, namespace: str) -> None:
    body = {"metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "data": {"tls.crt": ""}}
    response = await client.post(f"/api/v1/namespaces/{namespace}/secrets", json=body)
    assert response.status_code == 422
    assert "data[tls.key]: Required value" in response.json()["message"]


async def test_dry_run_validates_without_storing(client: httpx.AsyncClient, namespace: str) -> None:
    response = await client.post(WIDGETS.format(ns=namespace), json=widget("dry"), params={"dryRun": "All"})
    assert response.status_code == 201
    assert response.json()["spec"]["port"] == 443
    assert (await client.get(WIDGETS.format(ns=namespace) + "/dry")).status_code == 404


async def test_request_counts_count_requests_and_writes(
    api_server: ApiServer, client: httpx.AsyncClient, namespace: str
) -> None:
    before = api_server.request_counts()
    await create_widget(client, namespace, "w")
    await client.get(WIDGETS.format(ns=namespace) + "/w")
    await client.patch(WIDGETS.format(ns=namespace) + "/w/status", json={"status": {}}, headers=MERGE)
    after = api_server.request_counts()
    assert after["requests"] - before["requests"] == 3
    assert after["writes"] - before["writes"] == 2
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": "someone", "resourceAttributes": {"verb": "get", "resource": "pods"}},
    }
    answered = await client.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", json=review)
    assert answered.status_code == 201 and answered.json()["status"]["allowed"] is False
    reviewed = api_server.request_counts()
    assert reviewed["requests"] - after["requests"] == 1
    assert reviewed["writes"] == after["writes"], "a review is answered, never stored: no write"


def protobuf_envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    """kube's protobuf wire form: magic, then runtime.Unknown{typeMeta{apiVersion, kind}, raw}."""

    def field(number: int, data: bytes) -> bytes:
        return bytes([number << 3 | 2, len(data)]) + data

    type_meta = field(1, api_version.encode()) + field(2, kind.encode())
    return b"k8s\x00" + field(1, type_meta) + field(2, raw)


async def test_protobuf_bodies_of_supported_kinds_are_decoded(
    client: httpx.AsyncClient, namespace: str
) -> None:
    metadata = bytes([1 << 3 | 2, 2]) + b"pb"  # ObjectMeta.name = "pb"
    data_entry = bytes([1 << 3 | 2, 1]) + b"k" + bytes([2 << 3 | 2, 1]) + b"v"  # map entry k -> v
    raw = bytes([1 << 3 | 2, len(metadata)]) + metadata + bytes([2 << 3 | 2, len(data_entry)]) + data_entry
    response = await client.post(
        f"/api/v1/namespaces/{namespace}/configmaps",
        content=protobuf_envelope("v1", "ConfigMap", raw),
        headers={"Content-Type": "application/vnd.kubernetes.protobuf"},
    )
    assert response.status_code == 201, response.text
    assert (response.json()["metadata"]["name"], response.json()["data"]) == ("pb", {"k": "v"})


async def test_protobuf_bodies_of_other_kinds_are_415(client: httpx.AsyncClient, namespace: str) -> None:
    response = await client.post(
        f"/api/v1/namespaces/{namespace}/configmaps",
        content=protobuf_envelope("v1", "Pod", b""),
        headers={"Content-Type": "application/vnd.kubernetes.protobuf"},
    )
    assert response.status_code == 415
    assert "application/json" in response.json()["message"]
