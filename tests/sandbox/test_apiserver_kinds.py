"""Metadata syntax on every object, and the kinds a deployment manifest holds (validation, discovery)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .helpers import WIDGETS, widget

RBAC = "/apis/rbac.authorization.k8s.io/v1"


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (
            {"labels": {"bad key!": "v"}},
            'metadata.labels: Invalid value: "bad key!": name part must consist of alphanumeric characters',
        ),
        (
            {"labels": {"a/b/c": "v"}},
            'metadata.labels: Invalid value: "a/b/c": a qualified name must consist of',
        ),
        ({"labels": {"Example.COM/x": "v"}}, "prefix part a lowercase RFC 1123 subdomain must consist of"),
        ({"labels": {"k" * 64: "v"}}, "name part must be no more than 63 characters"),
        (
            {"labels": {"ok": "v" * 64}},
            'metadata.labels: Invalid value: "' + "v" * 64 + '": must be no more than 63',
        ),
        (
            {"labels": {"ok": "-dash"}},
            'metadata.labels: Invalid value: "-dash": a valid label must be an empty string',
        ),
        (
            {"annotations": {"/x": "v"}},
            'metadata.annotations: Invalid value: "/x": prefix part must be non-empty',
        ),
        (
            {"annotations": {"big": "x" * (256 * 1024)}},
            "metadata.annotations: Too long: may not be more than 262144 bytes",
        ),
        ({"finalizers": ["a/b/c"]}, 'metadata.finalizers: Invalid value: "a/b/c": a qualified name'),
    ],
    ids=[
        "key-chars",
        "two-slashes",
        "uppercase-prefix",
        "long-name",
        "long-value",
        "value-chars",
        "empty-prefix",
        "size",
        "finalizer",
    ],
)
@pytest.mark.parametrize("kind", ["configmap", "custom-resource"])
async def test_label_annotation_and_finalizer_syntax_is_422_naming_the_field(
    client: httpx.AsyncClient, namespace: str, metadata: dict[str, Any], message: str, kind: str
) -> None:
    if kind == "configmap":
        url, body = f"/api/v1/namespaces/{namespace}/configmaps", {"metadata": {"name": "m", **metadata}}
    else:
        body = widget("w")
        body["metadata"].update(metadata)
        url = WIDGETS.format(ns=namespace)
    response = await client.post(url, json=body)
    assert response.status_code == 422, response.text
    assert message in response.json()["message"]
    assert response.json()["details"]["causes"][0]["field"].startswith("metadata.")


async def test_valid_labels_and_annotations_pass_and_annotation_keys_ignore_case(
    client: httpx.AsyncClient, namespace: str
) -> None:
    metadata = {
        "name": "m",
        "labels": {"app.kubernetes.io/name": "keyward", "empty": "", "a_b.c-d": "X_y.z-1"},
        "annotations": {"Example.com/Mixed_Case": "anything at all: { } ünïcode"},
    }
    response = await client.post(f"/api/v1/namespaces/{namespace}/configmaps", json={"metadata": metadata})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("url", "body", "message"),
    [
        (
            "/roles",
            {"metadata": {"name": "r"}, "rules": [{"verbs": ["get"], "resources": ["pods"]}]},
            "rules[0].apiGroups: Required value: resource rules must supply at least one api group",
        ),
        (
            "/roles",
            {"metadata": {"name": "r"}, "rules": [{"verbs": ["get"], "nonResourceURLs": ["/metrics"]}]},
            'rules[0].nonResourceURLs: Invalid value: ["/metrics"]: '
            "namespaced rules cannot apply to non-resource URLs",
        ),
        (
            "/roles",
            {"metadata": {"name": "r"}, "rules": [{"apiGroups": [""], "resources": ["pods"]}]},
            "rules[0].verbs: Required value: verbs must contain at least one value",
        ),
        (
            "/rolebindings",
            {"metadata": {"name": "b"}, "roleRef": {"kind": "Pod", "name": "x"}, "subjects": []},
            'roleRef.kind: Unsupported value: "Pod": supported values: "Role", "ClusterRole"',
        ),
        (
            "/rolebindings",
            {
                "metadata": {"name": "b"},
                "roleRef": {"kind": "Role", "name": "x"},
                "subjects": [{"kind": "Robot", "name": "r"}],
            },
            'subjects[0].kind: Unsupported value: "Robot"',
        ),
        (
            "/rolebindings",
            {
                "metadata": {"name": "b"},
                "roleRef": {"kind": "Role", "name": "x"},
                "subjects": [
                    {"kind": "ServiceAccount", "name": "sa", "apiGroup": "rbac.authorization.k8s.io"}
                ],
            },
            'subjects[0].apiGroup: Unsupported value: "rbac.authorization.k8s.io": supported values: ""',
        ),
    ],
    ids=[
        "no-api-groups",
        "urls-in-a-role",
        "no-verbs",
        "bad-role-kind",
        "bad-subject-kind",
        "sa-with-api-group",
    ],
)
async def test_rbac_objects_are_validated(
    client: httpx.AsyncClient, namespace: str, url: str, body: dict[str, Any], message: str
) -> None:
    response = await client.post(f"{RBAC}/namespaces/{namespace}{url}", json=body)
    assert response.status_code == 422
    assert message in response.json()["message"]


async def test_cluster_role_binding_needs_service_account_namespaces_and_keeps_its_role_ref(
    client: httpx.AsyncClient,
) -> None:
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view-things"}
    missing = await client.post(
        f"{RBAC}/clusterrolebindings",
        json={
            "metadata": {"name": "crb-ns"},
            "roleRef": ref,
            "subjects": [{"kind": "ServiceAccount", "name": "sa"}],
        },
    )
    assert missing.status_code == 422 and "subjects[0].namespace: Required value" in missing.json()["message"]
    created = await client.post(
        f"{RBAC}/clusterrolebindings",
        json={
            "metadata": {"name": "crb-ok:with-colons"},
            "roleRef": ref,
            "subjects": [{"kind": "Group", "name": "g"}],
        },
    )
    assert created.status_code == 201, "RBAC names are path segments, colons allowed"
    changed = created.json()
    changed["roleRef"] = {**ref, "name": "other"}
    refused = await client.put(f"{RBAC}/clusterrolebindings/crb-ok:with-colons", json=changed)
    assert refused.status_code == 422 and "roleRef: Invalid value" in refused.json()["message"]
    assert "cannot change roleRef" in refused.json()["message"]


def deployment(**spec: Any) -> dict[str, Any]:
    template = {"metadata": {"labels": {"app": "k"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    return {
        "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "k"}}, "template": template, **spec},
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"selector": None}, "spec.selector: Required value"),
        ({"selector": {}}, "spec.selector: Invalid value: {}: empty selector is invalid for deployment"),
        ({"selector": {"matchLabels": {"app": "other"}}}, "`selector` does not match template `labels`"),
        (
            {"template": {"metadata": {"labels": {"app": "k"}}, "spec": {}}},
            "spec.template.spec.containers: Required value",
        ),
        (
            {"template": {"metadata": {"labels": {"app": "k"}}, "spec": {"containers": [{"name": "c"}]}}},
            "spec.template.spec.containers[0].image: Required value",
        ),
        ({"replicas": -1}, "spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
    ],
)
async def test_deployments_are_validated_minimally(
    client: httpx.AsyncClient, namespace: str, change: dict[str, Any], message: str
) -> None:
    body = deployment()
    body["spec"].update({k: v for k, v in change.items() if v is not None})
    for key in [k for k, v in change.items() if v is None]:
        del body["spec"][key]
    response = await client.post(f"/apis/apps/v1/namespaces/{namespace}/deployments", json=body)
    assert response.status_code == 422
    assert message in response.json()["message"]


async def test_deployment_selector_is_immutable_and_nothing_runs(
    client: httpx.AsyncClient, namespace: str
) -> None:
    url = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    created = (await client.post(url, json=deployment())).json()
    assert "status" not in created, "stored, never run"
    changed = deployment(selector={"matchLabels": {"app": "k", "tier": "x"}})
    changed["spec"]["template"]["metadata"]["labels"]["tier"] = "x"
    changed["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    refused = await client.put(f"{url}/d", json=changed)
    assert refused.status_code == 422 and "spec.selector: Invalid value" in refused.json()["message"]


async def test_services_and_pdbs_are_validated(client: httpx.AsyncClient, namespace: str) -> None:
    services = f"/api/v1/namespaces/{namespace}/services"
    no_ports = await client.post(services, json={"metadata": {"name": "s"}, "spec": {}})
    assert no_ports.status_code == 422 and "spec.ports: Required value" in no_ports.json()["message"]
    bad_name = await client.post(
        services, json={"metadata": {"name": "1abc"}, "spec": {"ports": [{"port": 80}]}}
    )
    assert bad_name.status_code == 422 and "a DNS-1035 label must consist of" in bad_name.json()["message"]
    bad_port = await client.post(
        services, json={"metadata": {"name": "s"}, "spec": {"ports": [{"port": 70000}]}}
    )
    assert (
        "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
        in bad_port.json()["message"]
    )
    pdbs = f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets"
    both = await client.post(
        pdbs, json={"metadata": {"name": "p"}, "spec": {"minAvailable": 1, "maxUnavailable": 1}}
    )
    assert (
        both.status_code == 422
        and "minAvailable and maxUnavailable cannot be both set" in both.json()["message"]
    )


async def test_discovery_lists_the_deployment_kinds_and_the_create_only_reviews(
    client: httpx.AsyncClient,
) -> None:
    async def names(path: str) -> dict[str, list[str]]:
        return {r["name"]: r["verbs"] for r in (await client.get(path)).json()["resources"]}

    core = await names("/api/v1")
    assert {"serviceaccounts", "services"} <= set(core) and core["serviceaccounts/token"] == ["create"]
    assert {"roles", "clusterroles", "rolebindings", "clusterrolebindings"} <= set(await names(RBAC))
    assert "deployments" in await names("/apis/apps/v1")
    assert "poddisruptionbudgets" in await names("/apis/policy/v1")
    reviews = await names("/apis/authorization.k8s.io/v1")
    assert reviews["selfsubjectaccessreviews"] == ["create"] and reviews["subjectaccessreviews"] == ["create"]
    assert (await names("/apis/authentication.k8s.io/v1"))["tokenreviews"] == ["create"]
