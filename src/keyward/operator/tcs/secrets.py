"""The Secret of a token-backed issuer: its CA certificate, never a private key."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from keyward.kube.client import ApiError, Kube
from keyward.kube.objects import owner_reference
from keyward.kube.resources import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    SECRETS,
    SIGNER_ANNOTATION,
    TCS_SEED_FINALIZER,
    TLS_SECRET_TYPE,
)


def ca_secret(
    name: str,
    namespace: str,
    ca_pem: bytes,
    *,
    signer_name: str,
    labels: Mapping[str, str],
    owner: Mapping[str, Any],
) -> dict[str, Any]:
    """A kubernetes.io/tls Secret with the CA certificate and an empty tls.key (the key is in the token)."""
    encoded = base64.b64encode(ca_pem).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**labels, MANAGED_BY_LABEL: MANAGED_BY},
            "annotations": {SIGNER_ANNOTATION: signer_name},
            "ownerReferences": [owner_reference(owner)],
        },
        "type": TLS_SECRET_TYPE,
        "data": {"tls.crt": encoded, "tls.key": "", "ca.crt": encoded},
    }


def same_content(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    meta = current.get("metadata") or {}
    cur_labels = meta.get("labels") or {}
    want_labels = wanted["metadata"]["labels"]
    cur_annotations = meta.get("annotations") or {}
    return (
        current.get("type") == wanted["type"]
        and (current.get("data") or {}) == wanted["data"]
        and all(cur_labels.get(k) == v for k, v in want_labels.items())
        and all(cur_annotations.get(k) == v for k, v in wanted["metadata"]["annotations"].items())
        and TCS_SEED_FINALIZER not in (meta.get("finalizers") or [])
    )


async def put_secret(kube: Kube, wanted: dict[str, Any], *, current: Mapping[str, Any] | None = None) -> bool:
    """Create the Secret, or bring ``current`` (the existing one, read by the caller) back to ``wanted``.
    True when something was written."""
    meta = wanted["metadata"]
    if current is None:
        try:
            await kube.create(SECRETS, wanted, meta["namespace"])
            return True
        except ApiError as exc:
            if exc.status != 409:
                raise
        current = await kube.get(SECRETS, meta["name"], meta["namespace"])
    if same_content(current, wanted):
        return False
    kept = current["metadata"]
    replacement = {
        **wanted,
        "metadata": {
            **kept,
            **meta,
            "labels": {**(kept.get("labels") or {}), **meta["labels"]},
            "annotations": {**(kept.get("annotations") or {}), **meta["annotations"]},
            # keyward's own Secret now: the TCS seed's finalizer, if it made the Secret, goes
            "finalizers": [f for f in kept.get("finalizers") or [] if f != TCS_SEED_FINALIZER],
        },
    }
    await kube.replace(SECRETS, replacement)
    return True
