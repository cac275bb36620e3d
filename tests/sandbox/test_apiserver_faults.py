"""Fault plans: the unfriendly answers of a real cluster, on demand and exactly repeatable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from keyward.sandbox.apiserver import ApiServer
from keyward.sandbox.apiserver.faults import FaultPlan, FaultSpecError

from .helpers import TEST_CRDS, WIDGETS, http_client, widget

MERGE = {"Content-Type": "application/merge-patch+json"}


def configmaps(namespace: str = "default") -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps"


async def test_the_first_n_matching_writes_fail_like_a_restarting_cert_manager_webhook() -> None:
    spec = "500@verb=patch,resource=widgets/status,first=2"
    async with ApiServer(crd_paths=[TEST_CRDS], faults=spec) as server, http_client(server) as client:
        url = WIDGETS.format(ns="default")
        assert (await client.post(url, json=widget("w"))).status_code == 201
        answers = [
            await client.patch(f"{url}/w/status", json={"status": {"phase": phase}}, headers=MERGE)
            for phase in ("Pending", "Failed", "Ready")
        ]
        assert [a.status_code for a in answers] == [500, 500, 200]
        failure = answers[0].json()
        assert failure["reason"] == "InternalError"
        assert failure["message"].startswith(
            'Internal error occurred: failed calling webhook "webhook.cert-manager.io": '
        )
        assert (
            await client.patch(f"{url}/w", json={"metadata": {"labels": {"a": "b"}}}, headers=MERGE)
        ).status_code == 200
        assert [(i.verb, i.resource, i.subresource, i.name) for i in server.faults.injected] == [
            ("patch", "widgets", "status", "w")
        ] * 2


async def test_429_every_nth_write_with_and_without_retry_after() -> None:
    spec = "429/3@verb=create,resource=configmaps,every=2;429@verb=delete"
    async with ApiServer(faults=spec) as server, http_client(server) as client:
        codes = [
            (await client.post(configmaps(), json={"metadata": {"name": f"c{i}"}})).status_code
            for i in range(4)
        ]
        assert codes == [201, 429, 201, 429]
        throttled = await client.post(configmaps(), json={"metadata": {"name": "c9"}})
        assert throttled.status_code == 201
        again = await client.post(configmaps(), json={"metadata": {"name": "c10"}})
        assert again.status_code == 429 and again.headers["Retry-After"] == "3"
        assert again.json()["details"] == {"retryAfterSeconds": 3}
        assert again.json()["message"] == "Too many requests, please try again later."
        bare = await client.delete(f"{configmaps()}/c0")
        assert bare.status_code == 429 and "Retry-After" not in bare.headers


async def test_403_for_a_chosen_user_and_resource_reads_like_an_rbac_denial() -> None:
    async with ApiServer() as server:
        token = server.service_account_token(
            "work",
            "bot",
            rules=[{"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["list"]}],
        )
        server.faults.add("403@verb=list,user=system:serviceaccount:work:bot,resource=secrets")
        async with http_client(server, token) as bot, http_client(server) as admin:
            denied = await bot.get("/api/v1/namespaces/work/secrets")
            assert denied.status_code == 403
            assert denied.json()["message"] == (
                'secrets is forbidden: User "system:serviceaccount:work:bot" cannot list resource "secrets" '
                'in API group "" in the namespace "work"'
            )
            assert (await bot.get(configmaps("work"))).status_code == 200
            assert (await admin.get("/api/v1/namespaces/work/secrets")).status_code == 200
        server.faults.clear()


async def test_422_refuses_the_chosen_write_naming_the_object() -> None:
    async with (
        ApiServer(faults="422@verb=update,resource=configmaps,first=1") as server,
        http_client(server) as client,
    ):
        created = (await client.post(configmaps(), json={"metadata": {"name": "c"}})).json()
        refused = await client.put(f"{configmaps()}/c", json=created)
        assert refused.status_code == 422
        assert refused.json()["message"] == (
            'ConfigMap "c" is invalid: metadata: Invalid value: "c": refused by the sandbox\'s fault plan'
        )
        assert (await client.put(f"{configmaps()}/c", json=created)).status_code == 200


async def test_a_delayed_answer_times_out_a_client_that_does_not_wait() -> None:
    async with ApiServer(faults="delay=2@verb=create,first=1") as server, http_client(server) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(configmaps(), json={"metadata": {"name": "late"}}, timeout=0.3)
        assert (await client.post(configmaps(), json={"metadata": {"name": "next"}})).status_code == 201


async def test_watches_are_cut_mid_stream_after_n_events() -> None:
    async with ApiServer(faults="cut-watch=2@resource=configmaps") as server, http_client(server) as client:
        for name in ("a", "b", "c"):
            await client.post(configmaps(), json={"metadata": {"name": name}})
        events = []
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("GET", configmaps(), params={"watch": "true"}) as stream:
                async for line in stream.aiter_lines():
                    events.append(json.loads(line)["object"]["metadata"]["name"])
        assert events == ["a", "b"]
        listed = await client.get(configmaps())
        assert listed.status_code == 200, "lists are not cut"


async def test_a_small_watch_window_makes_old_resource_versions_gone() -> None:
    async with ApiServer(faults="watch-window=3") as server, http_client(server) as client:
        first = (await client.post(configmaps(), json={"metadata": {"name": "c0"}})).json()
        for i in range(1, 5):
            await client.post(configmaps(), json={"metadata": {"name": f"c{i}"}})
        async with client.stream(
            "GET",
            configmaps(),
            params={"watch": "true", "resourceVersion": first["metadata"]["resourceVersion"]},
        ) as stream:
            event = json.loads(await anext(stream.aiter_lines()))
        assert (
            event["type"] == "ERROR"
            and event["object"]["code"] == 410
            and event["object"]["reason"] == "Expired"
        )
        listed = (await client.get(configmaps())).json()
        async with client.stream(
            "GET",
            configmaps(),
            params={
                "watch": "true",
                "resourceVersion": listed["metadata"]["resourceVersion"],
                "timeoutSeconds": "1",
            },
        ) as stream:
            await client.post(configmaps(), json={"metadata": {"name": "after"}})
            event = json.loads(await anext(stream.aiter_lines()))
        assert event["type"] == "ADDED" and event["object"]["metadata"]["name"] == "after"


def test_a_seeded_rate_picks_the_same_requests_every_time() -> None:
    from keyward.sandbox.apiserver.auth import ADMIN
    from keyward.sandbox.apiserver.rbac import Attributes

    write = Attributes(ADMIN, "create", True, "", "configmaps", namespace="default")

    def fired(spec: str) -> list[bool]:
        plan = FaultPlan(spec)
        return [plan.pick(write) is not None for _ in range(40)]

    run = fired("500@rate=0.3,seed=7")
    assert run == fired("500@rate=0.3,seed=7")
    assert 4 <= sum(run) <= 20
    assert run != fired("500@rate=0.3,seed=8")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("boom", "unknown effect 'boom'"),
        ("500@colour=red", "unknown filter 'colour'"),
        ("500@first", "filter 'first' must be KEY=VALUE"),
        ("500@rate=2", "rate is a share between 0 and 1"),
        ("delay=soon", "delay must be a number"),
        ("watch-window=5@verb=get", "watch-window=N takes N >= 1 and no filters"),
        ("403=1", "effect 403 takes no value"),
    ],
)
def test_fault_specs_that_do_not_parse_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(FaultSpecError, match=message):
        FaultPlan(spec)


def test_keyward_sandbox_refuses_a_bad_fault_spec_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "keyward",
            "sandbox",
            "--state-dir",
            str(tmp_path),
            "--no-operator",
            "--faults",
            "nope",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "unknown effect 'nope'" in done.stderr and "Traceback" not in done.stderr
