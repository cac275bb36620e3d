"""keyward started on a cluster where an upstream ran: it adopts what it finds.

Each test sets up the state an upstream leaves (objects as the upstream writes them: upstream_state.py,
seed_token.py), starts keyward, and checks that nothing is issued again, enrolled again or left hanging:
the TCS seed's CA in the token and its Secret are taken over, the requests it finished are left alone,
its finalizers are released where it would have released them; the EST seed's orders are taken over.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from keyward.issuers.tcs.ca import ca_fingerprint
from keyward.kube.client import Kube
from keyward.kube.resources import (
    CERTIFICATE_REQUESTS,
    CSRS,
    EST_ISSUERS,
    EST_ORDERS,
    MANAGED_BY_LABEL,
    QUOTE_ATTESTATIONS,
    SECRETS,
    SIGNER_ANNOTATION,
    TCS_ISSUERS,
    TCS_SEED_FINALIZER,
)
from keyward.sandbox.certmanager import approve
from keyward.sandbox.runner import Sandbox
from tests.integration.conftest import OperatorRunner
from tests.integration.est_peers import RunningEst, basic_auth_secret, serving
from tests.integration.helpers import (
    create_issuer,
    openssl_verify,
    ready_condition,
    token_objects,
    wait_ready,
)
from tests.integration.requests_helpers import (
    approve_csr,
    chain_of,
    create_csr,
    create_request,
    make_csr,
    wait_request,
)
from tests.integration.upstream_state import (
    seed_ca_in_token,
    seed_ca_secret,
    seed_est_issuer_ready,
    seed_est_order,
    seed_finished_request,
    seed_issuer_status,
    seed_quote_attestation,
)
from tests.support.pki import Issuer, b64, cacert, ec_key, name, pem
from tests.support.tools import object_blocks
from tests.support.waiting import wait_for


async def gone(kube: Kube, resource: Any, name: str, namespace: str | None) -> bool:
    return await kube.find(resource, name, namespace) is None


async def test_the_tcs_seeds_ca_secret_and_requests_are_taken_over_and_nothing_is_signed_again(
    kube: Kube, sandbox: Sandbox, operators: OperatorRunner, namespace: str, tmp_path: Path
) -> None:
    signer = f"tcsissuer.tcs.intel.com/{namespace}.sgx-ca"
    seed_ca = await seed_ca_in_token(sandbox.hsm_config_path, signer)
    issuer = await create_issuer(kube, "sgx-ca", namespace, {"secretName": "sgx-ca", "selfSign": True})
    await seed_issuer_status(kube, TCS_ISSUERS, issuer)
    await seed_ca_secret(kube, issuer, "sgx-ca", namespace, seed_ca)
    # A request the seed signed, one approved after it stopped, and a Kubernetes CSR it signed.
    await create_request(kube, namespace, "done", make_csr("done.example"), issuer="sgx-ca")
    await approve(kube, "done", namespace)
    old_leaf = Issuer.self_signed("stands in for the seed's leaf").certificate
    done = await seed_finished_request(
        kube, await kube.get(CERTIFICATE_REQUESTS, "done", namespace), old_leaf, seed_ca, "Signed"
    )
    await create_request(kube, namespace, "later", make_csr("later.example"), issuer="sgx-ca")
    await approve(kube, "later", namespace)
    csr_name = f"seed-{uuid.uuid4().hex[:6]}"
    await create_csr(kube, csr_name, make_csr("foo.bar.com"), signer)
    await approve_csr(kube, csr_name)
    signed_csr = await kube.get(CSRS, csr_name)
    signed_csr["status"]["certificate"] = b64(pem(old_leaf))
    signed_csr = await kube.replace(CSRS, signed_csr, subresource="status")
    # A selfSign: false issuer waiting for its key, with the QuoteAttestation the seed made for it.
    kms = await create_issuer(kube, "kms-ca", namespace, {"secretName": "kms-ca", "selfSign": False})
    await seed_quote_attestation(kube, kms, namespace, f"tcsissuer.tcs.intel.com/{namespace}.kms-ca")

    process = await operators.start("--namespace", namespace)
    try:

        async def checked() -> dict[str, Any] | None:  # the seed left Ready=True: wait for keyward's check
            issuer = await kube.find(TCS_ISSUERS, "sgx-ca", namespace)
            return issuer if (issuer or {}).get("status", {}).get("caFingerprint") else None

        ready = await wait_for(checked, what="keyward's check of the seed's issuer")
        assert ready_condition(ready)["status"] == "True"
        assert ready["status"]["caFingerprint"] == ca_fingerprint(seed_ca), "the seed's CA, not a new one"

        async def adopted() -> dict[str, Any] | None:
            secret = await kube.find(SECRETS, "sgx-ca", namespace)
            annotations = (secret or {}).get("metadata", {}).get("annotations") or {}
            return secret if annotations.get(SIGNER_ANNOTATION) == signer else None

        secret = await wait_for(adopted, what="the seed's Secret adopted")
        assert secret["data"]["tls.crt"] == secret["data"]["ca.crt"] == b64(pem(seed_ca))
        assert TCS_SEED_FINALIZER not in (secret["metadata"].get("finalizers") or [])
        assert secret["metadata"]["labels"][MANAGED_BY_LABEL] == "keyward"
        blocks = object_blocks(await token_objects(sandbox.hsm), signer)
        assert len(blocks) == 3 and sum("Private Key Object" in b for b in blocks) == 1, "no second key"

        (leaf,) = chain_of(await wait_request(kube, namespace, "later", reason="Issued"))
        assert openssl_verify(tmp_path, seed_ca, pem(leaf)).endswith(": OK"), "signed by the seed's CA key"
        still = await kube.get(CERTIFICATE_REQUESTS, "done", namespace)
        assert still["metadata"]["resourceVersion"] == done["metadata"]["resourceVersion"], "left alone"
        csr = await kube.get(CSRS, csr_name)
        assert csr["metadata"]["resourceVersion"] == signed_csr["metadata"]["resourceVersion"]
        kms_issuer = await wait_ready(kube, "kms-ca", namespace, status="False")
        assert "key provisioning" in ready_condition(kms_issuer)["message"]

        # Deleting the issuers completes: the seed's finalizers are released, the adopted CA is removed.
        await kube.delete(TCS_ISSUERS, "kms-ca", namespace)
        await wait_for(lambda: gone(kube, QUOTE_ATTESTATIONS, "kms-ca", namespace), what="the QA's deletion")
        await kube.delete(TCS_ISSUERS, "sgx-ca", namespace)
        await wait_for(lambda: gone(kube, TCS_ISSUERS, "sgx-ca", namespace), what="the issuer's deletion")
        await wait_for(lambda: gone(kube, SECRETS, "sgx-ca", namespace), what="the Secret's deletion")
        assert object_blocks(await token_objects(sandbox.hsm), signer) == []
    finally:
        await process.stop()
        await kube.delete(CSRS, csr_name)


async def test_a_seed_secret_whose_ca_is_not_in_the_token_is_kept_and_released_with_its_issuer(
    kube: Kube, sandbox: Sandbox, operators: OperatorRunner, namespace: str
) -> None:
    elsewhere = Issuer.self_signed("SGX self-signed root certificate authority").certificate
    issuer = await create_issuer(kube, "moved", namespace, {"secretName": "moved-ca"})
    await seed_issuer_status(kube, TCS_ISSUERS, issuer)
    before = await seed_ca_secret(kube, issuer, "moved-ca", namespace, elsewhere)
    process = await operators.start("--namespace", namespace)
    try:
        stopped = await wait_ready(kube, "moved", namespace, status="False", reason="CAKeyMissing")
        assert (
            f"Secret {namespace}/moved-ca holds this issuer's CA certificate"
            in ready_condition(stopped)["message"]
        )
        after = await kube.get(SECRETS, "moved-ca", namespace)
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], (
            "never overwritten"
        )
        signer = f"tcsissuer.tcs.intel.com/{namespace}.moved"
        assert object_blocks(await token_objects(sandbox.hsm), signer) == [], "no CA minted in its place"
        await kube.delete(TCS_ISSUERS, "moved", namespace)
        await wait_for(lambda: gone(kube, TCS_ISSUERS, "moved", namespace), what="the issuer's deletion")
        await wait_for(lambda: gone(kube, SECRETS, "moved-ca", namespace), what="the Secret's deletion")
    finally:
        await process.stop()


async def test_deleting_a_quote_attestation_the_seed_left_completes(
    kube: Kube, operators: OperatorRunner, namespace: str
) -> None:
    issuer = await create_issuer(kube, "gone-ca", namespace, {"selfSign": False})
    attestation = await seed_quote_attestation(
        kube, issuer, namespace, f"tcsissuer.tcs.intel.com/{namespace}.x"
    )
    attestation["metadata"]["ownerReferences"] = []  # its issuer was deleted while nothing ran
    await kube.replace(QUOTE_ATTESTATIONS, attestation)
    process = await operators.start("--namespace", namespace)
    try:
        await kube.delete(QUOTE_ATTESTATIONS, "gone-ca", namespace)
        await wait_for(lambda: gone(kube, QUOTE_ATTESTATIONS, "gone-ca", namespace), what="its deletion")
    finally:
        await process.stop()


# ---- the EST seed ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def est_ca() -> Issuer:
    return Issuer.self_signed("Takeover EST CA")


@pytest.fixture(scope="module")
async def est(est_ca: Issuer) -> AsyncIterator[RunningEst]:
    async with serving(est_ca) as running:
        yield running


def orders_of(orders: list[dict[str, Any]], request: dict[str, Any]) -> list[str]:
    uid = request["metadata"]["uid"]
    return [
        o["metadata"]["name"]
        for o in orders
        if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])
    ]


async def test_the_est_seeds_orders_are_taken_over_never_doubled(
    kube: Kube, operators: OperatorRunner, namespace: str, est: RunningEst, est_ca: Issuer
) -> None:
    await kube.create(SECRETS, basic_auth_secret("testrfc7030-cred"), namespace)
    issuer = await kube.create(
        EST_ISSUERS,
        {
            "metadata": {"name": "testrfc7030", "namespace": namespace},
            "spec": {
                "host": "127.0.0.1",
                "port": est.port,
                "cacert": cacert(est_ca.certificate),
                "secretName": "testrfc7030-cred",
            },
        },
        namespace,
    )
    await seed_est_issuer_ready(kube, issuer)

    async def est_request(cn: str) -> dict[str, Any]:
        return await create_request(
            kube,
            namespace,
            cn,
            make_csr(f"{cn}.example"),
            issuer="testrfc7030",
            kind="EstIssuer",
            group="est.mitre.org",
        )

    done = await est_request("done")
    await approve(kube, "done", namespace)
    old_leaf = est_ca.issue(name("done.example"), ec_key().public_key())
    done_order = await seed_est_order(kube, done, certificate=old_leaf)
    done = await seed_finished_request(
        kube,
        await kube.get(CERTIFICATE_REQUESTS, "done", namespace),
        old_leaf,
        est_ca.certificate,
        "certificate issued",
    )
    retrying = await est_request("retrying")
    await approve(kube, "retrying", namespace)
    await seed_est_order(kube, retrying, retry_at=datetime.now(UTC) - timedelta(seconds=1))
    unapproved = await est_request("unapproved")
    await seed_est_order(kube, unapproved)

    process = await operators.start("--namespace", namespace)
    try:
        issued = await wait_request(kube, namespace, "retrying", reason="Issued")
        chain_of(issued)[0].verify_directly_issued_by(est_ca.certificate)
        assert [e.common_name for e in est.ca.enrollments].count("retrying.example") == 1
        orders = await kube.list(EST_ORDERS, namespace)
        assert orders_of(orders, retrying) == ["retrying-order"], "the seed's order, taken over"
        assert orders_of(orders, unapproved) == ["unapproved-order"], "nothing ordered before approval"
        assert "unapproved.example" not in [e.common_name for e in est.ca.enrollments]
        still = await kube.get(CERTIFICATE_REQUESTS, "done", namespace)
        assert still["metadata"]["resourceVersion"] == done["metadata"]["resourceVersion"], "left alone"
        order = await kube.get(EST_ORDERS, "done-order", namespace)
        assert order["metadata"]["resourceVersion"] == done_order["metadata"]["resourceVersion"]
        assert "done.example" not in [e.common_name for e in est.ca.enrollments], "never enrolled again"
        checked = await kube.get(EST_ISSUERS, "testrfc7030", namespace)
        assert ready_condition(checked)["status"] == "True"
        assert checked["status"]["estissuer_create"] == {"Ready": "True"}

        await approve(kube, "unapproved", namespace)
        await wait_request(kube, namespace, "unapproved", reason="Issued")
        assert orders_of(await kube.list(EST_ORDERS, namespace), unapproved) == ["unapproved-order"]
        assert [e.common_name for e in est.ca.enrollments].count("unapproved.example") == 1
    finally:
        await process.stop()
