"""Conformance: finalizers, garbage collection and namespace deletion (kube-apiserver.md "Deletion")."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.waiting import wait_for

from .helpers import WIDGETS, unique, widget

MERGE = {"Content-Type": "application/merge-patch+json"}


async def gone(client: httpx.AsyncClient, url: str) -> bool:
    return (await client.get(url)).status_code == 404


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
    }


async def test_delete_with_finalizers_sets_deletion_timestamp_and_keeps_the_object(
    client: httpx.AsyncClient, namespace: str
) -> None:
    body = widget("held")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    await client.post(WIDGETS.format(ns=namespace), json=body)
    url = WIDGETS.format(ns=namespace) + "/held"
    response = await client.delete(url)
    assert response.status_code == 200
    marked = response.json()["metadata"]
    assert marked["deletionTimestamp"].endswith("Z")
    assert marked["deletionGracePeriodSeconds"] == 0
    stored = (await client.get(url)).json()["metadata"]
    assert stored["deletionTimestamp"] == marked["deletionTimestamp"]
    again = await client.delete(url)
    assert again.json()["metadata"]["resourceVersion"] == marked["resourceVersion"]


async def test_object_disappears_when_its_last_finalizer_is_removed(
    client: httpx.AsyncClient, namespace: str, watch: Any
) -> None:
    body = widget("held")
    body["metadata"]["finalizers"] = ["example.com/a", "example.com/b"]
    await client.post(WIDGETS.format(ns=namespace), json=body)
    url = WIDGETS.format(ns=namespace) + "/held"
    await client.delete(url)
    await client.patch(url, json={"metadata": {"finalizers": ["example.com/b"]}}, headers=MERGE)
    assert (await client.get(url)).status_code == 200
    async with watch(
        WIDGETS.format(ns=namespace),
        resourceVersion=(await client.get(url)).json()["metadata"]["resourceVersion"],
    ) as stream:
        released = await client.patch(url, json={"metadata": {"finalizers": None}}, headers=MERGE)
        assert released.status_code == 200
        assert [e["type"] for e in await stream.take(1)] == ["DELETED"]
    assert await gone(client, url)


async def test_no_new_finalizers_once_deletion_started(client: httpx.AsyncClient, namespace: str) -> None:
    body = widget("held")
    body["metadata"]["finalizers"] = ["example.com/a"]
    await client.post(WIDGETS.format(ns=namespace), json=body)
    url = WIDGETS.format(ns=namespace) + "/held"
    await client.delete(url)
    patch = {"metadata": {"finalizers": ["example.com/a", "example.com/late"]}}
    response = await client.patch(url, json=patch, headers=MERGE)
    assert response.status_code == 422
    assert "no new finalizers can be added if the object is being deleted" in response.json()["message"]


async def test_dependents_of_a_deleted_owner_are_garbage_collected_cascading(
    client: httpx.AsyncClient, namespace: str
) -> None:
    owner = (await client.post(WIDGETS.format(ns=namespace), json=widget("owner"))).json()
    child = widget("child")
    child["metadata"]["ownerReferences"] = [owner_reference(owner)]
    child = (await client.post(WIDGETS.format(ns=namespace), json=child)).json()
    secret = {"metadata": {"name": "grandchild", "ownerReferences": [owner_reference(child)]}, "data": {}}
    await client.post(f"/api/v1/namespaces/{namespace}/secrets", json=secret)
    await client.delete(WIDGETS.format(ns=namespace) + "/owner")
    await wait_for(lambda: gone(client, WIDGETS.format(ns=namespace) + "/child"))
    await wait_for(lambda: gone(client, f"/api/v1/namespaces/{namespace}/secrets/grandchild"))


async def test_dependent_with_another_live_owner_only_loses_the_dangling_reference(
    client: httpx.AsyncClient, namespace: str
) -> None:
    first = (await client.post(WIDGETS.format(ns=namespace), json=widget("first"))).json()
    second = (await client.post(WIDGETS.format(ns=namespace), json=widget("second"))).json()
    shared = {
        "metadata": {"name": "shared", "ownerReferences": [owner_reference(first), owner_reference(second)]}
    }
    url = f"/api/v1/namespaces/{namespace}/configmaps"
    await client.post(url, json=shared)
    await client.delete(WIDGETS.format(ns=namespace) + "/first")

    async def reference_dropped() -> bool:
        refs = (await client.get(f"{url}/shared")).json()["metadata"].get("ownerReferences", [])
        return [r["name"] for r in refs] == ["second"]

    await wait_for(reference_dropped)


async def test_orphan_propagation_keeps_dependents(client: httpx.AsyncClient, namespace: str) -> None:
    owner = (await client.post(WIDGETS.format(ns=namespace), json=widget("owner"))).json()
    child = widget("child")
    child["metadata"]["ownerReferences"] = [owner_reference(owner)]
    await client.post(WIDGETS.format(ns=namespace), json=child)
    options = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Orphan"}
    await client.request("DELETE", WIDGETS.format(ns=namespace) + "/owner", json=options)
    kept = (await client.get(WIDGETS.format(ns=namespace) + "/child")).json()
    assert "ownerReferences" not in kept["metadata"]


async def test_dependent_created_for_a_missing_owner_is_collected(
    client: httpx.AsyncClient, namespace: str
) -> None:
    ghost = {"apiVersion": "example.com/v1", "kind": "Widget", "name": "ghost", "uid": "no-such-uid"}
    body = {"metadata": {"name": "orphan", "ownerReferences": [ghost]}, "data": {}}
    await client.post(f"/api/v1/namespaces/{namespace}/secrets", json=body)
    await wait_for(lambda: gone(client, f"/api/v1/namespaces/{namespace}/secrets/orphan"))


async def test_namespace_delete_removes_its_objects_then_the_namespace(client: httpx.AsyncClient) -> None:
    name = unique("doomed")
    await client.post("/api/v1/namespaces", json={"metadata": {"name": name}})
    held = widget("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    await client.post(WIDGETS.format(ns=name), json=held)
    await client.post(f"/api/v1/namespaces/{name}/secrets", json={"metadata": {"name": "s"}})
    deleting = await client.delete(f"/api/v1/namespaces/{name}")
    assert deleting.json()["status"]["phase"] == "Terminating"
    await wait_for(lambda: gone(client, f"/api/v1/namespaces/{name}/secrets/s"))
    refused = await client.post(f"/api/v1/namespaces/{name}/secrets", json={"metadata": {"name": "late"}})
    assert refused.status_code == 403
    assert "because it is being terminated" in refused.json()["message"]
    assert (await client.get(f"/api/v1/namespaces/{name}")).status_code == 200
    await client.patch(
        WIDGETS.format(ns=name) + "/held", json={"metadata": {"finalizers": []}}, headers=MERGE
    )
    await wait_for(lambda: gone(client, f"/api/v1/namespaces/{name}"))


async def test_default_namespace_cannot_be_deleted(client: httpx.AsyncClient) -> None:
    response = await client.delete("/api/v1/namespaces/default")
    assert response.status_code == 403


async def test_delete_preconditions_on_uid_and_resource_version(
    client: httpx.AsyncClient, namespace: str
) -> None:
    await client.post(WIDGETS.format(ns=namespace), json=widget("w"))
    url = WIDGETS.format(ns=namespace) + "/w"
    options = {"preconditions": {"resourceVersion": "1"}}
    response = await client.request("DELETE", url, json=options)
    assert response.status_code == 409
    assert "Precondition failed" in response.json()["message"]
    deleted = await client.delete(url)
    assert deleted.json()["status"] == "Success"
    assert deleted.json()["details"]["name"] == "w"


async def test_delete_collection_honours_label_selectors(client: httpx.AsyncClient, namespace: str) -> None:
    for name, tier in (("a", "x"), ("b", "x"), ("c", "y")):
        body = widget(name)
        body["metadata"]["labels"] = {"tier": tier}
        await client.post(WIDGETS.format(ns=namespace), json=body)
    await client.delete(WIDGETS.format(ns=namespace), params={"labelSelector": "tier=x"})
    left = (await client.get(WIDGETS.format(ns=namespace))).json()["items"]
    assert [item["metadata"]["name"] for item in left] == ["c"]
