"""Every kind of write the operator makes meets every failure a cluster gives: cert-manager's webhook
failing (500), API priority and fairness (429, without and with Retry-After), a permission missing (403),
content refused (422) and an answer that never comes (a timeout). The sandbox's fault plan fails the
first write of the kind with one, its retry with the next, and so on, for the operator's ServiceAccount
only. Each time: the operator keeps running, loses no approved request, signs nothing twice, and says
what is wrong (its log, an Event, the Ready condition, ``keyward_api_write_failures_total``).

One operator for the module (all namespaces), with short retry settings (fault_helpers.FAST_RETRIES).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from keyward.kube.client import Kube
from keyward.kube.resources import (
    CSRS,
    EST_ISSUERS,
    EVENTS,
    SECRETS,
    TCS_ISSUERS,
)
from keyward.sandbox.certmanager import approve
from keyward.sandbox.operator_process import OperatorProcess
from tests.integration.conftest import OperatorRunner
from tests.integration.est_peers import RunningEst, basic_auth_secret, serving
from tests.integration.fault_helpers import (
    API_TIMEOUT,
    FAST_RETRIES,
    OPERATOR_USER,
    Faults,
    OperatorLog,
    ReadyHistory,
    every_failure,
    fired,
    grown,
    write_failures,
)
from tests.integration.helpers import create_issuer, ready_condition, ready_issuer_ca, wait_ready
from tests.integration.requests_helpers import (
    CertificatesSeen,
    approve_csr,
    approved_requests,
    create_csr,
    create_request,
    make_csr,
    wait_all_issued,
    wait_csr_certificate,
    wait_request,
)
from tests.support.pki import Issuer, cacert
from tests.support.ports import free_port
from tests.support.waiting import wait_for


@dataclass
class Faulty:
    """The module's operator and its metrics port."""

    process: OperatorProcess
    metrics: int

    def alive(self) -> bool:
        return self.process.process is not None and self.process.process.returncode is None


@pytest.fixture(scope="module")
async def faulty(operators: OperatorRunner) -> Faulty:
    port = free_port()
    process = await operators.start("--metrics-listen", f"127.0.0.1:{port}", env=FAST_RETRIES)
    return Faulty(process, port)


@pytest.fixture
async def est_ca() -> Issuer:
    return Issuer.self_signed("Fault test EST CA")


@pytest.fixture
async def est(est_ca: Issuer) -> AsyncIterator[RunningEst]:
    async with serving(est_ca) as running:
        yield running


def picks(namespace: str | None, resource: str, verb: str = "patch") -> str:
    """Fault filters for the operator's ``verb`` of ``resource`` (in ``namespace``)."""
    where = f",namespace={namespace}" if namespace else ""
    return f"verb={verb},resource={resource},user={OPERATOR_USER}{where}"


async def events_about(kube: Kube, namespace: str, name: str) -> dict[str, list[str]]:
    """The Events about object ``name``, their messages by reason."""
    found: dict[str, list[str]] = {}
    for event in await kube.list(EVENTS, namespace):
        if event["involvedObject"].get("name") == name:
            found.setdefault(event["reason"], []).append(event["message"])
    return found


async def told_every_failure(
    faulty: Faulty, log: OperatorLog, before: dict[str, float], permission: str
) -> None:
    """The operator said what went wrong each time: log lines, and the failures counted by code."""
    text = log.text()
    assert 'failed calling webhook "webhook.cert-manager.io"' in text, "the 500"
    assert "429 TooManyRequests" in text, "the 429"
    assert f"the operator lacks the permission {permission}" in text, "the 403, naming the permission"
    assert "422 Invalid" in text and "refuses what the operator wrote" in text, "the 422"
    assert f"no answer within {API_TIMEOUT} s" in text, "the timeout"
    assert "Traceback" not in text
    counted = grown(before, await write_failures(faulty.metrics))
    assert counted.get("500", 0) >= 1 and counted.get("429", 0) >= 2, counted
    assert counted.get("403", 0) >= 1 and counted.get("422", 0) >= 1 and counted.get("0", 0) >= 1, counted
    assert faulty.alive()


