"""Conformance: CustomResourceDefinitions and schema handling (kube-apiserver.md "Custom resources")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from keyward.sandbox.apiserver import ApiServer

from .helpers import WIDGETS, unique, widget

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def sprocket_crd(group: str, *, scope: str = "Namespaced") -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": {"teeth": {"type": "integer", "default": 12}}}
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"sprockets.{group}"},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {"plural": "sprockets", "kind": "Sprocket", "shortNames": ["spr"]},
            "versions": [
                {"name": "v1alpha1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}
            ],
        },
    }


async def test_creating_a_crd_serves_its_resource_for_discovery_crud_and_watch(
    client: httpx.AsyncClient, namespace: str, watch: Any
) -> None:
    group = f"{unique('g')}.example.org"
    created = await client.post(CRDS, json=sprocket_crd(group))
    assert created.status_code == 201, created.text
    conditions = {c["type"]: c["status"] for c in created.json()["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    resources = (await client.get(f"/apis/{group}/v1alpha1")).json()["resources"]
    assert [(r["name"], r["kind"], r["shortNames"]) for r in resources] == [
        ("sprockets", "Sprocket", ["spr"])
    ]
    assert group in [g["name"] for g in (await client.get("/apis")).json()["groups"]]
    url = f"/apis/{group}/v1alpha1/namespaces/{namespace}/sprockets"
    async with watch(url) as stream:
        made = await client.post(url, json={"metadata": {"name": "s"}, "spec": {}})
        assert made.json()["spec"] == {"teeth": 12}
        assert (await stream.take(1))[0]["object"]["metadata"]["name"] == "s"


async def test_a_crd_file_with_several_documents_installs_each(client: httpx.AsyncClient) -> None:
    names = [c["metadata"]["name"] for c in (await client.get(CRDS)).json()["items"]]
    assert {"widgets.example.com", "gadgets.example.com"} <= set(names)


INVALID = [
    (
        {"port": 123456},
        "spec.port: Invalid value: 123456: spec.port in body should be less than or equal to 65535",
    ),
    ({"port": 0}, "spec.port: Invalid value: 0: spec.port in body should be greater than or equal to 1"),
    (
        {"port": "https"},
        'spec.port: Invalid value: "https": spec.port in body must be of type integer: "string"',
    ),
    ({"host": None}, "spec.host: Required value"),
    ({"mode": "slow"}, 'spec.mode: Unsupported value: "slow": supported values: "fast", "safe"'),
    ({"host": ""}, 'spec.host: Invalid value: "": spec.host in body should be at least 1 chars long'),
    ({"host": "a" * 64}, "spec.host: Too long: may not be more than 63 bytes"),
    (
        {"host": "UPPER"},
        "spec.host: Invalid value: \"UPPER\": spec.host in body should match '^[a-z0-9.-]+$'",
    ),
    ({"weight": 0}, "spec.weight: Invalid value: 0: spec.weight in body should be greater than 0"),
    ({"notBefore": "yesterday"}, 'spec.notBefore in body must be of type date-time: "yesterday"'),
    (
        {"tags": ["aa", "b"]},
        'spec.tags[1]: Invalid value: "b": spec.tags[1] in body should be at least 2 chars long',
    ),
    ({"tags": ["aa", "bb", "cc", "dd"]}, "spec.tags: Too many: 4: must have at most 3 items"),
    (
        {"labels": {"a": 1}},
        'spec.labels.a: Invalid value: 1: spec.labels.a in body must be of type string: "integer"',
    ),
    ({"logging": {"enabled": "yes"}}, "spec.logging.enabled in body must be of type boolean"),
    ({"limits": {"cpu": True}}, "spec.limits.cpu in body must be of type integer,string"),
]


@pytest.mark.parametrize(
    ("spec", "message"), INVALID, ids=[m.split(":")[0] + "-" + str(i) for i, (_, m) in enumerate(INVALID)]
)
async def test_schema_violations_are_422_invalid_naming_the_field_path(
    client: httpx.AsyncClient, namespace: str, spec: dict[str, Any], message: str
) -> None:
    body = widget("bad")
    body["spec"].update(spec)
    body["spec"] = {k: v for k, v in body["spec"].items() if v is not None}
    response = await client.post(WIDGETS.format(ns=namespace), json=body)
    assert response.status_code == 422, response.text
    status = response.json()
    assert status["reason"] == "Invalid"
    assert status["message"].startswith('Widget.example.com "bad" is invalid: ')
    assert message in status["message"]
    field = message.split(":")[0].split(" ")[0]
    assert field in [cause["field"] for cause in status["details"]["causes"]]


async def test_schema_accepts_valid_values_of_every_kind(client: httpx.AsyncClient, namespace: str) -> None:
    spec = {
        "host": "a.example",
        "port": 65535,
        "mode": "fast",
        "replicas": None,
        "weight": 0.5,
        "notBefore": "2024-05-01T10:00:00Z",
        "tags": ["aa"],
        "labels": {"x": "y"},
        "limits": {"cpu": "500m"},
        "logging": {"enabled": True},
    }
    response = await client.post(WIDGETS.format(ns=namespace), json=widget("good", **spec))
    assert response.status_code == 201, response.text
    stored = response.json()["spec"]
    assert stored["replicas"] is None
    assert stored["limits"] == {"cpu": "500m"}
    numeric = await client.post(WIDGETS.format(ns=namespace), json=widget("numeric", limits={"cpu": 2}))
    assert numeric.json()["spec"]["limits"] == {"cpu": 2}


async def test_update_and_patch_are_validated_too(client: httpx.AsyncClient, namespace: str) -> None:
    await client.post(WIDGETS.format(ns=namespace), json=widget("w"))
    url = WIDGETS.format(ns=namespace) + "/w"
    patched = await client.patch(
        url, json={"spec": {"port": 70000}}, headers={"Content-Type": "application/merge-patch+json"}
    )
    assert patched.status_code == 422
    current = (await client.get(url)).json()
    current["spec"]["mode"] = "slow"
    assert (await client.put(url, json=current)).status_code == 422


async def test_defaults_are_applied_including_nested_ones_inside_existing_objects(
    client: httpx.AsyncClient, namespace: str
) -> None:
    plain = (await client.post(WIDGETS.format(ns=namespace), json=widget("plain"))).json()["spec"]
    assert plain == {"host": "svc.example", "port": 443, "mode": "safe"}
    nested = (await client.post(WIDGETS.format(ns=namespace), json=widget("nested", logging={}))).json()[
        "spec"
    ]
    assert nested["logging"] == {"level": "info"}
    explicit = await client.post(WIDGETS.format(ns=namespace), json=widget("explicit", port=80, mode="fast"))
    assert explicit.json()["spec"]["port"] == 80


async def test_null_in_a_non_nullable_field_is_dropped_and_defaulted(
    client: httpx.AsyncClient, namespace: str
) -> None:
    response = await client.post(
        WIDGETS.format(ns=namespace), json=widget("nulls", port=None, notBefore=None)
    )
    assert response.status_code == 201
    assert response.json()["spec"]["port"] == 443
    assert "notBefore" not in response.json()["spec"]


async def test_unknown_fields_are_pruned_unless_preserved(client: httpx.AsyncClient, namespace: str) -> None:
    body = widget("pruned", extra="gone", options={"anything": {"goes": [1, 2]}}, logging={"verbose": True})
    body["topLevel"] = "gone"
    response = await client.post(WIDGETS.format(ns=namespace), json=body)
    assert response.status_code == 201
    stored = response.json()
    assert "topLevel" not in stored
    assert "extra" not in stored["spec"]
    assert stored["spec"]["options"] == {"anything": {"goes": [1, 2]}}
    assert stored["spec"]["logging"] == {"level": "info"}
    warnings = response.headers.get_list("warning")
    assert any('unknown field \\"spec.extra\\"' in w for w in warnings), warnings


async def test_strict_field_validation_rejects_unknown_fields(
    client: httpx.AsyncClient, namespace: str
) -> None:
    response = await client.post(
        WIDGETS.format(ns=namespace), json=widget("strict", extra=1), params={"fieldValidation": "Strict"}
    )
    assert response.status_code == 400
    assert 'strict decoding error: unknown field "spec.extra"' in response.json()["message"]


async def test_each_served_version_returns_its_own_api_version_from_one_stored_object(
    client: httpx.AsyncClient, namespace: str
) -> None:
    beta = f"/apis/example.com/v1beta1/namespaces/{namespace}/widgets"
    body = widget("multi")
    body["apiVersion"] = "example.com/v1beta1"
    created = await client.post(beta, json=body)
    assert created.json()["apiVersion"] == "example.com/v1beta1"
    via_v1 = (await client.get(WIDGETS.format(ns=namespace) + "/multi")).json()
    assert via_v1["apiVersion"] == "example.com/v1"
    assert via_v1["metadata"]["uid"] == created.json()["metadata"]["uid"]
    listed = (await client.get(beta)).json()
    assert [item["apiVersion"] for item in listed["items"]] == ["example.com/v1beta1"]
    assert (await client.get("/apis/example.com")).json()["preferredVersion"]["version"] == "v1"


async def test_cluster_scoped_custom_resources_have_no_namespace(client: httpx.AsyncClient) -> None:
    name = unique("gadget")
    created = await client.post(
        "/apis/example.com/v1/gadgets", json={"metadata": {"name": name, "namespace": "x"}}
    )
    assert created.status_code == 201
    assert "namespace" not in created.json()["metadata"]
    nested = await client.get(f"/apis/example.com/v1/namespaces/default/gadgets/{name}")
    assert nested.status_code == 404


async def test_deleting_a_crd_deletes_its_objects_and_stops_serving_it(
    client: httpx.AsyncClient, namespace: str, watch: Any
) -> None:
    group = f"{unique('g')}.example.org"
    await client.post(CRDS, json=sprocket_crd(group))
    url = f"/apis/{group}/v1alpha1/namespaces/{namespace}/sprockets"
    await client.post(url, json={"metadata": {"name": "s"}})
    async with watch(url, resourceVersion="0") as stream:
        assert (await stream.take(1))[0]["type"] == "ADDED"
        await client.delete(f"{CRDS}/sprockets.{group}")
        assert [e["type"] for e in await stream.rest()] == ["DELETED"]
    assert (await client.get(url)).status_code == 404
    assert (await client.get(f"/apis/{group}/v1alpha1")).status_code == 404


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metadata": {"name": "wrong.example.org"}}, 'must be spec.names.plural+"."+spec.group'),
        ({"spec": {"scope": "Galaxy"}}, 'spec.scope: Unsupported value: "Galaxy"'),
        ({"spec": {"group": "nodots"}}, "spec.group: Invalid value"),
    ],
)
async def test_invalid_crds_are_422(client: httpx.AsyncClient, change: dict[str, Any], message: str) -> None:
    crd = sprocket_crd("bad.example.org")
    for key, value in change.items():
        crd[key].update(value)
    if "group" in change.get("spec", {}):
        crd["metadata"]["name"] = "sprockets.nodots"
    response = await client.post(CRDS, json=crd)
    assert response.status_code == 422
    assert message in response.json()["message"]


async def test_crd_paths_that_are_not_crds_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    wrong = tmp_path / "secret.yaml"
    wrong.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}))
    server = ApiServer(crd_paths=[wrong])
    with pytest.raises(ValueError, match="holds a Secret, not a CustomResourceDefinition"):
        await server.start()
