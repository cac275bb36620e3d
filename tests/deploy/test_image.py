"""The container image, run the way the chart's Deployment runs it, against a sandbox on this host.

`make image` builds localhost/keyward:<version> first (cheap when nothing changed: podman's layer cache,
and the Debian base tarball in build/). The operator then runs in podman with the Deployment's own
arguments, environment, user, read-only root, dropped capabilities and volumes (the token on a podman
volume, the HSM config and a kubeconfig mounted read-only, /tmp the only other writable place), host
networking to reach the sandbox API: a TCSIssuer gets Ready, an approved CertificateRequest is issued, the
CA key sits in the token on the volume, and a second container on the same volume keeps the same CA.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyward import __version__
from keyward.kube.resources import NAMESPACES
from keyward.sandbox.certmanager import approve
from keyward.sandbox.runner import Sandbox
from tests.deploy.charts import ROOT, container, ensure_helm, pod_spec, render
from tests.integration.helpers import (
    ca_from_secret,
    create_issuer,
    openssl_verify,
    running_sandbox,
    wait_ready,
)
from tests.integration.requests_helpers import chain_of, create_request, make_csr, wait_request
from tests.support.ports import free_ports
from tests.support.tools import object_blocks
from tests.support.waiting import wait_for

IMAGE = f"localhost/keyward:{__version__}"
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "scripts" / "image" / "containers.conf")}
BUILD_TIMEOUT = 1500  # a cold build: mmdebstrap, apt-get and pip in the image; seconds when warm

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT + 300)


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, env=PODMAN_ENV, timeout=timeout, check=False
    )
    if check:
        assert done.returncode == 0, f"podman {args[0]} failed: {done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def image() -> str:
    """Build (or bring up to date) the image with `make image`, as a user would."""
    done = subprocess.run(
        ["make", "--no-print-directory", "image"], cwd=ROOT, capture_output=True, text=True,
        timeout=BUILD_TIMEOUT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"make image failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return IMAGE


@pytest.fixture(scope="module")
async def sandbox(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sandbox]:
    async with running_sandbox(tmp_path_factory.mktemp("image-sandbox")) as box:
        yield box


@pytest.fixture
async def namespace(sandbox: Sandbox) -> AsyncIterator[str]:
    assert sandbox.kube is not None
    name = f"img-{uuid.uuid4().hex[:8]}"
    await sandbox.kube.create(NAMESPACES, {"metadata": {"name": name}})
    yield name
    await sandbox.kube.delete(NAMESPACES, name)


class Pod:
    """The chart's Deployment as podman runs it: args, env, security settings and mounts from the
    rendering; the token volume and the HSM config directory from the test."""

    def __init__(self, image: str, ports: list[int], files: Path, token_volume: str) -> None:
        ensure_helm()
        health, metrics, est = ports
        docs = render(
            settings=[f"health.port={health}", f"metrics.port={metrics}", f"est.port={est}",
                      "operator.bindAddress=127.0.0.1"],
        )  # fmt: skip
        self.container = container(docs)
        self.pod = pod_spec(docs)
        self.image = image
        self.files = files
        self.token_volume = token_volume
        self.health_port = health
        self.names: list[str] = []

    def run_command(self, name: str) -> list[str]:
        security = self.container["securityContext"]
        pod_security = self.pod["securityContext"]
        mounts = {m["name"]: m["mountPath"] for m in self.container["volumeMounts"]}
        assert security["readOnlyRootFilesystem"] and security["capabilities"]["drop"] == ["ALL"]
        assert not security["allowPrivilegeEscalation"]
        command = [
            "run", "--detach", "--name", name, "--network", "host",
            "--read-only", "--read-only-tmpfs=false",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--user", f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}",
            "--volume", f"{self.token_volume}:{mounts['tokens']}",
            "--volume", f"{self.files / 'hsm'}:{mounts['hsm-config']}:ro",
            "--tmpfs", f"{mounts['tmp']}:rw,size=64m",
            "--volume", f"{self.files / 'kubeconfig'}:/etc/keyward/kubeconfig:ro",
            "--env", "KUBECONFIG=/etc/keyward/kubeconfig",  # in a cluster: the ServiceAccount
        ]  # fmt: skip
        for variable in self.container.get("env", []):
            command += ["--env", f"{variable['name']}={self.env_value(variable, name)}"]
        return [*command, self.image, *self.container["args"]]

    @staticmethod
    def env_value(variable: dict[str, Any], pod_name: str) -> str:
        """A container variable's value as the kubelet resolves it: a literal, or the downward API's
        metadata.name (the Pod's name: here the container's)."""
        if "value" in variable:
            return str(variable["value"])
        field = variable["valueFrom"]["fieldRef"]["fieldPath"]
        assert field == "metadata.name", f"the test resolves no downward-API field {field!r}"
        return pod_name

    async def start(self) -> str:
        name = f"keyward-test-{uuid.uuid4().hex[:8]}"
        await asyncio.to_thread(podman, *self.run_command(name))
        self.names.append(name)
        await self.wait_live(name)
        return name

    async def wait_live(self, name: str, timeout: float = 60) -> None:
        """What the startup and liveness probes ask: GET /healthz on the health port answers 200."""
        path = self.container["livenessProbe"]["httpGet"]["path"]
        async with httpx.AsyncClient(timeout=2) as client:

            async def live() -> bool:
                try:
                    if (await client.get(f"http://127.0.0.1:{self.health_port}{path}")).status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                state = await asyncio.to_thread(podman, "inspect", "--format", "{{.State.Status}}", name)
                if state.stdout.strip() != "running":
                    logs = await asyncio.to_thread(podman, "logs", name, check=False)
                    raise AssertionError(
                        f"the operator container stopped:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}"
                    )
                return False

            await wait_for(live, timeout, f"{path} on port {self.health_port} to answer 200", interval=0.2)

    async def stop(self, name: str) -> int:
        """podman stop (SIGTERM, as the kubelet sends); the container's exit code."""
        await asyncio.to_thread(podman, "stop", "--time", "20", name)
        state = await asyncio.to_thread(podman, "inspect", "--format", "{{.State.ExitCode}}", name)
        return int(state.stdout.strip())

    def remove_all(self) -> None:
        for name in self.names:
            podman("rm", "--force", "--time", "5", name, check=False)


