"""The one status writer: the resourceVersion precondition, and failed writes retried, never dropped."""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import pytest

from keyward.kube.client import ApiError
from keyward.kube.resources import CERTIFICATE_REQUESTS, CSRS, EVENTS
from keyward.operator.status import CLUSTER_EVENTS_NAMESPACE, Events, StatusWriter, WritePolicy

from .fakes import ScriptedApi

FAST = WritePolicy(first=0.001, limit=0.01, refused=0.02, retry_after_limit=0.05)
REQUEST: dict[str, Any] = {
    "apiVersion": "cert-manager.io/v1",
    "kind": "CertificateRequest",
    "metadata": {"name": "req", "namespace": "apps", "uid": "u-1", "resourceVersion": "10"},
    "status": {},
}


def writer(api: ScriptedApi, policy: WritePolicy = FAST) -> StatusWriter:
    return StatusWriter(api, Events(api, policy=policy), policy=policy)  # type: ignore[arg-type]


async def test_a_write_carries_the_resource_version_and_a_conflict_drops_the_decision() -> None:
    api = ScriptedApi({"req": REQUEST})
    status = writer(api)
    written = await status.write(CERTIFICATE_REQUESTS, REQUEST, {"certificate": "Y2VydA=="})
    assert written is not None and written["metadata"]["resourceVersion"] == "11"
    assert api.patches[0]["metadata"] == {"resourceVersion": "10"}
    assert await status.write(CERTIFICATE_REQUESTS, REQUEST, {"certificate": "b3RoZXI="}) is None, (
        "a decision made on version 10 is not written over version 11"
    )
    assert len(api.patches) == 1


@pytest.mark.parametrize(
    "error",
    [
        ApiError(
            500, "InternalError", 'failed calling webhook "webhook.cert-manager.io": connection refused'
        ),
        ApiError(429, "TooManyRequests", "throttled", retry_after=0.01),
        ApiError(429, "TooManyRequests", "throttled"),
        ApiError(503, "ServiceUnavailable", "the server is shutting down"),
        ApiError(0, "Unreachable", "ConnectError: connection refused"),
        ApiError(0, "Unreachable", "ReadTimeout: timed out"),
    ],
    ids=["500 webhook", "429 Retry-After", "429", "503", "unreachable", "timeout"],
)
async def test_a_failed_write_is_retried_until_it_lands(
    error: ApiError, caplog: pytest.LogCaptureFixture
) -> None:
    api = ScriptedApi({"req": REQUEST})
    api.fail(error, error, error)
    written = await writer(api).write(CERTIFICATE_REQUESTS, REQUEST, {"certificate": "Y2VydA=="})
    assert written is not None and written["status"]["certificate"] == "Y2VydA=="
    assert api.failures == [] and len(api.patches) == 1
    assert any("retrying" in m for m in caplog.messages)


async def test_retry_after_is_honoured() -> None:
    api = ScriptedApi({"req": REQUEST})
    api.fail(ApiError(429, "TooManyRequests", "throttled", retry_after=0.2))
    policy = WritePolicy(first=0.001, limit=0.01, retry_after_limit=1.0)
    started = asyncio.get_running_loop().time()
    await writer(api, policy).write(CERTIFICATE_REQUESTS, REQUEST, {"x": 1})
    assert asyncio.get_running_loop().time() - started >= 0.2


async def test_a_forbidden_write_is_reported_as_a_configuration_problem_and_retried_slowly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    api = ScriptedApi({"req": REQUEST})
    message = (
        'certificatesigningrequests.certificates.k8s.io "req" is forbidden: user not permitted to sign '
        'requests with signerName "tcsissuer.tcs.intel.com/apps.ca"'
    )
    api.fail(ApiError(403, "Forbidden", message))
    status = writer(api)
    written = await status.write(CERTIFICATE_REQUESTS, REQUEST, {"x": 1})
    await status.events.drain()
    assert written is not None, "retried after the refusal: a fixed ClusterRole heals it without a restart"
    (logged,) = [m for m in caplog.messages if "refused" in m]
    assert "user not permitted to sign" in logged and "admission check" in logged
    (event,) = [c for c in api.created if c["reason"] == "WriteForbidden"]
    assert event["type"] == "Warning" and event["involvedObject"]["name"] == "req"


async def test_an_rbac_denial_names_the_permission_the_operator_lacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    api = ScriptedApi({"req": REQUEST})
    denial = ApiError(
        403,
        "Forbidden",
        'certificaterequests.cert-manager.io "req" is forbidden: User "system:serviceaccount:k:keyward" '
        'cannot patch resource "certificaterequests/status" in API group "cert-manager.io"',
    )
    denial.permission = CERTIFICATE_REQUESTS.permission("patch", "status")  # as Kube sets it
    api.fail(denial)
    status = writer(api)
    assert await status.write(CERTIFICATE_REQUESTS, REQUEST, {"x": 1}) is not None
    await status.events.drain()
    wanted = (
        'the operator lacks the permission patch on certificaterequests/status in API group "cert-manager.io"'
    )
    assert any(wanted in m for m in caplog.messages)
    (event,) = [c for c in api.created if c["reason"] == "WriteForbidden"]
    assert wanted in event["message"]


