"""Kubernetes CSRs that name another namespace's TCS issuer: signed only for requesters who may
``reference`` it (verb reference on signers.tcs.intel.com in the issuer's namespace), whichever spelling
of the signer name they use, as the README's Role grants it.

The requester is a ServiceAccount of another namespace that may create CSRs; the approver is the cluster
admin, who approves the request without knowing whose issuer it names (the sandbox's admin approves
everything, as an auto-approver of CSRs would)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from keyward.kube.client import Kube
from keyward.kube.resources import CSRS, EVENTS
from keyward.sandbox.runner import Sandbox
from tests.integration.helpers import create_issuer, wait_ready
from tests.integration.requests_helpers import (
    approve_csr,
    create_csr,
    csr_requester,
    failed_condition,
    make_csr,
    reference_grant,
    wait_csr_certificate,
)
from tests.support.tools import kubectl

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture
async def requester(sandbox: Sandbox, tmp_path: Path) -> tuple[Kube, str]:
    return await csr_requester(sandbox, tmp_path)


async def test_a_csr_for_another_namespaces_issuer_is_failed_unless_its_requester_may_reference_it(
    kube: Kube, namespace: str, requester: tuple[Kube, str]
) -> None:
    await create_issuer(kube, "team-ca", namespace, {"privateKey": {"algorithm": "ECDSA"}})
    await wait_ready(kube, "team-ca", namespace)
    client, username = requester
    spellings = {
        "singular": f"tcsissuer.tcs.intel.com/{namespace}.team-ca",
        "plural": f"tcsissuers.tcs.intel.com/{namespace}.team-ca",
    }
    names = {spelling: f"{spelling}-{uuid.uuid4().hex[:6]}" for spelling in (*spellings, "granted")}
    try:
        for spelling, signer in spellings.items():
            created = await create_csr(client, names[spelling], make_csr("stolen.example"), signer)
            assert created["spec"]["username"] == username, "the API server records who asked"
            await approve_csr(kube, names[spelling])
        for spelling in spellings:
            condition = await failed_condition(kube, names[spelling])
            assert (condition["status"], condition["reason"]) == ("True", "DeniedReference")
            assert condition["message"] == (
                f"{username} may not reference TCSIssuer {namespace}/team-ca (verb reference on "
                f"signers.tcs.intel.com named team-ca or * in namespace {namespace}); not signed: a cluster "
                "admin grants it with a Role and RoleBinding in that namespace"
            )
            assert not (await kube.get(CSRS, names[spelling])).get("status", {}).get("certificate")
        events = [e for e in await kube.list(EVENTS, "default") if e.get("reason") == "DeniedReference"]
        assert {e["involvedObject"]["name"] for e in events} >= {names["singular"], names["plural"]}

        requester_namespace, requester_name = username.split(":")[2:]
        grant = reference_grant("tcs.intel.com", namespace, "team-ca", requester_namespace, requester_name)
        await kubectl("apply", "-f", "-", input_text=grant)
        await create_csr(client, names["granted"], make_csr("allowed.example"), spellings["plural"])
        await approve_csr(kube, names["granted"])
        (leaf,) = await wait_csr_certificate(kube, names["granted"])
        assert leaf.subject.rfc4514_string() == "CN=allowed.example"
    finally:
        for name in names.values():
            await kube.delete(CSRS, name)
