"""ServiceAccounts with RBAC, for tests and the sandbox's own components (the cert-manager stand-in).

``grant`` makes sure a namespace and a ServiceAccount exist, stores the given Roles/ClusterRoles (or
plain rules, as a Role and/or ClusterRole named after the account) and binds each to the account, as
an administrator would with ``kubectl apply``. The writes go straight to the cluster, as the
administrator's bootstrap; everything the account then does goes through authentication, RBAC and
admission like any client's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from keyward.sandbox.apiserver.errors import ApiError
from keyward.sandbox.apiserver.objects import Obj, clone
from keyward.sandbox.apiserver.operations import Cluster
from keyward.sandbox.apiserver.rbac import RBAC_GROUP

Manifest = dict[str, Any]
_PLURALS = {
    "Role": (RBAC_GROUP, "roles"),
    "ClusterRole": (RBAC_GROUP, "clusterroles"),
    "RoleBinding": (RBAC_GROUP, "rolebindings"),
    "ClusterRoleBinding": (RBAC_GROUP, "clusterrolebindings"),
    "ServiceAccount": ("", "serviceaccounts"),
    "Namespace": ("", "namespaces"),
}


def load_manifests(source: str | Path | Manifest | Iterable[Manifest]) -> list[Manifest]:
    """Manifests from a dict, a list of dicts, YAML text or a YAML file (multi-document)."""
    if isinstance(source, dict):
        return [source]
    if isinstance(source, Path) or (
        isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml"))
    ):
        source = Path(source).read_text()
    if isinstance(source, str):
        return [d for d in yaml.safe_load_all(source) if isinstance(d, dict)]
    return [dict(m) for m in source]


def apply(cluster: Cluster, manifest: Manifest, namespace: str = "") -> Obj:
    """Create, or replace keeping the stored resourceVersion (``kubectl apply`` as an admin)."""
    kind = str(manifest.get("kind") or "")
    if kind not in _PLURALS:
        raise ValueError(
            f"cannot apply a {kind or 'manifest without kind'}: only RBAC, ServiceAccounts, Namespaces"
        )
    group, plural = _PLURALS[kind]
    view = cluster.registry.view(group, "v1", plural)
    assert view is not None
    body = clone(manifest)
    metadata = body.setdefault("metadata", {})
    if view.resource.namespaced:
        namespace = str(metadata.get("namespace") or namespace)
        metadata["namespace"] = namespace
    else:
        namespace = ""
    existing = cluster.store.get(view.resource.storage_key, namespace, str(metadata.get("name")))
    if existing is None:
        return cluster.create(view, namespace, body).obj
    metadata["resourceVersion"] = existing["metadata"]["resourceVersion"]
    try:
        return cluster.replace(view, namespace, str(metadata["name"]), body).obj
    except ApiError as exc:
        raise ValueError(f"cannot update {kind} {metadata.get('name')}: {exc.message}") from exc


def grant(
    cluster: Cluster,
    namespace: str,
    name: str,
    *,
    rules: Sequence[Manifest] = (),
    cluster_rules: Sequence[Manifest] = (),
    roles: str | Path | Manifest | Iterable[Manifest] = (),
) -> None:
    """The namespace and ServiceAccount, then each role bound to ``system:serviceaccount:NS:NAME``."""
    if cluster.store.get(("", "namespaces"), "", namespace) is None:
        apply(cluster, {"kind": "Namespace", "metadata": {"name": namespace}})
    if cluster.store.get(("", "serviceaccounts"), namespace, name) is None:
        apply(cluster, {"kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}})
    manifests = load_manifests(roles) if roles else []
    if rules:
        manifests.append(
            {"kind": "Role", "metadata": {"name": name, "namespace": namespace}, "rules": list(rules)}
        )
    if cluster_rules:
        manifests.append(
            {"kind": "ClusterRole", "metadata": {"name": f"{namespace}:{name}"}, "rules": list(cluster_rules)}
        )
    subject = {"kind": "ServiceAccount", "name": name, "namespace": namespace}
    for manifest in manifests:
        stored = apply(cluster, manifest, namespace)
        kind = manifest.get("kind")
        if kind not in ("Role", "ClusterRole"):
            continue
        role_name = stored["metadata"]["name"]
        ref = {"apiGroup": RBAC_GROUP, "kind": kind, "name": role_name}
        if kind == "Role":
            binding = {
                "kind": "RoleBinding",
                "metadata": {"name": f"{role_name}:{name}", "namespace": stored["metadata"]["namespace"]},
                "roleRef": ref,
                "subjects": [subject],
            }
        else:
            binding = {
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"{role_name}:{namespace}:{name}"},
                "roleRef": ref,
                "subjects": [subject],
            }
        apply(cluster, binding)
