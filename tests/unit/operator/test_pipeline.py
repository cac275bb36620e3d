"""The token-backed signing pipeline's waiting rules, against a scripted API instead of a cluster."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from keyward.kube.resources import TCS_GROUP
from keyward.operator.requests import CertificateRequests
from keyward.operator.settings import Settings
from keyward.operator.status import Events, StatusWriter
from keyward.operator.tcs.cas import ReadyCas
from keyward.operator.tcs.pipeline import SigningPipeline
from keyward.operator.tcs.token import TokenProvider

from .fakes import ScriptedApi, request_attestations

BODY: dict[str, Any] = {
    "apiVersion": "cert-manager.io/v1",
    "kind": "CertificateRequest",
    "metadata": {"name": "req", "namespace": "apps", "uid": "u-1", "resourceVersion": "10"},
    "spec": {"request": "", "issuerRef": {"group": "tcs.intel.com", "kind": "TCSIssuer", "name": "absent"}},
    "status": {"conditions": [{"type": "Approved", "status": "True", "reason": "test", "message": "ok"}]},
}


async def test_waiting_for_a_missing_issuer_is_pending_once_and_never_fails() -> None:
    api = ScriptedApi({"req": BODY})
    writer = StatusWriter(api, Events(api))  # type: ignore[arg-type]
    pipeline = SigningPipeline(
        CertificateRequests(TCS_GROUP),
        cas=ReadyCas(),
        tokens=TokenProvider(Settings()),
        writer=writer,
        describe=lambda ref: f"{ref} not found; waiting for it to exist",
        attestations=request_attestations(api, writer),
        recheck=lambda ref: None,
    )
    await pipeline.on_event("ADDED", copy.deepcopy(BODY))
    assert len(api.patches) == 1
    (ready,) = [c for c in api.patches[0]["status"]["conditions"] if c["type"] == "Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "Pending")
    assert "TCSIssuer apps/absent not found" in ready["message"]
    assert api.patches[0]["metadata"]["resourceVersion"] == "10", "written with the precondition"

    written = copy.deepcopy(api.objects["req"])
    for _ in range(50):  # duplicate events, retries, and wake-ups for the wrong issuer
        await pipeline.on_event("MODIFIED", written)
        pipeline.wake("tcsissuer.tcs.intel.com/apps.absent")
        await asyncio.sleep(0)  # let the woken retry run
    assert len(api.patches) == 1, "an unchanged Pending message is not written again"
    assert not any("failureTime" in p["status"] for p in api.patches)
    assert "u-1" in pipeline.waiting
    await pipeline.on_event("DELETED", written)  # forgets the request and its retry timer
    assert "u-1" not in pipeline.waiting
