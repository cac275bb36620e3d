"""Signing across operator crashes, and the Istio full-chain option (own operators, no shared one)."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

from keyward.bench.observe import with_children
from keyward.kube.client import Kube
from keyward.kube.resources import CSRS
from tests.integration.conftest import OperatorRunner
from tests.integration.helpers import ca_from_secret, create_issuer, wait_ready
from tests.integration.requests_helpers import (
    CertificatesSeen,
    approve_csr,
    approved_requests,
    create_csr,
    make_csr,
    wait_all_issued,
    wait_csr_certificate,
)


async def test_full_cert_chain_option_returns_leaf_and_ca(
    kube: Kube, namespace: str, operators: OperatorRunner
) -> None:
    process = await operators.start("--namespace", namespace, "--csr-full-cert-chain")
    name = f"istio-{uuid.uuid4().hex[:6]}"
    try:
        await create_issuer(kube, "mesh-ca", namespace, {"secretName": "mesh-ca-cert"})
        await wait_ready(kube, "mesh-ca", namespace)
        _, ca = await ca_from_secret(kube, "mesh-ca-cert", namespace)
        await create_csr(
            kube, name, make_csr("workload.mesh"), f"tcsissuer.tcs.intel.com/{namespace}.mesh-ca"
        )
        await approve_csr(kube, name)
        chain = await wait_csr_certificate(kube, name)
        assert len(chain) == 2 and chain[1] == ca
        chain[0].verify_directly_issued_by(ca)
    finally:
        await kube.delete(CSRS, name)
        await process.stop()


async def test_crash_mid_burst_leaves_no_request_behind_and_none_signed_twice(
    kube: Kube, namespace: str, operators: OperatorRunner
) -> None:
    first = await operators.start("--namespace", namespace)
    seen, names = await _burst_under_way(kube, namespace, "burst")
    try:
        await first.kill()  # SIGKILL mid-burst
        second = await operators.start("--namespace", namespace)
        try:
            await wait_all_issued(kube, namespace, names)
            await seen.each_once(names)
        finally:
            await second.stop()
    finally:
        seen.stop()


async def test_a_signing_process_killed_mid_burst_costs_no_request_and_no_second_certificate(
    kube: Kube, namespace: str, operators: OperatorRunner
) -> None:
    process = await operators.start("--namespace", namespace, "--signing-processes", "2")
    seen, names = await _burst_under_way(kube, namespace, "crash")
    try:
        assert process.pid is not None
        signers = await asyncio.to_thread(_signing_processes, process.pid)
        assert len(signers) == 2, "the operator signs in two signing processes"
        os.kill(signers[0], signal.SIGKILL)  # what a crashing PKCS#11 module does
        await wait_all_issued(kube, namespace, names)
        await seen.each_once(names)
        assert process.process is not None and process.process.returncode is None, "the operator survived"
        assert signers[0] not in await asyncio.to_thread(_signing_processes, process.pid)
    finally:
        seen.stop()
        await process.stop()


async def _burst_under_way(kube: Kube, namespace: str, prefix: str) -> tuple[CertificatesSeen, list[str]]:
    """Issuer my-ca ready, 60 requests approved at once, the first already issued: a burst in progress,
    watched by the ``CertificatesSeen`` returned (stop it when done)."""
    await create_issuer(kube, "my-ca", namespace, {"secretName": "my-ca-cert"})
    await wait_ready(kube, "my-ca", namespace)
    seen = CertificatesSeen(kube, namespace)
    try:
        names = await approved_requests(kube, namespace, prefix, 60)
        await seen.first()
    except BaseException:
        seen.stop()
        raise
    return seen, names


def _signing_processes(pid: int) -> list[int]:
    return with_children(pid)[1:]