@dataclass(frozen=True)
class Token:
    """The HSM config's token; its PINs never shown (a failing test prints its fixtures)."""

    label: str
    user_pin: str = field(repr=False)
    so_pin: str = field(repr=False)

    def config(self) -> str:
        return json.dumps({"tokenLabel": self.label, "userPin": self.user_pin, "soPin": self.so_pin})


@pytest.fixture
def pod(image: str, sandbox: Sandbox, tmp_path: Path) -> Iterator[tuple[Pod, Token]]:
    """A Pod with its files: an HSM config with fresh PINs and the sandbox's kubeconfig, readable by the
    container's user; and a token volume of its own."""
    hsm = Token("keyward-image", secrets.token_urlsafe(18), secrets.token_urlsafe(18))
    (tmp_path / "hsm").mkdir()
    (tmp_path / "hsm" / "config.json").write_text(hsm.config())
    shutil.copyfile(sandbox.kubeconfig, tmp_path / "kubeconfig")
    for path in (tmp_path / "hsm", tmp_path / "hsm" / "config.json", tmp_path / "kubeconfig"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # mounted read-only into the container
    volume = f"keyward-test-tokens-{uuid.uuid4().hex[:8]}"
    podman("volume", "create", volume)
    runner = Pod(image, free_ports(3), tmp_path, volume)
    try:
        yield runner, hsm
    finally:
        runner.remove_all()
        podman("volume", "rm", "--force", volume, check=False)


def test_the_image_runs_as_its_own_unprivileged_user_with_the_tcs_entry_point(image: str) -> None:
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["keyward"]
    version = podman("run", "--rm", "--read-only", "--cap-drop", "ALL", image, "--version")
    assert version.stdout.strip() == f"keyward {__version__}"
    seed = podman(
        "run", "--rm", "--read-only", "--cap-drop", "ALL", "--entrypoint", "/tcs-issuer", image, "--help"
    )
    assert seed.stdout.startswith("Usage: keyward operator"), (
        "/tcs-issuer hands its arguments to keyward operator"
    )
    tools = podman(
        "run", "--rm", "--read-only", "--cap-drop", "ALL", "--entrypoint", "sh", image, "-c",
        "softhsm2-util --version && command -v pkcs11-tool && test ! -w /usr"
        " && test ! -e /opt/keyward/bin/pip",
    )  # fmt: skip
    assert "/usr/bin/pkcs11-tool" in tools.stdout


async def test_operator_in_the_image_issues_and_keeps_its_ca_on_the_token_volume(
    pod: tuple[Pod, Token], sandbox: Sandbox, namespace: str, tmp_path: Path
) -> None:
    runner, hsm = pod
    kube = sandbox.kube
    assert kube is not None
    first = await runner.start()

    await create_issuer(kube, "my-ca", namespace, {"secretName": "my-ca-cert"})
    await wait_ready(kube, "my-ca", namespace, timeout=60)
    secret, ca = await ca_from_secret(kube, "my-ca-cert", namespace)
    assert secret["data"]["tls.key"] == ""  # the key stays in the token

    await create_request(kube, namespace, "web", make_csr("web.example", dns=("web.example",)))
    await approve(kube, "web", namespace)
    issued = await wait_request(kube, namespace, "web", reason="Issued", timeout=60)
    leaf = chain_of(issued)[0]
    assert leaf.subject.rfc4514_string() == "CN=web.example"
    chain_pem = base64.b64decode(issued["status"]["certificate"])
    assert (await asyncio.to_thread(openssl_verify, tmp_path, ca, chain_pem)).endswith(": OK")

    # pkcs11-tool (OpenSC, in the image) sees the CA key in the token on the volume: never extractable
    listing = await asyncio.to_thread(
        podman, "exec", first, "pkcs11-tool", "--module", "/usr/lib/softhsm/libsofthsm2.so",
        "--token-label", hsm.label, "--login", "--pin", hsm.user_pin, "-O",
    )  # fmt: skip
    keys = [
        b
        for b in object_blocks(listing.stdout, f"tcsissuer.tcs.intel.com/{namespace}.my-ca")
        if "Private Key" in b
    ]
    assert len(keys) == 1 and "never extractable" in keys[0] and "sensitive" in keys[0]

    assert await runner.stop(first) == 0, "the operator stops cleanly on SIGTERM"

    # a new container (a rescheduled pod) on the same volume: the same CA, signing again
    await runner.start()
    await create_request(kube, namespace, "api", make_csr("api.example"))
    await approve(kube, "api", namespace)
    again = await wait_request(kube, namespace, "api", reason="Issued", timeout=60)
    assert (await ca_from_secret(kube, "my-ca-cert", namespace))[1] == ca
    chain_pem = base64.b64decode(again["status"]["certificate"])
    assert (await asyncio.to_thread(openssl_verify, tmp_path, ca, chain_pem)).endswith(": OK")
