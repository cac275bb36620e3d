"""The RBAC keyward ships, as the sandbox grants it to the operator's ServiceAccount.

The one-file install (``deploy/keyward.yaml``, the Helm chart rendered with its defaults; a wheel
carries it at ``keyward/_data/keyward.yaml``) holds the operator's ClusterRole and its leader-election
Role. The sandbox runs the operator as ServiceAccount ``<operator namespace>/keyward`` bound to exactly
those, so every run — the demo, the integration tests — proves the shipped role is enough.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from keyward.errors import UserError

SERVICE_ACCOUNT = "keyward"
_PACKAGE = Path(__file__).resolve().parents[1]
_SOURCE = _PACKAGE.parents[1] / "deploy" / "keyward.yaml"
_PACKAGED = _PACKAGE / "_data" / "keyward.yaml"


def manifest_path() -> Path:
    for candidate in (_SOURCE, _PACKAGED):
        if candidate.is_file():
            return candidate
    raise UserError(
        f"keyward's install manifest is missing (looked in {_SOURCE} and {_PACKAGED})",
        "run keyward from a complete checkout, or reinstall the keyward package",
    )


def operator_roles(namespace: str) -> list[dict[str, Any]]:
    """The operator's ClusterRole and Role from the shipped manifest, the Role moved to ``namespace``."""
    documents = [d for d in yaml.safe_load_all(manifest_path().read_text()) if isinstance(d, dict)]
    bound = {
        (subject_doc["roleRef"]["kind"], subject_doc["roleRef"]["name"])
        for subject_doc in documents
        if subject_doc.get("kind") in ("ClusterRoleBinding", "RoleBinding")
        and any(s.get("name") == SERVICE_ACCOUNT for s in subject_doc.get("subjects") or [])
    }
    roles = []
    for document in documents:
        if (document.get("kind"), document["metadata"]["name"]) not in bound:
            continue
        role = copy.deepcopy(document)
        if role["kind"] == "Role":
            role["metadata"]["namespace"] = namespace
        roles.append(role)
    if not any(role["kind"] == "ClusterRole" for role in roles):
        raise UserError(f"{manifest_path()} binds no ClusterRole to the operator", "run `make manifests`")
    return roles


def rules_of(roles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rule of ``roles`` (for comparing with what the operator used)."""
    return [rule for role in roles for rule in role.get("rules") or []]
