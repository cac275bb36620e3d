"""Requests carrying an SGX quote: never signed before a key manager verified the quote through a
QuoteAttestation; signed then with "SGX Quote has been verified"; failed, unsigned, when it refuses or
does not answer in time."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from keyward.issuers.tcs.quotes import OID_QUOTE
from keyward.kube.client import Kube
from keyward.kube.resources import CERTIFICATE_REQUESTS, CSRS, QUOTE_ATTESTATIONS
from keyward.sandbox.certmanager import approve
from keyward.sandbox.operator_process import OperatorProcess
from tests.integration.conftest import OPERATOR_NAMESPACE, OperatorRunner
from tests.integration.helpers import create_issuer, ready_condition, wait_ready
from tests.integration.provisioning_helpers import answer_with, gone, wait_quote_attestation
from tests.integration.requests_helpers import approve_csr, chain_of, create_csr, create_request, wait_request
from tests.support.pki import pem
from tests.support.waiting import wait_for
from tests.unit.issuers.sgx_requests import base64_string, sgx_csr

#: A short verdict timeout for this module's operator, so that the timeout test does not wait long.
TIMEOUT_SECONDS = 6


@pytest.fixture(scope="module")
async def quote_operator(operators: OperatorRunner) -> OperatorProcess:
    return await operators.start("--quote-verification-timeout", str(TIMEOUT_SECONDS))


@pytest.fixture
async def issuer(kube: Kube, quote_operator: OperatorProcess, namespace: str) -> str:
    await create_issuer(kube, "my-ca", namespace, {"secretName": "my-ca-cert"})
    await wait_ready(kube, "my-ca", namespace)
    return f"tcsissuer.tcs.intel.com/{namespace}.my-ca"


async def test_a_certificate_request_with_a_quote_waits_for_the_verdict_and_is_signed_with_it(
    kube: Kube, issuer: str, namespace: str
) -> None:
    csr = sgx_csr("sgx-app.example")
    await create_request(kube, namespace, "sgx-app", pem(csr))
    await approve(kube, "sgx-app", namespace)
    qa = await wait_quote_attestation(kube, "sgx-app.certificaterequest", namespace)
    spec = qa["spec"]
    assert (spec["type"], spec["signerName"], spec["quoteVersion"]) == (
        "QuoteAttestation",
        issuer,
        "ECDSA Quote 3",
    )
    extensions = {extension.oid.dotted_string: extension.value for extension in csr.extensions}
    assert base64_string(base64.b64decode(spec["quote"])) == extensions["1.3.6.1.4.1.54392.5.1283"].value  # type: ignore[attr-defined]
    assert qa["metadata"]["ownerReferences"][0]["kind"] == "CertificateRequest"
    waiting = await wait_request(kube, namespace, "sgx-app", reason="Pending")
    assert "Waiting for the verdict on its SGX quote" in ready_condition(waiting)["message"]
    assert not (waiting.get("status") or {}).get("certificate"), "nothing signed before the verdict"

    await answer_with(kube, qa, None, ok=True)
    issued = await wait_request(kube, namespace, "sgx-app", reason="Issued")
    (leaf, *_) = chain_of(issued)
    text = await asyncio.to_thread(
        subprocess.run,
        ["openssl", "x509", "-noout", "-text"],
        input=leaf.public_bytes(serialization.Encoding.PEM),
        capture_output=True,
        check=True,
    )
    assert b"1.3.6.1.4.1.54392.5.1283" in text.stdout and b"SGX Quote has been verified" in text.stdout
    await wait_for(
        lambda: gone(kube, QUOTE_ATTESTATIONS, qa["metadata"]["name"], namespace), what="QA deleted"
    )


async def _failed_csr(kube: Kube, name: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        csr = await kube.find(CSRS, name)
        failed = [c for c in (csr or {}).get("status", {}).get("conditions", []) if c["type"] == "Failed"]
        return failed[0] if failed else None

    return await wait_for(probe, what=f"CSR {name} Failed")


async def test_a_kubernetes_csr_whose_quote_is_refused_fails_unsigned(
    kube: Kube, issuer: str, namespace: str
) -> None:
    name = f"{namespace}-sgx"
    await create_csr(kube, name, pem(sgx_csr()), issuer)
    await approve_csr(kube, name)
    qa = await wait_quote_attestation(kube, f"{name}.certificatesigningrequest", OPERATOR_NAMESPACE)
    await answer_with(kube, qa, None, ok=False)
    failed = await _failed_csr(kube, name)
    assert failed["reason"] == "AttestationFailed"
    assert "denied since quote attestation failed" in failed["message"]
    assert "SGX_QL_QV_RESULT_REVOKED" in failed["message"]
    assert not (await kube.get(CSRS, name)).get("status", {}).get("certificate")
    await wait_for(
        lambda: gone(kube, QUOTE_ATTESTATIONS, qa["metadata"]["name"], OPERATOR_NAMESPACE), what="QA deleted"
    )


async def _asking(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    """An approved CertificateRequest carrying a quote, and the QuoteAttestation that asks about it."""
    await create_request(kube, namespace, name, pem(sgx_csr()))
    await approve(kube, name, namespace)
    return await wait_quote_attestation(kube, f"{name}.certificaterequest", namespace)


async def test_a_refused_quote_fails_the_certificate_request_for_good(
    kube: Kube, issuer: str, namespace: str
) -> None:
    qa = await _asking(kube, namespace, "refused")
    await answer_with(kube, qa, None, ok=False)
    failed = await wait_request(kube, namespace, "refused", reason="Failed")
    assert "This request was denied since quote attestation failed" in ready_condition(failed)["message"]
    assert failed["status"].get("failureTime") and not failed["status"].get("certificate")


async def test_a_quote_without_a_verdict_in_time_fails_with_the_reason(
    kube: Kube, issuer: str, namespace: str
) -> None:
    await _asking(kube, namespace, "unanswered")
    failed = await wait_request(kube, namespace, "unanswered", reason="Failed", timeout=TIMEOUT_SECONDS + 30)
    message = ready_condition(failed)["message"]
    assert f"no verdict on its SGX quote within {TIMEOUT_SECONDS}s" in message, message
    assert not failed["status"].get("certificate")


async def test_a_request_whose_quote_extension_holds_no_quote_fails_at_once(
    kube: Kube, issuer: str, namespace: str
) -> None:
    await create_request(
        kube, namespace, "fake", pem(sgx_csr(values={OID_QUOTE: base64_string(b"not a quote")}))
    )
    await approve(kube, "fake", namespace)
    failed = await wait_request(kube, namespace, "fake", reason="Failed")
    assert "does not hold an SGX ECDSA quote" in ready_condition(failed)["message"]
    assert await kube.find(QUOTE_ATTESTATIONS, "fake.certificaterequest", namespace) is None
    assert await kube.find(CERTIFICATE_REQUESTS, "fake", namespace) is not None


async def test_a_quote_attestation_deleted_while_waiting_is_made_again(
    kube: Kube, issuer: str, namespace: str
) -> None:
    first = await _asking(kube, namespace, "again")
    await kube.delete(QUOTE_ATTESTATIONS, "again.certificaterequest", namespace)
    second = await wait_quote_attestation(
        kube, "again.certificaterequest", namespace, other_than=first["metadata"]["uid"]
    )
    assert second["spec"]["quote"] == first["spec"]["quote"]
    await answer_with(kube, second, None, ok=True)
    await wait_request(kube, namespace, "again", reason="Issued")


async def test_the_operator_went_through_all_of_the_above_without_a_crash(
    operators: OperatorRunner, quote_operator: OperatorProcess
) -> None:
    """Run last: every malformed or refused request above failed with a reason, none crashed anything."""
    assert quote_operator.process is not None and quote_operator.process.returncode is None
    assert "Traceback" not in operators.logs()
