"""Watch-fed in-memory indices of issuers: existence and Ready state, without a GET per request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from keyward.issuers import conditions
from keyward.issuers.signer_names import TCS_GROUP, IssuerRef
from keyward.kube.resources import TCS_CLUSTER_ISSUERS, TCS_ISSUERS
from keyward.operator.registry import registry


def _state(body: Mapping[str, Any]) -> dict[str, Any]:
    ready = conditions.find((body.get("status") or {}).get("conditions"), "Ready") or {}
    return {
        "status": ready.get("status", "Unknown"),
        "reason": ready.get("reason", ""),
        "message": ready.get("message", ""),
    }


@kopf.index(TCS_ISSUERS.group, TCS_ISSUERS.version, TCS_ISSUERS.plural, registry=registry)
def tcsissuer_states(body: Any, name: str, namespace: str, **_: Any) -> dict[str, Any]:
    return {IssuerRef(TCS_GROUP, "TCSIssuer", name, namespace).signer_name: _state(body)}


@kopf.index(
    TCS_CLUSTER_ISSUERS.group, TCS_CLUSTER_ISSUERS.version, TCS_CLUSTER_ISSUERS.plural, registry=registry
)
def tcsclusterissuer_states(body: Any, name: str, **_: Any) -> dict[str, Any]:
    return {IssuerRef(TCS_GROUP, "TCSClusterIssuer", name).signer_name: _state(body)}


class IssuerStates:
    """Looks issuers up in the kopf indices handed to the request handlers."""

    def __init__(self) -> None:
        self.indices: list[Any] = []

    def bind(self, *indices: Any) -> None:
        self.indices = list(indices)

    def __call__(self, ref: IssuerRef) -> Mapping[str, Any] | None:
        for index in self.indices:
            store = index.get(ref.signer_name)
            if store:
                for value in store:
                    return dict(value)
        return None