async def test_a_certificate_request_status_write_outlasts_every_failure(
    kube: Kube, namespace: str, faulty: Faulty, faults: Faults
) -> None:
    await ready_issuer_ca(kube, "my-ca", namespace, {"secretName": "my-ca-cert"})
    seen = CertificatesSeen(kube, namespace)
    log, before = OperatorLog(faulty.process), await write_failures(faulty.metrics)
    rules = faults.add(every_failure(picks(namespace, "certificaterequests/status")))
    try:
        names = await approved_requests(kube, namespace, "faulty", 1)
        await wait_all_issued(kube, namespace, names, timeout=60)
        await seen.each_once(names)
    finally:
        seen.stop()
    assert fired(rules) == [1] * len(rules), "the one status write met every failure, in turn"
    await told_every_failure(
        faulty, log, before, 'patch on certificaterequests/status in API group "cert-manager.io"'
    )
    told = await wait_for(
        lambda: _events_with(kube, namespace, names[0], "WriteForbidden", "WriteRefused"),
        what="Events telling the refusals",
    )
    assert any(
        "lacks the permission patch on certificaterequests/status" in m for m in told["WriteForbidden"]
    )


async def _events_with(kube: Kube, namespace: str, name: str, *reasons: str) -> dict[str, list[str]] | None:
    found = await events_about(kube, namespace, name)
    return found if all(reason in found for reason in reasons) else None


async def test_a_csr_status_write_outlasts_every_failure(
    kube: Kube, namespace: str, faulty: Faulty, faults: Faults
) -> None:
    await ready_issuer_ca(kube, "csr-ca", namespace, {"secretName": "csr-ca-cert"})
    seen = CertificatesSeen(kube, None, resource=CSRS)
    log, before = OperatorLog(faulty.process), await write_failures(faulty.metrics)
    rules = faults.add(every_failure(picks(None, "certificatesigningrequests/status")))
    name = f"faulty-{namespace}"
    try:
        await create_csr(kube, name, make_csr("csr.example"), f"tcsissuer.tcs.intel.com/{namespace}.csr-ca")
        await approve_csr(kube, name)
        await wait_csr_certificate(kube, name, timeout=60)
        await seen.each_once([name])
    finally:
        seen.stop()
        await kube.delete(CSRS, name)
    assert fired(rules) == [1] * len(rules)
    await told_every_failure(
        faulty, log, before, 'patch on certificatesigningrequests/status in API group "certificates.k8s.io"'
    )


async def test_a_tcs_issuer_status_write_outlasts_every_failure_and_signs_only_once_ready(
    kube: Kube, namespace: str, faulty: Faulty, faults: Faults
) -> None:
    log, before = OperatorLog(faulty.process), await write_failures(faulty.metrics)
    rules = faults.add(every_failure(picks(namespace, "tcsissuers/status")))
    seen = CertificatesSeen(kube, namespace)
    try:
        await create_issuer(kube, "my-ca", namespace, {"secretName": "my-ca-cert"})
        names = await approved_requests(kube, namespace, "early", 2)  # approved before the issuer is Ready
        issuer = await wait_ready(kube, "my-ca", namespace, timeout=60)
        await wait_all_issued(kube, namespace, names, timeout=60)
        await seen.each_once(names)
    finally:
        seen.stop()
    assert fired(rules) == [1] * len(rules)
    await told_every_failure(faulty, log, before, 'patch on tcsissuers/status in API group "tcs.intel.com"')
    secret = await kube.get(SECRETS, "my-ca-cert", namespace)
    assert issuer["status"]["caFingerprint"], "the CA recorded once its status is written"
    assert secret["data"]["tls.crt"], "one CA: the one in the Secret"
    assert "WriteForbidden" in await events_about(kube, namespace, "my-ca")


