"""The seeds' run options, as a running operator shows them: kopf's --liveness URL and --log-format, the TCS
seed's --cert-manager-issuer=false (Kubernetes CSRs only) in Go's spelling."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from pathlib import Path

from keyward.kube.client import Kube
from keyward.kube.resources import CERTIFICATE_REQUESTS, CSRS
from keyward.sandbox.certmanager import approve
from keyward.sandbox.operator_process import OperatorProcess, operator_command
from keyward.sandbox.runner import Sandbox
from tests.integration.conftest import OPERATOR_NAMESPACE
from tests.integration.helpers import create_issuer, wait_ready
from tests.integration.requests_helpers import (
    approve_csr,
    create_csr,
    create_request,
    make_csr,
    wait_csr_certificate,
)
from tests.support.ports import free_port
from tests.support.waiting import wait_for


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - a local test URL
            return int(answer.status)
    except OSError:
        return 0


async def test_csr_signing_only_with_kopfs_liveness_url_and_json_logs(
    kube: Kube, sandbox: Sandbox, namespace: str, tmp_path: Path
) -> None:
    command = operator_command(
        sandbox.kubeconfig, sandbox.hsm_config_path, operator_namespace=OPERATOR_NAMESPACE
    )
    at = command.index("--health-listen")
    del command[at : at + 2]
    url = f"http://127.0.0.1:{free_port()}/alive"
    command += ["-n", namespace, "--liveness", url, "--log-format", "json", "-cert-manager-issuer=false"]
    process = OperatorProcess(command, log_path=tmp_path / "operator.log", restart=False)
    await process.start()
    name = f"only-csr-{uuid.uuid4().hex[:6]}"
    try:
        await wait_for(lambda: asyncio.to_thread(get, url), what=f"{url} answering")
        await create_issuer(kube, "my-ca", namespace, {"secretName": "my-ca-cert"})
        await wait_ready(kube, "my-ca", namespace)
        await create_request(kube, namespace, "left-alone", make_csr("left.example"))
        await approve(kube, "left-alone", namespace)
        await create_csr(kube, name, make_csr("csr.example"), f"tcsissuer.tcs.intel.com/{namespace}.my-ca")
        await approve_csr(kube, name)
        await wait_csr_certificate(kube, name)  # CSRs are signed ...
        request = await kube.get(CERTIFICATE_REQUESTS, "left-alone", namespace)
        status = request.get("status") or {}
        assert not status.get("certificate"), "... cert-manager's requests are left to others"
        assert [c["type"] for c in status.get("conditions") or []] == ["Approved"]
        lines = [
            line for line in (tmp_path / "operator.log").read_text().splitlines() if line.startswith("{")
        ]
        messages = [json.loads(line)["message"] for line in lines]
        assert any("CertificateRequests are left to others" in m for m in messages), "logs are JSON lines"
    finally:
        await process.stop()
        await kube.delete(CSRS, name)
