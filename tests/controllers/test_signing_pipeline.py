"""The signing pipeline's waiting rules, with a recording API in place of a cluster."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from keyward.kube.resources import Resource
from keyward.operator.services import Runtime
from keyward.operator.tcs.certificaterequests import CertificateRequestAdapter
from keyward.operator.tcs.pipeline import SigningPipeline


class RecordingApi:
    """Accepts status patches like the API server (new resourceVersion each time) and keeps them."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch(
        self,
        resource: Resource,
        name: str,
        patch: dict[str, Any],
        namespace: str | None = None,
        subresource: str = "",
    ) -> dict[str, Any]:
        self.patches.append(copy.deepcopy(patch))
        version = int(patch["metadata"]["resourceVersion"]) + 1
        return {
            **BODY,
            "metadata": {**BODY["metadata"], "resourceVersion": str(version)},
            "status": patch["status"],
        }


BODY: dict[str, Any] = {
    "apiVersion": "cert-manager.io/v1",
    "kind": "CertificateRequest",
    "metadata": {"name": "req", "namespace": "apps", "uid": "u-1", "resourceVersion": "10"},
    "spec": {"request": "", "issuerRef": {"group": "tcs.intel.com", "kind": "TCSIssuer", "name": "absent"}},
    "status": {"conditions": [{"type": "Approved", "status": "True", "reason": "test", "message": "ok"}]},
}


async def test_waiting_for_a_missing_issuer_is_pending_once_and_never_fails() -> None:
    api = RecordingApi()
    pipeline = SigningPipeline(Runtime(kube=api), CertificateRequestAdapter(), lambda ref: None)  # type: ignore[arg-type]
    await pipeline.on_event("ADDED", BODY)
    assert len(api.patches) == 1
    (ready,) = [c for c in api.patches[0]["status"]["conditions"] if c["type"] == "Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "Pending")
    assert "TCSIssuer apps/absent not found" in ready["message"]
    assert api.patches[0]["metadata"]["resourceVersion"] == "10", "written with the precondition"

    written = {
        **BODY,
        "metadata": {**BODY["metadata"], "resourceVersion": "11"},
        "status": api.patches[0]["status"],
    }
    for _ in range(50):  # duplicate events, retries, and kicks for the wrong issuer
        await pipeline.on_event("MODIFIED", written)
        pipeline.kick("tcsissuer.tcs.intel.com/apps.absent")
        await asyncio.sleep(0)  # let the kicked retry run
    assert len(api.patches) == 1, "an unchanged Pending message is not written again"
    assert not any("failureTime" in p["status"] for p in api.patches)
    await pipeline.on_event("DELETED", written)  # forgets the request and its retry timer
