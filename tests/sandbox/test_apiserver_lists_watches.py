"""Conformance: lists, selectors and watches (kube-apiserver.md "Lists and watches")."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import httpx
import pytest

from keyward.sandbox.apiserver import ApiServer

from .helpers import WIDGETS, WatchStream, http_client, unique, widget

MERGE = {"Content-Type": "application/merge-patch+json"}


async def labelled(client: httpx.AsyncClient, ns: str, name: str, **labels: str) -> dict[str, Any]:
    body = widget(name)
    body["metadata"]["labels"] = labels
    response = await client.post(WIDGETS.format(ns=ns), json=body)
    assert response.status_code == 201, response.text
    return response.json()


def names(listing: dict[str, Any]) -> list[str]:
    return [item["metadata"]["name"] for item in listing["items"]]


async def test_list_returns_kind_list_with_resource_version_and_typed_items(
    client: httpx.AsyncClient, namespace: str
) -> None:
    await labelled(client, namespace, "a")
    secret = {"metadata": {"name": "s"}, "data": {}}
    await client.post(f"/api/v1/namespaces/{namespace}/secrets", json=secret)
    widgets = (await client.get(WIDGETS.format(ns=namespace))).json()
    assert widgets["kind"] == "WidgetList"
    assert widgets["apiVersion"] == "example.com/v1"
    assert int(widgets["metadata"]["resourceVersion"]) > 0
    assert [(i["kind"], i["apiVersion"]) for i in widgets["items"]] == [("Widget", "example.com/v1")]
    secrets = (await client.get(f"/api/v1/namespaces/{namespace}/secrets")).json()
    assert secrets["kind"] == "SecretList"
    assert [(i["kind"], i["apiVersion"]) for i in secrets["items"]] == [("Secret", "v1")]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("tier=web", ["a", "b"]),
        ("tier==web", ["a", "b"]),
        ("tier!=web", ["c", "d"]),
        ("tier in (db, cache)", ["c"]),
        ("tier notin (web)", ["c", "d"]),
        ("tier", ["a", "b", "c"]),
        ("!tier", ["d"]),
        ("tier=web,zone=eu", ["a"]),
        ("zone in (eu),!tier", []),
    ],
)
async def test_label_selectors_filter_lists(
    client: httpx.AsyncClient, namespace: str, selector: str, expected: list[str]
) -> None:
    await labelled(client, namespace, "a", tier="web", zone="eu")
    await labelled(client, namespace, "b", tier="web")
    await labelled(client, namespace, "c", tier="db")
    await labelled(client, namespace, "d", zone="us")
    listing = (await client.get(WIDGETS.format(ns=namespace), params={"labelSelector": selector})).json()
    assert names(listing) == expected


async def test_malformed_label_selector_is_400(client: httpx.AsyncClient, namespace: str) -> None:
    response = await client.get(WIDGETS.format(ns=namespace), params={"labelSelector": "tier in web"})
    assert response.status_code == 400
    assert "unable to parse requirement" in response.json()["message"]


async def test_field_selectors_on_metadata_name_and_namespace(
    client: httpx.AsyncClient, namespace: str
) -> None:
    await labelled(client, namespace, "a")
    await labelled(client, namespace, "b")
    by_name = await client.get(WIDGETS.format(ns=namespace), params={"fieldSelector": "metadata.name=b"})
    assert names(by_name.json()) == ["b"]
    not_name = await client.get(WIDGETS.format(ns=namespace), params={"fieldSelector": "metadata.name!=b"})
    assert names(not_name.json()) == ["a"]
    everywhere = await client.get(
        "/apis/example.com/v1/widgets", params={"fieldSelector": f"metadata.namespace={namespace}"}
    )
    assert names(everywhere.json()) == ["a", "b"]


async def test_custom_selectable_fields_and_csr_signer_name(
    client: httpx.AsyncClient, namespace: str
) -> None:
    await client.post(WIDGETS.format(ns=namespace), json=widget("x", host="x.example"))
    await client.post(WIDGETS.format(ns=namespace), json=widget("y", host="y.example"))
    listing = await client.get(WIDGETS.format(ns=namespace), params={"fieldSelector": "spec.host=y.example"})
    assert names(listing.json()) == ["y"]
    csrs = await client.get(
        "/apis/certificates.k8s.io/v1/certificatesigningrequests",
        params={"fieldSelector": "spec.signerName=example.com/nobody"},
    )
    assert csrs.json()["items"] == []


async def test_unsupported_field_selector_is_400(client: httpx.AsyncClient, namespace: str) -> None:
    response = await client.get(WIDGETS.format(ns=namespace), params={"fieldSelector": "spec.port=443"})
    assert response.status_code == 400
    assert response.json()["message"] == "field label not supported: spec.port"


async def test_list_across_all_namespaces(client: httpx.AsyncClient) -> None:
    spaces = [unique("all"), unique("all")]
    for space in spaces:
        await client.post("/api/v1/namespaces", json={"metadata": {"name": space}})
        await labelled(client, space, "w", run=spaces[0])
    listing = (
        await client.get("/apis/example.com/v1/widgets", params={"labelSelector": f"run={spaces[0]}"})
    ).json()
    assert sorted(item["metadata"]["namespace"] for item in listing["items"]) == sorted(spaces)


async def test_list_pages_with_limit_and_continue(client: httpx.AsyncClient, namespace: str) -> None:
    for name in "abcde":
        await labelled(client, namespace, name)
    first = (await client.get(WIDGETS.format(ns=namespace), params={"limit": "2"})).json()
    assert names(first) == ["a", "b"]
    assert first["metadata"]["remainingItemCount"] == 3
    second = await client.get(
        WIDGETS.format(ns=namespace), params={"limit": "2", "continue": first["metadata"]["continue"]}
    )
    assert names(second.json()) == ["c", "d"]
    third = await client.get(
        WIDGETS.format(ns=namespace), params={"limit": "2", "continue": second.json()["metadata"]["continue"]}
    )
    assert names(third.json()) == ["e"]
    assert "continue" not in third.json()["metadata"]


async def test_watch_streams_added_modified_deleted_as_json_lines(
    client: httpx.AsyncClient, namespace: str, watch: Any
) -> None:
    url = WIDGETS.format(ns=namespace)
    async with watch(url) as stream:
        assert stream.response.headers["content-type"] == "application/json"
        await labelled(client, namespace, "w")
        await client.patch(f"{url}/w", json={"spec": {"port": 1}}, headers=MERGE)
        await client.delete(f"{url}/w")
        events = await stream.take(3)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert events[1]["object"]["spec"]["port"] == 1
    assert all(e["object"]["kind"] == "Widget" for e in events)
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(set(versions))


@pytest.mark.parametrize("resource_version", [None, "0"])
async def test_watch_without_resource_version_first_sends_existing_objects(
    client: httpx.AsyncClient, namespace: str, watch: Any, resource_version: str | None
) -> None:
    await labelled(client, namespace, "old")
    params = {"resourceVersion": resource_version} if resource_version else {}
    async with watch(WIDGETS.format(ns=namespace), **params) as stream:
        await labelled(client, namespace, "new")
        events = await stream.take(2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "old"),
        ("ADDED", "new"),
    ]


async def test_watch_from_a_resource_version_replays_later_changes(
    client: httpx.AsyncClient, namespace: str, watch: Any
) -> None:
    first = await labelled(client, namespace, "a")
    await labelled(client, namespace, "b")
    await client.delete(WIDGETS.format(ns=namespace) + "/a")
    async with watch(
        WIDGETS.format(ns=namespace), resourceVersion=first["metadata"]["resourceVersion"]
    ) as stream:
        events = await stream.take(2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"),
        ("DELETED", "a"),
    ]


async def test_watch_from_a_forgotten_resource_version_gets_an_error_410_gone() -> None:
    server = ApiServer()
    server.watch_event_log_size = 5
    await server.start()
    try:
        async with http_client(server) as client:
            url = "/api/v1/namespaces/default/configmaps"
            first = (await client.post(url, json={"metadata": {"name": "c0"}})).json()
            for index in range(1, 20):
                await client.post(url, json={"metadata": {"name": f"c{index}"}})
            async with WatchStream(
                client, url, resourceVersion=first["metadata"]["resourceVersion"]
            ) as stream:
                events = await stream.rest()
    finally:
        await server.stop()
    assert len(events) == 1
    assert events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    assert "too old resource version" in status["message"]


async def test_watch_timeout_seconds_ends_the_stream(
    client: httpx.AsyncClient, namespace: str, watch: Any
) -> None:
    started = time.monotonic()
    async with watch(WIDGETS.format(ns=namespace), timeoutSeconds="1") as stream:
        assert await stream.rest(within=5) == []
    assert 0.9 < time.monotonic() - started < 4


async def test_watch_sends_periodic_bookmarks_when_allowed(
    client: httpx.AsyncClient, namespace: str, watch: Any
) -> None:
    await labelled(client, namespace, "w")
    async with watch(WIDGETS.format(ns=namespace), allowWatchBookmarks="true", resourceVersion="0") as stream:
        events = await stream.take(3, bookmarks=True)
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK", "BOOKMARK"]
    bookmark = events[1]["object"]
    assert bookmark["kind"] == "Widget"
    assert int(bookmark["metadata"]["resourceVersion"]) >= int(
        events[0]["object"]["metadata"]["resourceVersion"]
    )


async def test_watch_without_bookmarks_allowed_sends_none(
    client: httpx.AsyncClient, namespace: str, watch: Any
) -> None:
    async with watch(WIDGETS.format(ns=namespace), timeoutSeconds="1") as stream:
        assert [e["type"] for e in await stream.rest()] == []


async def test_watch_with_send_initial_events_ends_the_initial_list_with_a_bookmark(
    client: httpx.AsyncClient, namespace: str, watch: Any
) -> None:
    await labelled(client, namespace, "w")
    params = {
        "sendInitialEvents": "true",
        "resourceVersionMatch": "NotOlderThan",
        "allowWatchBookmarks": "true",
    }
    async with watch(WIDGETS.format(ns=namespace), **params) as stream:
        events = await stream.take(2, bookmarks=True)
    assert events[0]["type"] == "ADDED"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_watch_selectors_filter_and_objects_leaving_them_arrive_as_deleted(
    client: httpx.AsyncClient, namespace: str, watch: Any
) -> None:
    url = WIDGETS.format(ns=namespace)
    async with watch(url, labelSelector="tier=web", fieldSelector="metadata.name!=skip") as stream:
        await labelled(client, namespace, "other", tier="db")
        await labelled(client, namespace, "skip", tier="web")
        await labelled(client, namespace, "w", tier="db")
        await client.patch(f"{url}/w", json={"metadata": {"labels": {"tier": "web"}}}, headers=MERGE)
        await client.patch(f"{url}/w", json={"spec": {"port": 2}}, headers=MERGE)
        await client.patch(f"{url}/w", json={"metadata": {"labels": {"tier": "db"}}}, headers=MERGE)
        events = await stream.take(3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "w"),
        ("MODIFIED", "w"),
        ("DELETED", "w"),
    ]


async def test_watch_of_one_namespace_ignores_other_namespaces(
    client: httpx.AsyncClient, namespace: str, watch: Any
) -> None:
    other = unique("other")
    await client.post("/api/v1/namespaces", json={"metadata": {"name": other}})
    async with watch(WIDGETS.format(ns=namespace)) as stream:
        await labelled(client, other, "elsewhere")
        await labelled(client, namespace, "here")
        events = await stream.take(1)
    assert events[0]["object"]["metadata"]["name"] == "here"


async def test_many_objects_flow_through_create_watch_and_status_patch_quickly(
    api_server: ApiServer, namespace: str
) -> None:
    count = 500
    url = WIDGETS.format(ns=namespace)
    gate = asyncio.Semaphore(50)

    async def create_then_mark_ready(session: aiohttp.ClientSession, index: int) -> tuple[int, int]:
        async with gate:
            async with session.post(url, json=widget(f"w{index}")) as created:
                await created.read()
            status = json.dumps({"status": {"phase": "Ready"}})
            async with session.patch(f"{url}/w{index}/status", data=status, headers=MERGE) as patched:
                await patched.read()
            return created.status, patched.status

    async with (
        aiohttp.ClientSession(
            api_server.url,
            headers={"Authorization": f"Bearer {api_server.admin_token}"},
            connector=aiohttp.TCPConnector(ssl=api_server.client_ssl_context()),
        ) as session,
        session.get(url, params={"watch": "true"}) as stream,
    ):
        started = time.monotonic()
        codes = await asyncio.gather(*(create_then_mark_ready(session, i) for i in range(count)))
        events = []
        async with asyncio.timeout(30):
            while len(events) < 2 * count:
                events.append(json.loads(await stream.content.readline()))
        elapsed = time.monotonic() - started
    assert set(codes) == {(201, 200)}
    assert (
        sum(1 for e in events if e["type"] == "MODIFIED" and e["object"]["status"]["phase"] == "Ready")
        == count
    )
    assert elapsed < 8, f"{count} creates + status patches + their watch events took {elapsed:.1f}s"
