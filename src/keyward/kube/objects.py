"""Small readers and builders of Kubernetes objects as the API returns them (plain dicts)."""

from __future__ import annotations

import base64
import binascii
import copy
from collections.abc import Mapping
from typing import Any

Body = dict[str, Any]


def decode_bytes(value: Any) -> bytes | None:
    """A Kubernetes ``[]byte`` field (Secret data, CSR spec.request, status.certificate) as JSON carries
    it, base64; None when it is absent, not a string or not strict base64."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def name_of(body: Mapping[str, Any]) -> str:
    """``namespace/name``, or ``name`` for a cluster-scoped object: how log lines name an object."""
    meta = body.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name')}" if namespace else str(meta.get("name"))


def plain(body: Mapping[str, Any]) -> Body:
    """A deep, mutable copy of an object (kopf hands out read-only views)."""
    return copy.deepcopy(dict(body))


def owner_reference(owner: Mapping[str, Any], *, controller: bool = True) -> Body:
    """An ownerReference to ``owner``: the garbage collector deletes the dependent with it. Without
    ``blockOwnerDeletion``, which would need update on the owner's finalizers where kube-apiserver's
    OwnerReferencesPermissionEnforcement plugin is on, and only matters for foreground deletion."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
    }


def owned_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    """Whether ``obj`` carries an ownerReference to this very ``owner`` object (its uid and kind): made for
    it by keyward, or by a system keyward took over from."""
    uid = (owner.get("metadata") or {}).get("uid")
    references = (obj.get("metadata") or {}).get("ownerReferences") or []
    return bool(uid) and any(
        ref.get("uid") == uid and ref.get("kind") == owner.get("kind") for ref in references
    )


def identity(body: Mapping[str, Any]) -> Body:
    """The least of an object that names it (apiVersion, kind, name, namespace, uid): what is kept to
    post Events about it later."""
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {key: meta[key] for key in ("name", "namespace", "uid") if meta.get(key)},
    }


def object_reference(body: Mapping[str, Any]) -> Body:
    """An ObjectReference to ``body`` (an Event's involvedObject): no namespace for a cluster-scoped
    object, as kube-apiserver requires for ``kubectl describe`` to find its Events."""
    meta = body.get("metadata") or {}
    reference: Body = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind")}
    for key in ("name", "namespace", "uid", "resourceVersion"):
        if meta.get(key):
            reference[key] = meta[key]
    return reference
