"""Probes and metrics as a cluster uses them: the kubelet's /healthz and /readyz, and a real Prometheus
(Debian's prometheus, on loopback, scraping every second) reading keyward's metrics."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from keyward.kube.client import Kube
from keyward.sandbox.operator_process import OperatorProcess
from tests.integration.conftest import OperatorRunner
from tests.integration.helpers import create_issuer, fetch, wait_ready
from tests.integration.requests_helpers import approved_requests, wait_all_issued
from tests.support.ports import free_port
from tests.support.waiting import wait_for


class Served:
    def __init__(self, process: OperatorProcess, health: int, metrics: int) -> None:
        self.process, self.health, self.metrics = process, health, metrics


@pytest.fixture
async def served(operators: OperatorRunner, namespace: str) -> AsyncIterator[Served]:
    health, metrics = free_port(), free_port()
    process = await operators.start(
        "--namespace",
        namespace,
        "--health-listen",
        f"127.0.0.1:{health}",
        "--metrics-listen",
        f"127.0.0.1:{metrics}",
    )
    try:
        yield Served(process, health, metrics)
    finally:
        await process.stop()


@pytest.fixture
def prometheus(tmp_path: Path, served: Served) -> Iterator[str]:
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: keyward\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{served.metrics}']\n"
    )
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


async def test_the_probes_say_alive_and_ready_once_the_operator_can_work(served: Served) -> None:
    async def ready() -> str | None:
        status, text = await fetch(f"http://127.0.0.1:{served.health}/readyz")
        return text if status == 200 else None

    assert await wait_for(ready, what="/readyz 200") == "ok\n"
    status, text = await fetch(f"http://127.0.0.1:{served.health}/healthz")
    assert (status, text) == (200, "ok\n")


async def test_readiness_names_what_is_missing(
    operators: OperatorRunner, namespace: str, tmp_path: Path
) -> None:
    broken = tmp_path / "hsm.json"
    broken.write_text(
        json.dumps({"tokenLabel": "x", "userPin": "1", "soPin": "2", "module": "/nonexistent.so"})
    )
    health = free_port()
    process = await operators.start(
        "--namespace",
        namespace,
        "--wait-for-token",
        "--health-listen",
        f"127.0.0.1:{health}",
        hsm_config=broken,
    )
    try:

        async def not_ready() -> str | None:
            status, text = await fetch(f"http://127.0.0.1:{health}/readyz")
            return text if status == 503 and "/nonexistent.so" in text else None

        text = await wait_for(not_ready, what="/readyz 503 naming the token")
        assert "the PKCS#11 token is not open" in text
        assert (await fetch(f"http://127.0.0.1:{health}/healthz"))[0] == 200, "alive, though not ready"
    finally:
        await process.stop()


async def test_prometheus_scrapes_the_issued_certificates_counter(
    kube: Kube, namespace: str, served: Served, prometheus: str
) -> None:
    await create_issuer(kube, "my-ca", namespace, {"secretName": "my-ca-cert"})
    await wait_ready(kube, "my-ca", namespace)
    names = await approved_requests(kube, namespace, "scraped", 3)
    await wait_all_issued(kube, namespace, names)

    async def issued() -> float | None:
        labels = 'issuer_kind="TCSIssuer",request_kind="CertificateRequest"'
        query = urllib.parse.urlencode({"query": f"keyward_certificates_issued_total{{{labels}}}"})
        status, text = await fetch(f"{prometheus}/api/v1/query?{query}")
        if status != 200:
            return None
        results = json.loads(text)["data"]["result"]
        return float(results[0]["value"][1]) if results else None

    assert await wait_for(issued, timeout=60, what="Prometheus to have scraped the counter") == 3.0

    async def ready_gauge() -> str | None:
        query = urllib.parse.urlencode(
            {"query": f'keyward_issuer_ready{{namespace="{namespace}",name="my-ca"}}'}
        )
        status, text = await fetch(f"{prometheus}/api/v1/query?{query}")
        results = json.loads(text)["data"]["result"] if status == 200 else []
        return results[0]["value"][1] if results else None

    assert await wait_for(ready_gauge, timeout=30, what="keyward_issuer_ready") == "1"
    _, exposition = await fetch(f"http://127.0.0.1:{served.metrics}/metrics")
    assert "keyward_signing_latency_seconds_bucket" in exposition
    assert 'keyward_token_up{issuer="tcsissuer.tcs.intel.com/' in exposition
