"""The operator in FIPS mode (`keyward operator --fips`) on OpenSSL's FIPS provider, against the sandbox:
a TCS issuer's CA is made and signs cert-manager requests and Kubernetes CSRs; a request FIPS mode does
not allow fails with a reason naming FIPS; nothing starts without the provider."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import AsyncIterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyward.kube.client import Kube
from keyward.sandbox.certmanager import approve
from keyward.sandbox.operator_process import OperatorProcess, operator_command
from keyward.sandbox.runner import Sandbox
from tests.integration.conftest import OPERATOR_NAMESPACE, OperatorRunner
from tests.integration.helpers import ready_condition, ready_issuer_ca
from tests.integration.requests_helpers import (
    approve_csr,
    chain_of,
    create_csr,
    create_request,
    make_csr,
    wait_csr_certificate,
    wait_request,
)
from tests.support.fips import fips_environment, plain_environment, provider_version


@pytest.fixture(scope="module")
async def fips_operator(operators: OperatorRunner) -> AsyncIterator[OperatorProcess]:
    # The metrics port of its own: operators of other test runs on this machine may hold the default.
    yield await operators.start("--fips", env=fips_environment(KEYWARD_METRICS_LISTEN="127.0.0.1:0"))


@pytest.fixture
async def issuer(kube: Kube, namespace: str, fips_operator: OperatorProcess) -> x509.Certificate:
    spec = {"secretName": "fips-ca", "privateKey": {"algorithm": "ECDSA", "size": 384}}
    return await ready_issuer_ca(kube, "fips-ca", namespace, spec)


async def test_the_operator_issues_in_fips_mode(
    kube: Kube, namespace: str, issuer: x509.Certificate, fips_operator: OperatorProcess
) -> None:
    await create_request(kube, namespace, "approved", make_csr("fips.example"), issuer="fips-ca")
    await approve(kube, "approved", namespace)
    issued = await wait_request(kube, namespace, "approved", reason="Issued")
    (leaf,) = chain_of(issued)  # cert-manager's convention: the self-signed root only in status.ca
    ca = x509.load_pem_x509_certificate(base64.b64decode(issued["status"]["ca"]))
    assert ca == issuer
    assert leaf.signature_hash_algorithm is not None and leaf.signature_hash_algorithm.name == "sha384"
    issuer.public_key().verify(
        leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(leaf.signature_hash_algorithm)
    )

    await create_csr(
        kube, "fips-csr", make_csr("k8s.example"), signer=f"tcsissuer.tcs.intel.com/{namespace}.fips-ca"
    )
    await approve_csr(kube, "fips-csr")
    k8s_leaf, *_ = await wait_csr_certificate(kube, "fips-csr")
    assert k8s_leaf.issuer == issuer.subject

    log = fips_operator.log_path.read_text() if fips_operator.log_path else ""
    assert f"FIPS mode: OpenSSL FIPS Provider {provider_version()} " in log


@pytest.mark.parametrize(
    ("key", "refusal"),
    [
        (ec.generate_private_key(ec.SECP521R1()), "the key is ECDSA secp521r1"),
        (rsa.generate_private_key(65537, 2048), None),
    ],
    ids=["p521-refused", "rsa2048-issued"],
)
async def test_a_request_fips_mode_does_not_allow_fails_naming_fips(
    kube: Kube, namespace: str, issuer: x509.Certificate, key: object, refusal: str | None
) -> None:
    await create_request(kube, namespace, "request", make_csr("key.example", key=key), issuer="fips-ca")
    await approve(kube, "request", namespace)
    if refusal is None:
        await wait_request(kube, namespace, "request", reason="Issued")
        return
    failed = await wait_request(kube, namespace, "request", reason="Failed")
    message = ready_condition(failed)["message"]
    assert f"policy fips-algorithms: the request's key: {refusal}, which FIPS mode does not allow" in message
    assert not failed["status"].get("certificate")


def test_the_operator_does_not_start_in_fips_mode_without_the_provider(sandbox: Sandbox) -> None:
    command = operator_command(
        sandbox.kubeconfig,
        sandbox.hsm_config_path,
        operator_namespace=OPERATOR_NAMESPACE,
        extra_args=["--fips"],
    )
    started = subprocess.run(command, env=plain_environment(), capture_output=True, text=True, timeout=60)
    assert started.returncode == 2
    assert started.stderr.startswith("keyward: error: FIPS mode: ")
    assert len(started.stderr.strip().splitlines()) == 1
