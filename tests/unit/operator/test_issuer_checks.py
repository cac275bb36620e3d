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


def tcs_checks(check: Any) -> IssuerChecks[object]:
    """TCS issuer checks that never recheck on their own, writing to a scripted API."""
    api = ScriptedApi({"ext": ISSUER})
    return IssuerChecks(
        check,
        writer=StatusWriter(api, Events(api)),  # type: ignore[arg-type]
        resources=(TCS_ISSUERS, TCS_CLUSTER_ISSUERS),
        recheck_ready=3600,
        recheck_failed=3600,
        leadership=leading(),
        annotations=(RENEW,),
    )


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

    checks = tcs_checks(check)

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


async def test_issuers_read_at_start_are_known_before_their_first_check_ends() -> None:
    """A request met right after a start waits quietly for its issuer's first check; only an issuer the
    API does not have is said to be missing."""
    release = asyncio.Event()

    async def check(ref: IssuerRef, body: Mapping[str, Any], leading: bool) -> Verdict[object]:
        await release.wait()  # the first check is still under way
        return Verdict(None, "NotReady", "not yet")

    class Listing:
        def __init__(self) -> None:
            self.listed: list[tuple[str, str | None]] = []

        async def list(self, resource: Any, namespace: str | None = None) -> list[dict[str, Any]]:
            self.listed.append((resource.kind, namespace))
            if resource is TCS_ISSUERS and namespace == "apps":
                return [{k: v for k, v in copy.deepcopy(ISSUER).items() if k not in ("apiVersion", "kind")}]
            return []

    checks = tcs_checks(check)
    listing = Listing()
    try:
        await checks.read_all(listing, ("apps", "web"))  # type: ignore[arg-type]
        assert listing.listed == [("TCSIssuer", "apps"), ("TCSIssuer", "web"), ("TCSClusterIssuer", None)]
        assert checks.describe(IssuerRef("tcs.intel.com", "TCSIssuer", "ext", "apps")) is None
        missing = checks.describe(IssuerRef("tcs.intel.com", "TCSIssuer", "gone", "apps"))
        assert missing is not None and "not found" in missing
    finally:
        release.set()
        checks.close()
