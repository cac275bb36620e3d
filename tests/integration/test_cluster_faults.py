"""The cluster and the token fail under a running operator: watches cut mid-stream, the API server
unreachable for 30 s (and, meanwhile, so many changes that resuming a watch meets 410 Gone), the CA key
deleted from the token and the token directory put back. The operator keeps running, loses no approved
request, signs nothing twice and says what is wrong.

Each test runs its own operator, scoped to its namespace (it must start after the fault is in place,
or talk to the API through a proxy that can go away).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from keyward.keystore.softhsm import TOKENS_DIR, create_softhsm_store
from keyward.kube.client import Kube
from keyward.kube.resources import CERTIFICATE_REQUESTS, CRDS, NAMESPACES, SECRETS
from keyward.sandbox.certmanager import approve
from keyward.sandbox.runner import Sandbox
from tests.integration.conftest import OperatorRunner
from tests.integration.fault_helpers import (
    FAST_RETRIES,
    OPERATOR_USER,
    Faults,
    OperatorLog,
    TcpProxy,
    grown,
    write_failures,
)
from tests.integration.helpers import fetch, ready_condition, ready_issuer_ca, running_sandbox, wait_ready
from tests.integration.requests_helpers import (
    CertificatesSeen,
    approve_csr,
    approved_requests,
    create_csr,
    create_request,
    make_csr,
    wait_all_issued,
    wait_csr_certificate,
)
from tests.support.ports import free_port
from tests.support.tools import pkcs11_tool
from tests.support.waiting import wait_for

OUTAGE = 30.0
#: Events per resource the small sandbox remembers: fewer than the outage's changes, so a watch
#: resumed from before the outage meets 410 Gone.
WATCH_WINDOW = 20


async def test_watches_cut_mid_stream_lose_no_request(
    kube: Kube, namespace: str, operators: OperatorRunner, faults: Faults
) -> None:
    rules = faults.add(f"cut-watch=2@resource=certificaterequests,namespace={namespace},user={OPERATOR_USER}")
    process = await operators.start("--namespace", namespace, env=FAST_RETRIES)
    log = OperatorLog(process)
    seen = CertificatesSeen(kube, namespace)
    try:
        await ready_issuer_ca(kube, "my-ca", namespace, {"secretName": "my-ca-cert"})
        names = await approved_requests(kube, namespace, "cut", 6)
        await wait_all_issued(kube, namespace, names)
        await seen.each_once(names)
        assert rules[0].fired >= 3, "the operator's watch was cut again and again, and resumed each time"
        assert process.process is not None and process.process.returncode is None
        assert "Traceback" not in log.text()
    finally:
        seen.stop()
        await process.stop()


# ---- the API server away for 30 s ------------------------------------------------------------------


@pytest.fixture
async def small_window(tmp_path: Path) -> AsyncIterator[Sandbox]:
    """A sandbox of its own that remembers only WATCH_WINDOW events per resource."""
    async with running_sandbox(tmp_path / "sandbox", f"watch-window={WATCH_WINDOW}") as box:
        yield box


@pytest.fixture
async def own_sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with running_sandbox(tmp_path / "sandbox") as box:
        yield box


def through(proxy: TcpProxy, kubeconfig: Path, target: Path) -> Path:
    """``kubeconfig`` with its server replaced by the proxy (same host, so TLS still verifies)."""
    config = yaml.safe_load(kubeconfig.read_text())
    for cluster in config["clusters"]:
        server = urllib.parse.urlsplit(cluster["cluster"]["server"])
        cluster["cluster"]["server"] = f"{server.scheme}://127.0.0.1:{proxy.port}"
    target.write_text(yaml.safe_dump(config))
    target.chmod(0o600)
    return target


async def watch_answer(kube: Kube, namespace: str, version: str) -> dict[str, Any]:
    """The first event of a watch of CertificateRequests resumed from ``version``."""
    params = {"watch": "1", "resourceVersion": version, "timeoutSeconds": "5"}
    async with kube.raw.call_api(
        "GET",
        version="",
        base=CERTIFICATE_REQUESTS.prefix,
        namespace=namespace,
        url=CERTIFICATE_REQUESTS.plural,
        params=params,
        stream=True,
    ) as response:
        async for line in response.aiter_lines():
            if line.strip():
                return dict(json.loads(line))
    return {}


async def test_the_api_away_for_30_seconds_and_410_gone_after_it_lose_no_request(
    small_window: Sandbox, tmp_path: Path
) -> None:
    sandbox = small_window
    assert sandbox.kube is not None
    kube = sandbox.kube
    upstream = urllib.parse.urlsplit(sandbox.api.url).port
    assert upstream is not None
    proxy = TcpProxy(upstream)
    await proxy.start()
    namespace = "outage"
    await kube.create(NAMESPACES, {"metadata": {"name": namespace}})
    runner = OperatorRunner(sandbox, tmp_path / "logs")
    (tmp_path / "logs").mkdir()
    metrics = free_port()
    process = await runner.start(
        "--namespace",
        namespace,
        "--metrics-listen",
        f"127.0.0.1:{metrics}",
        env=FAST_RETRIES,
        kubeconfig=through(proxy, sandbox.operator_kubeconfig, tmp_path / "proxied.kubeconfig"),
    )
    seen = CertificatesSeen(kube, namespace)
    try:
        await ready_issuer_ca(kube, "my-ca", namespace, {"secretName": "my-ca-cert"})
        first = await approved_requests(kube, namespace, "before", 1)
        await wait_all_issued(kube, namespace, first)
        log, before = OperatorLog(process), await write_failures(metrics)

        # B's certificate is on its way (its status write held by the API) when the API goes away.
        (held,) = sandbox.api.faults.add(
            f"delay=20@verb=patch,resource=certificaterequests/status,namespace={namespace},"
            f"user={OPERATOR_USER},first=1"
        )
        during = await approved_requests(kube, namespace, "inflight", 1)
        await wait_for(lambda: _fired(held), what="the status write to be under way")
        await proxy.stop()
        away = time.monotonic()
        last_seen = max(
            int(r["metadata"]["resourceVersion"]) for r in await kube.list(CERTIFICATE_REQUESTS, namespace)
        )
        during += await approved_requests(kube, namespace, "away", 12)  # 24 changes > the window
        gone = await watch_answer(kube, namespace, str(last_seen))
        assert (gone.get("type"), gone.get("object", {}).get("code")) == ("ERROR", 410), gone
        # The behaviour under test: an outage of OUTAGE seconds, during which nothing can be written.
        await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - away)))
        assert not any(name in seen.by_request for name in during), "nothing can be written meanwhile"
        await proxy.start()

        await wait_all_issued(kube, namespace, during, timeout=60)
        await seen.each_once(first + during)
        assert process.process is not None and process.process.returncode is None, "never crashed"
        text = log.text()
        assert f"could not write the status of CertificateRequest {namespace}/inflight-0 (Unreachable" in text
        assert "Traceback" not in text
        assert grown(before, await write_failures(metrics)).get("0", 0) >= 1
    finally:
        seen.stop()
        await process.stop()
        await proxy.stop()


async def _fired(rule: Any) -> bool:
    return bool(rule.fired)


async def test_without_cert_managers_crds_the_operator_is_ready_and_signs_csrs(
    own_sandbox: Sandbox, tmp_path: Path
) -> None:
    """A cluster without cert-manager: the CertificateRequest watch lists nothing (404), says so once,
    and neither blocks readiness nor the CSRs."""
    sandbox = own_sandbox
    assert sandbox.kube is not None
    kube = sandbox.kube
    await kube.delete(CRDS, "certificaterequests.cert-manager.io")
    runner = OperatorRunner(sandbox, tmp_path / "logs")
    (tmp_path / "logs").mkdir()
    health = free_port()
    process = await runner.start("--health-listen", f"127.0.0.1:{health}", env=FAST_RETRIES)
    try:

        async def ready() -> bool:
            return (await fetch(f"http://127.0.0.1:{health}/readyz"))[0] == 200

        await wait_for(ready, what="/readyz 200 without cert-manager")
        await kube.create(NAMESPACES, {"metadata": {"name": "no-cm"}})
        await ready_issuer_ca(kube, "my-ca", "no-cm", {"secretName": "my-ca-cert"})
        await create_csr(kube, "no-cm-csr", make_csr("no-cm.example"), "tcsissuer.tcs.intel.com/no-cm.my-ca")
        await approve_csr(kube, "no-cm-csr")
        await wait_csr_certificate(kube, "no-cm-csr")
        text = runner.logs()
        assert text.count("does not serve certificaterequests.cert-manager.io (404)") == 1, "said once"
    finally:
        await process.stop()


# ---- the token emptied -------------------------------------------------------------------------------


async def test_a_ca_key_deleted_from_the_token_stops_signing_until_the_token_is_put_back(
    kube: Kube, namespace: str, operators: OperatorRunner, tmp_path: Path
) -> None:
    token_dir = tmp_path / "token"
    hsm = await asyncio.to_thread(create_softhsm_store, token_dir)
    process = await operators.start(
        "--namespace", namespace, env=FAST_RETRIES, hsm_config=token_dir / "hsm.json"
    )
    seen = CertificatesSeen(kube, namespace)
    signer = f"tcsissuer.tcs.intel.com/{namespace}.my-ca"
    try:
        ca = await ready_issuer_ca(kube, "my-ca", namespace, {"secretName": "my-ca-cert"})
        first = await approved_requests(kube, namespace, "before", 1)
        await wait_all_issued(kube, namespace, first)
        backup = tmp_path / "token-backup"
        shutil.copytree(token_dir / TOKENS_DIR, backup)
        log = OperatorLog(process)

        deleted = await asyncio.to_thread(
            pkcs11_tool, hsm, "--delete-object", "--type", "privkey", "--label", signer
        )
        assert deleted.returncode == 0, deleted.stderr
        await create_request(kube, namespace, "after", make_csr("after.example"))
        await approve(kube, "after", namespace)
        issuer = await wait_ready(kube, "my-ca", namespace, status="False", reason="KeyMissing")
        assert "no private key" in ready_condition(issuer)["message"]
        pending = await wait_for(
            lambda: _pending_with(kube, namespace, "after", "my-ca is not ready: the token holds"),
            what="the request Pending with the issuer's reason",
        )
        assert not (pending.get("status") or {}).get("certificate"), "nothing signed without the CA key"
        secret = await kube.get(SECRETS, "my-ca-cert", namespace)
        assert secret["data"]["tls.crt"] == _pem_b64(ca), "the CA is never replaced by a new one"

        # The token's directory is put back from the backup: the key is there again.
        shutil.rmtree(token_dir / TOKENS_DIR)
        shutil.copytree(backup, token_dir / TOKENS_DIR)
        await wait_ready(kube, "my-ca", namespace, timeout=60)
        await wait_all_issued(kube, namespace, ["after"], timeout=60)
        await seen.each_once([*first, "after"])
        assert process.process is not None and process.process.returncode is None
        assert "Traceback" not in log.text()
        assert hsm.user_pin not in log.text() and hsm.so_pin not in log.text()
    finally:
        seen.stop()
        await process.stop()


async def _pending_with(kube: Kube, namespace: str, name: str, text: str) -> dict[str, Any] | None:
    request = await kube.find(CERTIFICATE_REQUESTS, name, namespace)
    ready = ready_condition(request)
    return request if ready.get("reason") == "Pending" and text in ready.get("message", "") else None


def _pem_b64(certificate: x509.Certificate) -> str:
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.PEM)).decode()
