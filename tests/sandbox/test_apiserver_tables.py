"""Conformance: Table output for ``kubectl get`` (kube-apiserver.md "additionalPrinterColumns")."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from keyward.sandbox.apiserver.jsonpath import compile_path, evaluate
from keyward.sandbox.apiserver.tables import human_duration

from .helpers import CSRS, TABLE, WIDGETS, Pki, unique, widget

MERGE = {"Content-Type": "application/merge-patch+json"}


async def get_table(client: httpx.AsyncClient, path: str, **params: str) -> dict[str, Any]:
    response = await client.get(path, headers={"Accept": TABLE}, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert (body["kind"], body["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    return body


def columns(table: dict[str, Any]) -> list[str]:
    return [c["name"] for c in table["columnDefinitions"]]


async def test_table_uses_additional_printer_columns_including_condition_filters(
    client: httpx.AsyncClient, namespace: str
) -> None:
    await client.post(WIDGETS.format(ns=namespace), json=widget("ready", host="r.example", port=8443))
    await client.post(WIDGETS.format(ns=namespace), json=widget("waiting", host="w.example"))
    conditions = [{"type": "Issuing", "status": "False"}, {"type": "Ready", "status": "True"}]
    await client.patch(
        WIDGETS.format(ns=namespace) + "/ready/status",
        json={"status": {"conditions": conditions}},
        headers=MERGE,
    )
    table = await get_table(client, WIDGETS.format(ns=namespace))
    assert columns(table) == ["Name", "Host", "Port", "Ready", "Mode", "Age"]
    assert table["columnDefinitions"][0]["format"] == "name"
    assert table["columnDefinitions"][4]["priority"] == 1
    rows = {row["cells"][0]: row["cells"] for row in table["rows"]}
    assert rows["ready"][:5] == ["ready", "r.example", 8443, "True", "safe"]
    assert rows["waiting"][:5] == ["waiting", "w.example", 443, None, "safe"]
    assert rows["ready"][5] in ("0s", "1s", "2s")


async def test_table_of_one_object_and_row_objects_are_partial_metadata(
    client: httpx.AsyncClient, namespace: str
) -> None:
    await client.post(WIDGETS.format(ns=namespace), json=widget("w"))
    table = await get_table(client, WIDGETS.format(ns=namespace) + "/w")
    (row,) = table["rows"]
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["name"] == "w"
    full = await get_table(client, WIDGETS.format(ns=namespace) + "/w", includeObject="Object")
    assert full["rows"][0]["object"]["spec"]["host"] == "svc.example"


async def test_table_without_printer_columns_shows_name_and_age(client: httpx.AsyncClient) -> None:
    name = unique("gadget")
    await client.post("/apis/example.com/v1/gadgets", json={"metadata": {"name": name}})
    table = await get_table(client, f"/apis/example.com/v1/gadgets/{name}")
    assert columns(table) == ["Name", "Age"]
    assert table["rows"][0]["cells"][0] == name


async def test_csr_table_shows_signer_requestor_duration_and_condition(
    client: httpx.AsyncClient, pki: Pki
) -> None:
    name = unique("csr")
    created = await client.post(CSRS, json=pki.csr_object(name, expirationSeconds=3600))
    assert created.status_code == 201
    table = await get_table(client, f"{CSRS}/{name}")
    assert columns(table) == ["Name", "Age", "SignerName", "Requestor", "RequestedDuration", "Condition"]
    cells = table["rows"][0]["cells"]
    assert cells[0] == name
    assert cells[2:] == ["example.com/sandbox-test", "kubernetes-admin", "60m", "Pending"]


async def test_secret_table_shows_type_and_data_count(client: httpx.AsyncClient, namespace: str) -> None:
    body = {"metadata": {"name": "s"}, "type": "example.com/x", "data": {"a": "", "b": ""}}
    await client.post(f"/api/v1/namespaces/{namespace}/secrets", json=body)
    table = await get_table(client, f"/api/v1/namespaces/{namespace}/secrets")
    assert columns(table) == ["Name", "Type", "Data", "Age"]
    assert table["rows"][0]["cells"][:3] == ["s", "example.com/x", 2]


async def test_crd_table_shows_name_and_created_at(client: httpx.AsyncClient) -> None:
    table = await get_table(
        client, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com"
    )
    assert columns(table) == ["Name", "Created At"]
    assert table["rows"][0]["cells"][1].endswith("Z")


async def test_plain_json_is_returned_when_no_table_is_asked_for(
    client: httpx.AsyncClient, namespace: str
) -> None:
    response = await client.get(
        f"/api/v1/namespaces/{namespace}/secrets", headers={"Accept": "application/json"}
    )
    assert response.json()["kind"] == "SecretList"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "<invalid>"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (150, "2m30s"),
        (3600, "60m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 60 * 5, "3h5m"),
        (30 * 3600, "30h"),
        (50 * 3600, "2d2h"),
        (10 * 86400, "10d"),
        (3 * 365 * 86400, "3y"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_ages_are_printed_like_kubectl(seconds: int, shown: str) -> None:
    assert human_duration(seconds) == shown


DOCUMENT = {
    "spec": {"items": [{"name": "a", "n": 1}, {"name": "b", "n": 2}], "host": "h"},
    "status": {"conditions": [{"type": "Issuing", "status": "False"}, {"type": "Ready", "status": "True"}]},
}


@pytest.mark.parametrize(
    ("path", "found"),
    [
        (".spec.host", ["h"]),
        ("{.spec.host}", ["h"]),
        (".spec.missing", []),
        (".spec.items[0].name", ["a"]),
        (".spec.items[-1].name", ["b"]),
        (".spec.items[*].name", ["a", "b"]),
        (".spec.items[0:1].n", [1]),
        (".spec['host']", ["h"]),
        ('.status.conditions[?(@.type=="Ready")].status', ["True"]),
        (".status.conditions[?(@.type!='Ready')].type", ["Issuing"]),
        (".spec.items[?(@.n>1)].name", ["b"]),
        (".status.conditions[?(@.reason)].type", []),
        ("..name", ["a", "b"]),
    ],
)
def test_printer_column_json_paths(path: str, found: list[Any]) -> None:
    assert evaluate(compile_path(path), DOCUMENT) == found


async def test_watch_asking_for_tables_streams_table_rows(
    client: httpx.AsyncClient, namespace: str, watch: Any
) -> None:
    await client.post(WIDGETS.format(ns=namespace), json=widget("w", host="t.example"))
    async with watch(WIDGETS.format(ns=namespace), {"Accept": TABLE}, resourceVersion="0") as stream:
        (event,) = await stream.take(1)
    assert event["type"] == "ADDED"
    assert event["object"]["kind"] == "Table"
    assert event["object"]["rows"][0]["cells"][:3] == ["w", "t.example", 443]
