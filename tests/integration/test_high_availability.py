"""Two replicas with ``--leader-elect``: one leads through a Lease, the other takes over when it goes.

With a shared token (a network HSM, or SoftHSM2 on a ReadWriteMany volume) failover is seamless; with a
token per pod (SGX enclaves) a replica that lacks the issuer's key reports it and never mints a second CA.
Whatever happens to the replicas, every request is issued exactly once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keyward.keystore.softhsm import create_softhsm_store
from keyward.kube.client import Kube
from keyward.kube.resources import LEASES
from keyward.operator.leader import LEASE_NAME
from keyward.sandbox.operator_process import OperatorProcess
from tests.integration.conftest import OPERATOR_NAMESPACE, OperatorRunner
from tests.integration.helpers import ca_from_secret, create_issuer, ready_condition, wait_ready
from tests.integration.requests_helpers import CertificatesSeen, approved_requests, wait_all_issued
from tests.support.waiting import wait_for

LEASE_SECONDS = "3"  # short leases keep failover quick here; the default is client-go's 15 s


@pytest.fixture
async def replicas(
    operators: OperatorRunner, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[OperatorRunner]:
    monkeypatch.setenv("KEYWARD_LEASE_DURATION", LEASE_SECONDS)
    try:
        yield operators
    finally:
        await operators.stop_all()


async def holder(kube: Kube) -> str:
    lease = await kube.find(LEASES, LEASE_NAME, OPERATOR_NAMESPACE)
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def log_of(process: OperatorProcess) -> str:
    assert process.log_path is not None
    return process.log_path.read_text()


async def leader_among(kube: Kube, processes: list[OperatorProcess]) -> OperatorProcess:
    async def find() -> OperatorProcess | None:
        name = await holder(kube)
        for process in processes:
            if name and f"{name}: leading" in log_of(process):
                return process
        return None

    return await wait_for(find, timeout=30, what="a leading replica")


async def start(runner: OperatorRunner, namespace: str, hsm: Path | None = None) -> OperatorProcess:
    return await runner.start("--namespace", namespace, "--leader-elect", hsm_config=hsm)


async def test_a_standby_takes_over_a_shared_token_and_nothing_is_issued_twice(
    kube: Kube, replicas: OperatorRunner, namespace: str
) -> None:
    first, second = await start(replicas, namespace), await start(replicas, namespace)
    seen = CertificatesSeen(kube, namespace)
    try:
        await create_issuer(kube, "my-ca", namespace, {"secretName": "my-ca-cert"})
        await wait_ready(kube, "my-ca", namespace)
        _, ca = await ca_from_secret(kube, "my-ca-cert", namespace)
        leader = await leader_among(kube, [first, second])
        standby = second if leader is first else first
        assert ": leading" not in log_of(standby), "one leader at a time"

        names = await approved_requests(kube, namespace, "before", 5)
        await wait_all_issued(kube, namespace, names)
        await leader.kill()  # the leader's pod dies: its Lease runs out, the standby takes over
        more = await approved_requests(kube, namespace, "after", 5)
        await wait_all_issued(kube, namespace, more, timeout=90)
        assert await leader_among(kube, [standby]) is standby
        await seen.each_once(names + more)
        _, still = await ca_from_secret(kube, "my-ca-cert", namespace)
        assert still == ca, "one CA per issuer, whoever leads"

        restarted = await start(replicas, namespace)  # the old pod comes back, as a standby
        last = await approved_requests(kube, namespace, "back", 3)
        await wait_all_issued(kube, namespace, last)
        await seen.each_once(names + more + last)
        assert await leader_among(kube, [standby, restarted]) is standby
    finally:
        seen.stop()


async def test_with_a_token_per_replica_a_leader_without_the_key_never_mints_a_second_ca(
    kube: Kube, replicas: OperatorRunner, namespace: str, tmp_path: Path
) -> None:
    tokens = {}
    for name in ("a", "b"):
        create_softhsm_store(tmp_path / name)
        tokens[name] = tmp_path / name / "hsm.json"
    a = await start(replicas, namespace, tokens["a"])
    await leader_among(kube, [a])
    seen = CertificatesSeen(kube, namespace)
    try:
        await create_issuer(kube, "my-ca", namespace, {"secretName": "my-ca-cert"})
        await wait_ready(kube, "my-ca", namespace)
        secret, ca = await ca_from_secret(kube, "my-ca-cert", namespace)
        b = await start(replicas, namespace, tokens["b"])
        first = await approved_requests(kube, namespace, "a", 3)
        await wait_all_issued(kube, namespace, first)

        await a.stop()  # a graceful stop gives the Lease up: b leads at once, without the key
        assert await leader_among(kube, [b]) is b
        issuer = await wait_ready(kube, "my-ca", namespace, status="False", reason="CAKeyMissing")
        assert "key provisioning" in ready_condition(issuer)["message"]
        waiting = await approved_requests(kube, namespace, "b", 3)
        after, still = await ca_from_secret(kube, "my-ca-cert", namespace)
        assert still == ca and after["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]

        a = await start(replicas, namespace, tokens["a"])  # a comes back as a standby
        await b.stop()  # b goes: a leads again, with the key
        assert await leader_among(kube, [a]) is a
        await wait_ready(kube, "my-ca", namespace)
        await wait_all_issued(kube, namespace, waiting, timeout=60)
        await seen.each_once(first + waiting)
        _, final = await ca_from_secret(kube, "my-ca-cert", namespace)
        assert final == ca
    finally:
        seen.stop()