async def test_a_refused_event_is_dropped_and_logged_once_as_a_configuration_problem(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    api = ScriptedApi()
    denial = ApiError(403, "Forbidden", 'User "u" cannot create resource "events" in API group ""')
    denial.permission = EVENTS.permission("create")
    api.fail(denial, denial)
    events = Events(api, policy=FAST)  # type: ignore[arg-type]
    events.post(REQUEST, "Issued", "certificate issued")
    await events.drain()
    events.post(REQUEST, "Issued", "certificate issued")
    await events.drain()
    assert api.created == [] and api.failures == [], "each refused Event is tried once and dropped"
    (logged,) = [m for m in caplog.messages if "refused" in m]
    assert 'lacks the permission create on events in API group ""' in logged


async def test_a_transient_event_failure_is_tried_again() -> None:
    api = ScriptedApi()
    api.fail(
        ApiError(500, "InternalError", "etcd leader changed"),
        ApiError(429, "TooManyRequests", "throttled", retry_after=0.01),
        ApiError(0, "Unreachable", "no answer within 30 s"),
    )
    events = Events(api, policy=FAST)  # type: ignore[arg-type]
    events.post(REQUEST, "Issued", "certificate issued")
    await events.drain()
    assert [c["reason"] for c in api.created] == ["Issued"]


async def test_finish_writes_the_same_result_to_a_newer_version_that_still_wants_it() -> None:
    api = ScriptedApi({"req": REQUEST})
    api.bump("req")  # cert-manager wrote the request after we read it
    made: list[str] = []

    def status_for(current: Any) -> dict[str, Any]:
        made.append(current["metadata"]["resourceVersion"])
        return {"certificate": "Y2VydA=="}

    written = await writer(api).finish(CERTIFICATE_REQUESTS, REQUEST, status_for, wanted=lambda body: True)
    assert written is not None and made == ["10", "11"], "the certificate goes to the newer version"
    assert api.patches[-1]["metadata"] == {"resourceVersion": "11"}


async def test_finish_gives_up_when_the_request_no_longer_wants_the_result() -> None:
    api = ScriptedApi({"req": copy.deepcopy(REQUEST)})
    api.objects["req"]["status"] = {"certificate": "b3RoZXI="}  # finished meanwhile
    api.bump("req")
    written = await writer(api).finish(
        CERTIFICATE_REQUESTS,
        REQUEST,
        lambda current: {"certificate": "Y2VydA=="},
        wanted=lambda body: not (body.get("status") or {}).get("certificate"),
    )
    assert written is None and api.patches == []


async def test_events_about_cluster_scoped_objects_have_no_namespace_and_live_in_default() -> None:
    api = ScriptedApi()
    events = Events(api)  # type: ignore[arg-type]
    csr = {"apiVersion": "certificates.k8s.io/v1", "kind": CSRS.kind, "metadata": {"name": "c", "uid": "u"}}
    events.post(csr, "Issued", "certificate issued")
    events.post(REQUEST, "Issued", "certificate issued", warning=True)
    await events.drain()
    cluster, namespaced = api.created
    assert cluster["metadata"]["namespace"] == CLUSTER_EVENTS_NAMESPACE
    assert "namespace" not in cluster["involvedObject"]
    assert (namespaced["metadata"]["namespace"], namespaced["involvedObject"]["namespace"]) == (
        "apps",
        "apps",
    )
    assert (namespaced["type"], cluster["type"]) == ("Warning", "Normal")
    assert cluster["source"]["component"] == "keyward"


async def test_a_background_write_holds_up_nothing_and_stops_with_the_writer() -> None:
    api = ScriptedApi({"req": REQUEST})
    api.fail(*[ApiError(403, "Forbidden", "cannot patch quoteattestations/status")] * 1000)
    status = writer(api)
    status.write_soon(CERTIFICATE_REQUESTS, REQUEST, {"conditions": []})  # returns at once
    await asyncio.sleep(0.1)  # the behaviour under test: nothing lands while it is refused
    assert not api.patches, "still refused, and retried in the background"
    status.close()
    await asyncio.sleep(0.05)  # a retry already timed would run now
    api.failures.clear()
    await asyncio.sleep(0.1)  # the behaviour under test: nothing is written after close
    assert not api.patches, "stopped: nothing written after close"