async def test_an_est_issuer_status_write_outlasts_every_failure(
    kube: Kube, namespace: str, faulty: Faulty, faults: Faults, est: RunningEst, est_ca: Issuer
) -> None:
    log, before = OperatorLog(faulty.process), await write_failures(faulty.metrics)
    rules = faults.add(every_failure(picks(namespace, "estissuers/status")))
    await ready_est_issuer(kube, namespace, est, est_ca)
    assert fired(rules) == [1] * len(rules)
    await told_every_failure(faulty, log, before, 'patch on estissuers/status in API group "est.mitre.org"')


async def ready_est_issuer(kube: Kube, namespace: str, est: RunningEst, est_ca: Issuer) -> None:
    """EstIssuer ``est`` for the test's EST server, with its credentials, once it is Ready."""
    await kube.create(SECRETS, basic_auth_secret("est-credentials"), namespace)
    spec = {"host": "127.0.0.1", "port": est.port, "cacert": cacert(est_ca.certificate)}
    body = {
        "metadata": {"name": "est", "namespace": namespace},
        "spec": {**spec, "secretName": "est-credentials"},
    }
    await kube.create(EST_ISSUERS, body, namespace)

    async def ready() -> bool:
        return ready_condition(await kube.find(EST_ISSUERS, "est", namespace)).get("status") == "True"

    await wait_for(ready, timeout=60, what="EstIssuer Ready")


async def test_an_est_order_status_write_outlasts_every_failure_and_enrolls_once(
    kube: Kube, namespace: str, faulty: Faulty, faults: Faults, est: RunningEst, est_ca: Issuer
) -> None:
    await ready_est_issuer(kube, namespace, est, est_ca)
    log, before = OperatorLog(faulty.process), await write_failures(faulty.metrics)
    rules = faults.add(every_failure(picks(namespace, "estorders/status")))
    seen = CertificatesSeen(kube, namespace)
    common_name = f"order-{namespace}.example"
    try:
        await create_request(
            kube,
            namespace,
            "enrolled",
            make_csr(common_name),
            issuer="est",
            kind="EstIssuer",
            group="est.mitre.org",
        )
        await approve(kube, "enrolled", namespace)
        await wait_request(kube, namespace, "enrolled", reason="Issued", timeout=60)
        await seen.each_once(["enrolled"])
    finally:
        seen.stop()
    assert fired(rules) == [1] * len(rules)
    assert [e.common_name for e in est.ca.enrollments].count(common_name) == 1, "enrolled exactly once"
    await told_every_failure(faulty, log, before, 'patch on estorders/status in API group "est.mitre.org"')


async def test_the_ca_secret_write_outlasts_every_failure_on_create_and_on_update(
    kube: Kube, namespace: str, faulty: Faulty, faults: Faults
) -> None:
    history = ReadyHistory(kube, TCS_ISSUERS, namespace)
    seen = CertificatesSeen(kube, namespace)
    log, before = OperatorLog(faulty.process), await write_failures(faulty.metrics)
    created = faults.add(every_failure(picks(namespace, "secrets", "create")))
    try:
        await create_issuer(kube, "my-ca", namespace, {"secretName": "my-ca-cert"})
        first = await approved_requests(kube, namespace, "first", 1)
        await wait_ready(kube, "my-ca", namespace, timeout=60)
        assert fired(created) == [1] * len(created)
        await wait_all_issued(kube, namespace, first)
        await told_every_failure(faulty, log, before, 'create on secrets in API group ""')
        shown = history.of("my-ca")
        assert ("False", "SecretNotWritten") in [(s, r) for s, r, _ in shown], shown
        assert any('lacks the permission create on secrets in API group ""' in m for _, _, m in shown), shown

        # The Secret altered: the issuer stops signing, puts it back through every failure of an update.
        secret = await kube.get(SECRETS, "my-ca-cert", namespace)
        log, before = OperatorLog(faulty.process), await write_failures(faulty.metrics)
        updated = faults.add(every_failure(picks(namespace, "secrets", "update")))
        await kube.patch(
            SECRETS, "my-ca-cert", {"data": {"ca.crt": base64.b64encode(b"not a CA").decode()}}, namespace
        )
        await wait_for(
            lambda: _secret_is(kube, namespace, secret["data"]["ca.crt"]),
            timeout=60,
            what="the Secret put back",
        )
        assert fired(updated) == [1] * len(updated)
        await told_every_failure(faulty, log, before, 'update on secrets in API group ""')
        later = await approved_requests(kube, namespace, "later", 1)
        await wait_ready(kube, "my-ca", namespace)
        await wait_all_issued(kube, namespace, later)
        await seen.each_once(first + later)
    finally:
        seen.stop()
        history.stop()


