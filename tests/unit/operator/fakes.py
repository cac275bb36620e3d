"""A scriptable stand-in for the API client: answers status patches like kube-apiserver (a new
resourceVersion each time, 409 on a stale one) and fails the calls a test asks it to fail."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from keyward.kube.client import ApiError
from keyward.kube.resources import Resource
from keyward.operator.status import StatusWriter
from keyward.operator.tcs.attestations import RequestAttestations


class ScriptedApi:
    def __init__(self, objects: Mapping[str, dict[str, Any]] | None = None) -> None:
        #: name → object, as stored
        self.objects: dict[str, dict[str, Any]] = {k: copy.deepcopy(v) for k, v in (objects or {}).items()}
        self.patches: list[dict[str, Any]] = []
        self.created: list[dict[str, Any]] = []
        self.gets = 0
        #: failures to answer, in order, before calls succeed again
        self.failures: list[ApiError] = []

    def fail(self, *errors: ApiError) -> None:
        self.failures.extend(errors)

    def _maybe_fail(self) -> None:
        if self.failures:
            raise self.failures.pop(0)

    async def patch(
        self,
        resource: Resource,
        name: str,
        patch: dict[str, Any],
        namespace: str | None = None,
        subresource: str = "",
    ) -> dict[str, Any]:
        self._maybe_fail()
        current = self.objects.get(name)
        if current is None:
            raise ApiError(404, "NotFound", f"{name} not found")
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        self.patches.append(copy.deepcopy(patch))
        current["status"] = {**(current.get("status") or {}), **patch["status"]}
        self.bump(name)
        return copy.deepcopy(current)

    def bump(self, name: str) -> None:
        """Someone else wrote the object: a new resourceVersion."""
        meta = self.objects[name]["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)

    async def find(
        self, resource: Resource, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        self._maybe_fail()
        self.gets += 1
        found = self.objects.get(name)
        return copy.deepcopy(found) if found is not None else None

    async def create(
        self, resource: Resource, obj: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        self._maybe_fail()
        self.created.append({"resource": resource, "namespace": namespace, **copy.deepcopy(dict(obj))})
        return dict(obj)


def request_attestations(api: ScriptedApi, writer: StatusWriter) -> RequestAttestations:
    """The request attestations a signing pipeline needs, on the scripted API."""
    return RequestAttestations(
        kube=api,  # type: ignore[arg-type]
        writer=writer,
        timeout=600,
        operator_namespace="keyward-system",
        service_id="test",
    )
