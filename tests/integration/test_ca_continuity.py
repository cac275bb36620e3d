"""A CA is never silently replaced, and an issuer writes and deletes only the Secrets it made.

Each test runs the operator against the sandbox the way a real cluster fails it: a pod rescheduled onto
an empty token volume, a second replica with a token of its own, a spec.secretName that names someone
else's Secret, two issuers naming one Secret.
"""

from __future__ import annotations

import base64
from pathlib import Path

from keyward.issuers.tcs.ca import ca_fingerprint
from keyward.keystore.softhsm import create_softhsm_store
from keyward.kube.client import Kube
from keyward.kube.resources import SECRETS, TCS_ISSUERS
from keyward.sandbox.runner import Sandbox
from tests.integration.conftest import OperatorRunner
from tests.integration.helpers import (
    ca_from_secret,
    create_issuer,
    ready_condition,
    token_objects,
    wait_ready,
)
from tests.support.tools import object_blocks
from tests.support.waiting import wait_for


async def test_an_operator_on_an_empty_token_stops_the_issuer_instead_of_minting_a_new_ca(
    kube: Kube, sandbox: Sandbox, operators: OperatorRunner, namespace: str, tmp_path: Path
) -> None:
    first = await operators.start("--namespace", namespace)
    await create_issuer(kube, "kept", namespace, {"secretName": "kept-ca"})
    await wait_ready(kube, "kept", namespace)
    secret, ca = await ca_from_secret(kube, "kept-ca", namespace)
    await first.stop()

    empty = create_softhsm_store(tmp_path / "rescheduled")  # the pod came back on an empty volume
    second = await operators.start("--namespace", namespace, hsm_config=tmp_path / "rescheduled" / "hsm.json")
    try:
        issuer = await wait_ready(kube, "kept", namespace, status="False", reason="CAKeyMissing")
        message = ready_condition(issuer)["message"]
        assert f"Secret {namespace}/kept-ca holds this issuer's CA certificate" in message
        assert "no new CA is made" in message and "restore the token" in message
        after, still = await ca_from_secret(kube, "kept-ca", namespace)
        assert still == ca and after["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]
        listing = await token_objects(empty)
        assert object_blocks(listing, f"tcsissuer.tcs.intel.com/{namespace}.kept") == [], "nothing minted"
        assert issuer["status"]["caFingerprint"] == ca_fingerprint(ca), "the recorded CA stays recorded"
    finally:
        await second.stop()


async def test_the_status_fingerprint_guards_an_issuer_without_a_secret(
    kube: Kube, operators: OperatorRunner, namespace: str, tmp_path: Path
) -> None:
    first = await operators.start("--namespace", namespace)
    await create_issuer(kube, "bare", namespace)  # no spec.secretName: only its status records the CA
    issuer = await wait_ready(kube, "bare", namespace)
    fingerprint = issuer["status"]["caFingerprint"]
    assert len(bytes.fromhex(fingerprint.replace(":", ""))) == 32
    await first.stop()

    create_softhsm_store(tmp_path / "replica")  # a second replica with a token of its own
    second = await operators.start("--namespace", namespace, hsm_config=tmp_path / "replica" / "hsm.json")
    try:
        issuer = await wait_ready(kube, "bare", namespace, status="False", reason="CAKeyMissing")
        assert (
            "status.caFingerprint records this issuer's CA certificate" in ready_condition(issuer)["message"]
        )
        assert issuer["status"]["caFingerprint"] == fingerprint
    finally:
        await second.stop()


async def test_a_secret_name_of_someone_elses_secret_is_a_conflict_and_stays_untouched(
    kube: Kube, operator: object, namespace: str
) -> None:
    workload = {
        "metadata": {"name": "web-tls", "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": base64.b64encode(b"cert").decode(), "tls.key": base64.b64encode(b"key").decode()},
    }
    before = await kube.create(SECRETS, workload, namespace)
    await create_issuer(kube, "greedy", namespace, {"secretName": "web-tls"})
    issuer = await wait_ready(kube, "greedy", namespace, status="False", reason="SecretConflict")
    assert (
        f"Secret {namespace}/web-tls (spec.secretName) exists and belongs to"
        in ready_condition(issuer)["message"]
    )
    await kube.delete(TCS_ISSUERS, "greedy", namespace)

    async def issuer_gone() -> bool:
        return await kube.find(TCS_ISSUERS, "greedy", namespace) is None

    await wait_for(issuer_gone, what="the issuer's deletion")
    after = await kube.get(SECRETS, "web-tls", namespace)
    assert after["data"] == before["data"], "the workload's private key is still there"
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


async def test_two_issuers_naming_one_secret_the_first_keeps_it(
    kube: Kube, operator: object, namespace: str
) -> None:
    await create_issuer(kube, "first", namespace, {"secretName": "shared-ca"})
    await wait_ready(kube, "first", namespace)
    _, first_ca = await ca_from_secret(kube, "shared-ca", namespace)
    await create_issuer(kube, "intruder", namespace, {"secretName": "shared-ca"})
    intruder = await wait_ready(kube, "intruder", namespace, status="False", reason="SecretConflict")
    signer = f"tcsissuer.tcs.intel.com/{namespace}.first"
    assert f"belongs to the issuer with signer name {signer}" in ready_condition(intruder)["message"]
    await kube.delete(TCS_ISSUERS, "intruder", namespace)

    async def intruder_gone() -> bool:  # its finalizer ran: the deletion handler is done
        return await kube.find(TCS_ISSUERS, "intruder", namespace) is None

    await wait_for(intruder_gone, what="the intruder's deletion")
    _, still = await ca_from_secret(kube, "shared-ca", namespace)
    assert still == first_ca, "deleting the intruder leaves the first issuer's Secret alone"
    first = await wait_ready(kube, "first", namespace)
    assert ready_condition(first)["reason"] == "Reconcile"