async def _secret_is(kube: Kube, namespace: str, ca: str) -> bool:
    secret = await kube.get(SECRETS, "my-ca-cert", namespace)
    return bool(secret["data"].get("ca.crt") == ca)


async def test_events_that_fail_are_retried_or_dropped_and_never_hold_up_issuance(
    kube: Kube, namespace: str, faulty: Faulty, faults: Faults
) -> None:
    await ready_issuer_ca(kube, "my-ca", namespace, {"secretName": "my-ca-cert"})
    log, before = OperatorLog(faulty.process), await write_failures(faulty.metrics)
    rules = faults.add(every_failure(picks(namespace, "events", "create")))
    seen = CertificatesSeen(kube, namespace)
    names: list[str] = []
    try:
        # A: its Issued Event meets the 500, the 429s, then the 403 (dropped, logged); B: the 422
        # (dropped); C: a late answer, then posted.
        for batch, (prefix, rules_done) in enumerate((("a", 4), ("b", 5), ("c", 6))):
            names += await approved_requests(kube, namespace, prefix, 1)
            await wait_all_issued(kube, namespace, names)
            await wait_for(
                lambda done=rules_done: _fired_at_least(rules, done),  # type: ignore[misc]
                what=f"request {batch}'s Event to meet its failures",
            )
        await wait_for(lambda: _events_with(kube, namespace, "c-0", "Issued"), what="C's Issued Event")
        await seen.each_once(names)
    finally:
        seen.stop()
    assert fired(rules) == [1] * len(rules)
    about = {name: await events_about(kube, namespace, name) for name in names}
    assert "Issued" not in about["a-0"] and "Issued" not in about["b-0"], "refused Events are dropped"
    text = log.text()
    assert 'the operator lacks the permission create on events in API group ""' in text
    assert "Events are dropped until that is fixed" in text
    counted = grown(before, await write_failures(faulty.metrics))
    assert all(counted.get(code, 0) >= 1 for code in ("500", "429", "403", "422", "0")), counted
    assert faulty.alive()


async def _fired_at_least(rules: list[Any], count: int) -> bool:
    return sum(fired(rules)) >= count


async def test_a_label_the_api_refuses_stops_the_issuer_with_the_reason_until_the_spec_is_fixed(
    kube: Kube, namespace: str, faulty: Faulty
) -> None:
    seen = CertificatesSeen(kube, namespace)
    try:
        await create_issuer(
            kube, "labelled", namespace, {"secretName": "labelled-cert", "labels": {"team": "a b!"}}
        )
        issuer = await wait_ready(kube, "labelled", namespace, status="False", reason="SecretNotWritten")
        message = ready_condition(issuer)["message"]
        assert "metadata.labels" in message and "fix spec.labels" in message, message
        await create_request(kube, namespace, "waits", make_csr("waits.example"), issuer="labelled")
        await approve(kube, "waits", namespace)
        pending = await wait_request(kube, namespace, "waits", reason="Pending")
        assert "labelled is not ready" in ready_condition(pending)["message"]
        assert not (pending.get("status") or {}).get("certificate"), (
            "nothing signed while the Secret is refused"
        )
        assert await kube.find(SECRETS, "labelled-cert", namespace) is None

        await kube.patch(TCS_ISSUERS, "labelled", {"spec": {"labels": {"team": "a-b"}}}, namespace)
        await wait_ready(kube, "labelled", namespace)
        secret = await kube.get(SECRETS, "labelled-cert", namespace)
        assert secret["metadata"]["labels"]["team"] == "a-b"
        await wait_all_issued(kube, namespace, ["waits"])
        await seen.each_once(["waits"])
    finally:
        seen.stop()
    assert faulty.alive()
