"""Discovery documents (/version, /api, /apis, per-group and per-version lists) and a minimal OpenAPI v3.

Discovery is what lets kubectl, kopf and kr8s turn ``csr`` or ``widgets`` into URLs and learn which
resources have a status subresource. Only the legacy (unaggregated) format is served; clients that
ask for aggregated discovery fall back to it, as they do with older servers.

The OpenAPI v3 documents are skeletons: one PATCH operation per resource that declares the
``fieldValidation`` query parameter. That is what kubectl 1.27+ looks for before it lets the server
validate fields (``?fieldValidation=Strict``) instead of downloading full schemas; ``/openapi/v2`` is
404, which kubectl tolerates for everything else it does.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from keyward.sandbox.apiserver.resources import Registry, View

KUBE_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T00:00:00Z",
    "goVersion": "go1.23.4",
    "compiler": "gc",
    "platform": "linux/amd64",
}
SUBRESOURCE_VERBS = ("get", "patch", "update")
ACTION_SUBRESOURCES = {"token": ("create",)}  # subresources that are actions, not views of the object


def api_versions(address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    }


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": listed, "preferredVersion": listed[0]}


def api_group_list(registry: Registry) -> dict[str, Any]:
    groups = [_group(name, versions) for name, versions in sorted(registry.groups().items()) if name]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Registry, name: str) -> dict[str, Any] | None:
    versions = registry.groups().get(name)
    if not versions or not name:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    views = sorted(registry.in_group_version(group, version), key=lambda v: v.resource.plural)
    if not views:
        return None
    resources: list[dict[str, Any]] = []
    for view in views:
        resource = view.resource
        entry: dict[str, Any] = {
            "name": resource.plural,
            "singularName": resource.singular,
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": list(resource.verbs),
            "storageVersionHash": hashlib.sha256(f"{group}/{resource.plural}".encode()).hexdigest()[:12],
        }
        if resource.short_names:
            entry["shortNames"] = list(resource.short_names)
        if resource.categories:
            entry["categories"] = list(resource.categories)
        resources.append(entry)
        for sub in sorted(view.spec.subresources):
            sub_entry: dict[str, Any] = {
                "name": f"{resource.plural}/{sub}",
                "singularName": "",
                "namespaced": resource.namespaced,
                "kind": resource.kind,
                "verbs": list(ACTION_SUBRESOURCES.get(sub, SUBRESOURCE_VERBS)),
            }
            if sub == "token":
                sub_entry.update(group="authentication.k8s.io", version="v1", kind="TokenRequest")
            resources.append(sub_entry)
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _openapi_document(views: list[View]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for view in sorted(views, key=lambda v: v.resource.plural):
        resource = view.resource
        scope = "namespaces/{namespace}/" if resource.namespaced else ""
        path = f"/{_gv_path(resource.group, view.version)}/{scope}{resource.plural}/{{name}}"
        paths[path] = {
            "patch": {
                "x-kubernetes-group-version-kind": {
                    "group": resource.group,
                    "version": view.version,
                    "kind": resource.kind,
                },
                "parameters": [
                    {
                        "name": "fieldValidation",
                        "in": "query",
                        "schema": {"type": "string"},
                        "uniqueItems": True,
                    }
                ],
                "responses": {"200": {"description": "OK"}},
            }
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBE_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": {}},
    }


def openapi_v3_index(registry: Registry) -> dict[str, Any]:
    """The v3 root: one entry per group/version, with a content hash so kubectl's cache stays right."""
    paths: dict[str, Any] = {}
    for group, versions in registry.groups().items():
        for version in versions:
            body = json.dumps(_openapi_document(registry.in_group_version(group, version)), sort_keys=True)
            digest = hashlib.sha512(body.encode()).hexdigest()[:64].upper()
            path = _gv_path(group, version)
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}


def openapi_v3_document(registry: Registry, path: str) -> dict[str, Any] | None:
    parts = path.strip("/").split("/")
    if parts[:1] == ["api"] and len(parts) == 2:
        group, version = "", parts[1]
    elif parts[:1] == ["apis"] and len(parts) == 3:
        group, version = parts[1], parts[2]
    else:
        return None
    views = registry.in_group_version(group, version)
    return _openapi_document(views) if views else None
