"""The issuer checker: what makes it check an issuer again at once."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

from keyward.issuers.signer_names import IssuerRef
from keyward.kube.resources import TCS_CLUSTER_ISSUERS, TCS_ISSUERS
from keyward.operator.issuers import IssuerChecks, Verdict
from keyward.operator.leader import Leadership
from keyward.operator.status import Events, StatusWriter

from .fakes import ScriptedApi

RENEW = "keyward.io/renew-key-provisioning"
ISSUER: dict[str, Any] = {
    "apiVersion": "tcs.intel.com/v1alpha1",
    "kind": "TCSIssuer",
    "metadata": {"name": "ext", "namespace": "apps", "uid": "u-1", "generation": 1, "resourceVersion": "5"},
    "spec": {"selfSign": False},
}


def leading() -> Leadership:
    leadership = Leadership()
    leadership.lead()
    return leadership


def changed(**annotations: str) -> dict[str, Any]:
    body = copy.deepcopy(ISSUER)
    body["metadata"]["annotations"] = annotations
    return body


async def test_a_new_value_of_a_watched_annotation_checks_the_issuer_again_at_once() -> None:
    seen: list[Mapping[str, Any]] = []
    another = asyncio.Event()

    async def check(ref: IssuerRef, body: Mapping[str, Any], leading: bool) -> Verdict[object]:
        seen.append(dict(body["metadata"].get("annotations") or {}))
        another.set()
        return Verdict(None, "KeyProvisioningRefused", "the key manager refused")

    api = ScriptedApi({"ext": ISSUER})
    checks: IssuerChecks[object] = IssuerChecks(
        check,
        writer=StatusWriter(api, Events(api)),  # type: ignore[arg-type]
        resources=(TCS_ISSUERS, TCS_CLUSTER_ISSUERS),
        recheck_ready=3600,
        recheck_failed=3600,
        leadership=leading(),
        annotations=(RENEW,),
    )

    async def checked(times: int) -> None:
        while len(seen) < times:
            another.clear()
            await another.wait()

    try:
        checks.observe("ADDED", copy.deepcopy(ISSUER))
        await asyncio.wait_for(checked(1), 10)
        checks.observe("MODIFIED", changed(note="unrelated"))
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(seen) == 1, "another annotation, the same generation: no new check"
        checks.observe("MODIFIED", changed(note="unrelated", **{RENEW: "1"}))
        await asyncio.wait_for(checked(2), 10)
        assert seen[-1][RENEW] == "1"
    finally:
        checks.close()
