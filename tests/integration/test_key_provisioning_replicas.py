"""Every replica gets the key: with a token per pod, a replica whose token lacks the CA its issuer shows
asks for it through a QuoteAttestation of its own, and takes only that very CA."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from keyward.keystore.softhsm import create_softhsm_store
from keyward.kube.client import Kube
from keyward.kube.resources import SECRETS, TCS_ISSUERS
from keyward.sandbox.runner import Sandbox
from tests.integration.conftest import OperatorRunner
from tests.integration.helpers import (
    create_issuer,
    openssl_verify,
    ready_condition,
    token_objects,
    wait_ready,
)
from tests.integration.provisioning_helpers import answer, make_ca, wait_quote_attestation
from tests.integration.requests_helpers import approve_csr, create_csr, make_csr, wait_csr_certificate
from tests.support.tools import object_blocks


async def test_a_replica_with_its_own_token_asks_for_the_issuers_ca_and_takes_only_that_one(
    kube: Kube, sandbox: Sandbox, operators: OperatorRunner, namespace: str, tmp_path: Path
) -> None:
    label = f"tcsissuer.tcs.intel.com/{namespace}.shared"
    first = await operators.start("--namespace", namespace, "--replica-name", "a")
    await create_issuer(kube, "shared", namespace, {"secretName": "shared-ca", "selfSign": False})
    key, ca = make_ca(name="Shared Root")
    await answer(kube, await wait_quote_attestation(kube, "shared.a", namespace), key, ca)
    await wait_ready(kube, "shared", namespace)
    secret = await kube.get(SECRETS, "shared-ca", namespace)
    await first.stop()

    token_b = create_softhsm_store(tmp_path / "replica-b")
    second = await operators.start(
        "--namespace", namespace, "--replica-name", "b", hsm_config=tmp_path / "replica-b" / "hsm.json"
    )
    asked = await wait_quote_attestation(kube, "shared.b", namespace)
    issuer = await wait_ready(kube, "shared", namespace, status="False", reason="Pending")
    assert "QuoteAttestation" in ready_condition(issuer)["message"], "it asks instead of CAKeyMissing"

    impostor_key, impostor = make_ca(name="Impostor Root")
    await answer(kube, asked, impostor_key, impostor)
    issuer = await wait_ready(kube, "shared", namespace, status="False", reason="CAMismatch")
    message = ready_condition(issuer)["message"]
    assert f"Secret {namespace}/shared-ca holds this issuer's CA certificate" in message
    assert object_blocks(await token_objects(token_b), label) == [], "the impostor CA never entered"
    unchanged = await kube.get(SECRETS, "shared-ca", namespace)
    assert unchanged["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]

    renew = {"metadata": {"annotations": {"keyward.io/renew-key-provisioning": "after-the-impostor"}}}
    await kube.patch(TCS_ISSUERS, "shared", renew, namespace)
    again = await wait_quote_attestation(kube, "shared.b", namespace, other_than=asked["metadata"]["uid"])
    await answer(kube, again, key, ca)
    await wait_ready(kube, "shared", namespace)
    private = [b for b in object_blocks(await token_objects(token_b), label) if b.startswith("Private Key")]
    assert len(private) == 1, "replica b's token now holds the issuer's CA key"
    shown = await kube.get(SECRETS, "shared-ca", namespace)
    assert x509.load_pem_x509_certificate(base64.b64decode(shown["data"]["tls.crt"])) == ca

    await operators.start("--namespace", namespace, "--replica-name", "a")  # both replicas serve now
    for replica in ("one", "two"):
        name = f"{namespace}-{replica}"
        await create_csr(kube, name, make_csr(f"{replica}.example"), label)
        await approve_csr(kube, name)
        (leaf,) = await wait_csr_certificate(kube, name)
        verdict = openssl_verify(tmp_path, ca, leaf.public_bytes(serialization.Encoding.PEM))
        assert verdict.endswith(": OK"), verdict
    await second.stop()
