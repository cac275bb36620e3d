"""The upstreams' own manifests (tests/data/upstream, unmodified copies), created with kubectl against the
sandbox, behave as they did with the upstreams: the TCS Deployment's container arguments start keyward,
its issuers turn Ready, its Certificates are issued; the EST operator's issuers and Certificates are
issued; its CRD test cases are accepted or refused as its own tests expect; all of it also on a cluster
that keeps the upstreams' CRDs.

The EST manifests name testrfc7030.com, a public server on the internet: they are created with only
``spec.host``, ``spec.port`` and ``spec.cacert`` pointing at a local EST server instead (same credentials,
estuser/estpwd, as the manifests' Secrets hold).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from keyward.keystore.config import SOFTHSM2_MODULE, HsmConfig
from keyward.kube.client import Kube
from keyward.kube.crds import cert_manager_crds_path
from keyward.kube.resources import (
    CERTIFICATE_REQUESTS,
    EST_CLUSTER_ISSUERS,
    EST_ISSUERS,
    NAMESPACES,
    SECRETS,
    TCS_CLUSTER_ISSUERS,
    TCS_ISSUERS,
)
from keyward.sandbox.apiserver import ApiServer
from keyward.sandbox.certmanager import approve
from keyward.sandbox.operator_process import OperatorProcess, operator_command
from keyward.sandbox.runner import Sandbox, SandboxOptions
from tests.integration.conftest import OPERATOR_NAMESPACE
from tests.integration.est_peers import RunningEst, serving
from tests.integration.helpers import openssl_verify, ready_condition, token_objects
from tests.integration.pod_files import in_pod
from tests.support.pki import Issuer, cacert
from tests.support.tools import kubectl, object_blocks
from tests.support.waiting import wait_for

UPSTREAM = Path(__file__).parent.parent / "data" / "upstream"
TCS = UPSTREAM / "tcs" / "deployment"
EST = UPSTREAM / "est-operator"
SEED_CRDS = [
    *sorted((TCS / "crds").glob("*.yaml")),
    *sorted((EST / "manifests" / "crds" / "bases").glob("est.mitre.org_*")),
]
HEALTH_PORT = 8083


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def write_documents(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all(docs))
    return path


async def wait_gone(kube: Kube, resource: Any, name: str, namespace: str | None) -> None:
    async def gone() -> bool:
        return await kube.find(resource, name, namespace) is None

    await wait_for(gone, what=f"{resource.kind} {name} gone")


async def ensure_namespace(kube: Kube, name: str) -> None:
    if await kube.find(NAMESPACES, name) is None:
        await kube.create(NAMESPACES, {"metadata": {"name": name}})


async def issuer_ready(kube: Kube, resource: Any, name: str, namespace: str | None) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        obj = await kube.find(resource, name, namespace)
        return obj if ready_condition(obj).get("status") == "True" else None

    return await wait_for(probe, timeout=30, what=f"{resource.kind} {name} Ready")


async def approve_and_wait_secret(kube: Kube, namespace: str, secret_name: str) -> dict[str, Any]:
    """Approve the namespace's CertificateRequest (cmctl approve) and wait for the Certificate's Secret."""
    requests = await wait_for(
        lambda: kube.list(CERTIFICATE_REQUESTS, namespace), what="the CertificateRequest"
    )
    await approve(kube, requests[0]["metadata"]["name"], namespace)

    async def issued() -> dict[str, Any] | None:
        secret = await kube.find(SECRETS, secret_name, namespace)
        return secret if secret and (secret.get("data") or {}).get("tls.crt") else None

    return await wait_for(issued, timeout=40, what=f"Secret {namespace}/{secret_name}")


def secret_certificate(secret: dict[str, Any], key: str = "tls.crt") -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(base64.b64decode(secret["data"][key]))


def assert_issued_by(
    tmp_path: Path, secret: dict[str, Any], ca: x509.Certificate, dns: str
) -> x509.Certificate:
    chain = base64.b64decode(secret["data"]["tls.crt"])
    assert openssl_verify(tmp_path, ca, chain).endswith(": OK")
    (leaf,) = x509.load_pem_x509_certificates(chain)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [dns]
    return leaf


# ---- the TCS Deployment and its manifests ---------------------------------------------------------------


def tcs_deployment() -> tuple[list[str], bytes, list[dict[str, Any]]]:
    """(container args, config.json of the HSM Secret, the Namespace and Secret it runs with)."""
    docs = documents(TCS / "tcs_issuer.yaml")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    secret = next(d for d in docs if d["kind"] == "Secret")
    args = list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    encoded = "".join(secret["data"]["config.json"].split())
    # The manifest's base64 has a line break, which kube-apiserver's decoder (Go's encoding/base64)
    # skips and the sandbox API refuses: the Secret is created with the same bytes, on one line.
    secret["data"]["config.json"] = encoded
    return args, base64.b64decode(encoded), [d for d in docs if d["kind"] in ("Namespace", "Secret")]


def health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return int(answer.status)
    except (urllib.error.URLError, OSError):
        return 0


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))  # noqa: S104 - where the Deployment's health probe listens
        except OSError:
            return False
    return True


@pytest.fixture
async def tcs_pod(
    sandbox: Sandbox, kube: Kube, tmp_path: Path
) -> AsyncIterator[tuple[OperatorProcess, Path]]:
    """keyward started as the TCS Deployment starts its container: /tcs-issuer's arguments, exactly, with
    the HSM Secret's config.json at /etc/hsm/config.json and the pod's namespace file (tcs-issuer), a
    SoftHSM2 store of its own (the image's token directory)."""
    args, config, objects = tcs_deployment()
    assert port_is_free(HEALTH_PORT), f"port {HEALTH_PORT} (the Deployment's health probe) is in use"
    await kubectl("apply", "-f", str(write_documents(tmp_path / "namespace-and-secret.yaml", objects)))
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    softhsm2_conf = tmp_path / "softhsm2.conf"
    softhsm2_conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    files = {
        "/etc/hsm/config.json": config,
        "/var/run/secrets/kubernetes.io/serviceaccount/namespace": b"tcs-issuer",
    }
    command = in_pod([sys.executable, "-m", "keyward", "tcs-issuer", *args], files, tmp_path / "pod")
    env = {"KUBECONFIG": str(sandbox.kubeconfig), "SOFTHSM2_CONF": str(softhsm2_conf)}
    process = OperatorProcess(command, log_path=tmp_path / "tcs-issuer.log", restart=False, env=env)
    await process.start()
    try:
        yield process, softhsm2_conf
    finally:
        await process.stop()
        await kube.delete(NAMESPACES, "tcs-issuer")


async def test_the_tcs_deployment_starts_keyward_and_its_issuers_and_certificates_work(
    kube: Kube, tcs_pod: tuple[OperatorProcess, Path], tmp_path: Path
) -> None:
    process, softhsm2_conf = tcs_pod
    await wait_for(lambda: asyncio.to_thread(health, HEALTH_PORT), what="/healthz on :8083 answering 200")
    assert await asyncio.to_thread(health, HEALTH_PORT) == 200
    await ensure_namespace(kube, "sandbox")
    try:
        await kubectl("create", "-f", str(TCS / "clusterissuer.tcs.intel.com-sgx-ca.yaml"))
        await kubectl("create", "-f", str(TCS / "issuer.tcs.intel.com-sgx-ca.yaml"))
        await issuer_ready(kube, TCS_CLUSTER_ISSUERS, "sgx-ca", None)
        await issuer_ready(kube, TCS_ISSUERS, "sgx-ca", "sandbox")
        # A cluster issuer's Secret goes to the operator's namespace: the pod's, tcs-issuer.
        cluster_ca = secret_certificate(await kube.get(SECRETS, "sgx-ca-secret-cluster", "tcs-issuer"))[0]
        namespaced = await kube.get(SECRETS, "sgx-ca", "sandbox")
        assert namespaced["type"] == "kubernetes.io/tls" and namespaced["data"]["tls.key"] == ""
        namespaced_ca = secret_certificate(namespaced)[0]

        await kubectl("create", "-f", str(TCS / "certificate-example-naemspaced.yaml"))
        secret = await approve_and_wait_secret(kube, "sandbox", "sample-cert")
        leaf = assert_issued_by(tmp_path, secret, namespaced_ca, "example.com")
        assert leaf.public_key().key_size == 3072  # type: ignore[union-attr]
        assert base64.b64decode(secret["data"]["tls.key"]).startswith(b"-----BEGIN RSA PRIVATE KEY-----")
        await kubectl("create", "-f", str(TCS / "certificate-example-clusterscoped.yaml"))
        secret = await approve_and_wait_secret(kube, "default", "sample-cert")
        assert_issued_by(tmp_path, secret, cluster_ca, "otherexample.com")

        log = process.log_path.read_text() if process.log_path else ""
        assert (
            "no module configured: SoftHSM2 (/usr/lib/softhsm/libsofthsm2.so) is the first one present" in log
        )
        assert "operator namespace tcs-issuer (from the pod's namespace" in log
        pins = json.loads(tcs_deployment()[1])
        seed_token = HsmConfig(
            module=SOFTHSM2_MODULE,
            token_label="SgxOperator",
            user_pin=pins["userPin"],
            softhsm2_conf=str(softhsm2_conf),
        )
        listing = await token_objects(seed_token)  # the token, initialized with the Secret's PINs
        assert object_blocks(listing, "tcsclusterissuer.tcs.intel.com/sgx-ca")
        assert object_blocks(listing, "tcsissuer.tcs.intel.com/sandbox.sgx-ca")
    finally:
        await kubectl(
            "delete", "-f", str(TCS / "certificate-example-clusterscoped.yaml"), "--ignore-not-found"
        )
        await kubectl("delete", "secret", "sample-cert", "-n", "default", "--ignore-not-found")
        await kubectl(
            "delete", "-f", str(TCS / "clusterissuer.tcs.intel.com-sgx-ca.yaml"), "--ignore-not-found"
        )
        await kube.delete(NAMESPACES, "sandbox")
        await wait_gone(kube, TCS_CLUSTER_ISSUERS, "sgx-ca", None)
        await wait_gone(kube, NAMESPACES, "sandbox", None)


# ---- the EST operator's manifests -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def est_ca() -> Issuer:
    return Issuer.self_signed("Stands in for testrfc7030.com's CA")


@pytest.fixture(scope="module")
async def local_est(est_ca: Issuer) -> AsyncIterator[RunningEst]:
    """An EST server on 127.0.0.1 taking the manifests' credentials (estuser/estpwd)."""
    async with serving(est_ca, username="estuser", password="estpwd") as running:
        yield running


def pointed_at(path: Path, est: RunningEst, ca: Issuer, target: Path) -> Path:
    """The manifest with its issuers' host, port and cacert pointing at the local EST server."""
    docs = documents(path)
    for doc in docs:
        if doc["kind"] in ("EstIssuer", "EstClusterIssuer"):
            doc["spec"].update(host="localhost", port=est.port, cacert=cacert(ca.certificate))
    return write_documents(target, docs)


async def start_operator(sandbox_or_box: Sandbox, tmp_path: Path, **env: str) -> OperatorProcess:
    command = operator_command(
        sandbox_or_box.kubeconfig, sandbox_or_box.hsm_config_path, operator_namespace=OPERATOR_NAMESPACE
    )
    process = OperatorProcess(command, log_path=tmp_path / "operator.log", restart=False, env=env)
    await process.start()
    return process


async def test_the_est_operators_issuers_and_certificates_are_issued(
    kube: Kube, sandbox: Sandbox, namespace: str, local_est: RunningEst, est_ca: Issuer, tmp_path: Path
) -> None:
    # CLUSTER_SCOPE_NAMESPACE: where the seed's own test keeps the cluster issuer's Secret
    process = await start_operator(sandbox, tmp_path, CLUSTER_SCOPE_NAMESPACE="cert-manager")
    await ensure_namespace(kube, "cert-manager")
    try:
        example = pointed_at(
            EST / "examples" / "estissuer.yaml", local_est, est_ca, tmp_path / "example.yaml"
        )
        await kubectl("create", "-n", namespace, "-f", str(example))
        await issuer_ready(kube, EST_ISSUERS, "testrfc7030", namespace)
        await kubectl("create", "-n", namespace, "-f", str(EST / "examples" / "certificate.yaml"))
        assert_issued_by(
            tmp_path,
            await approve_and_wait_secret(kube, namespace, "test-cert-tls"),
            est_ca.certificate,
            "example.com",
        )

        success = pointed_at(
            EST / "tests" / "manifests" / "estissuer_success.yaml", local_est, est_ca, tmp_path / "ns.yaml"
        )
        await kubectl("create", "-f", str(success))
        secret = await approve_and_wait_secret(kube, "est-operator-issuer-test", "test-cert-tls")
        assert_issued_by(tmp_path, secret, est_ca.certificate, "example.com")
        cluster = pointed_at(
            EST / "tests" / "manifests" / "estclusterissuer_success.yaml",
            local_est,
            est_ca,
            tmp_path / "cl.yaml",
        )
        await kubectl("create", "-f", str(cluster))
        await issuer_ready(kube, EST_CLUSTER_ISSUERS, "testrfc7030", None)
        secret = await approve_and_wait_secret(kube, "est-operator-test", "test-cert-tls")
        leaf = assert_issued_by(tmp_path, secret, est_ca.certificate, "example.com")
        assert leaf.subject.rfc4514_string() == "CN=example.com,O=thisOrg"
        assert base64.b64decode(secret["data"]["ca.crt"]) == est_ca.certificate.public_bytes(Encoding.PEM)
    finally:
        await kubectl("delete", "-f", str(tmp_path / "cl.yaml"), "--ignore-not-found", check=False)
        await kubectl("delete", "-f", str(tmp_path / "ns.yaml"), "--ignore-not-found", check=False)
        await wait_gone(kube, EST_CLUSTER_ISSUERS, "testrfc7030", None)
        await process.stop()


CRD_TESTS = sorted((EST / "manifests" / "crds" / "bases" / "tests").glob("*.yaml"))


@pytest.mark.parametrize(
    "case", [c for c in CRD_TESTS if c.name != "kustomization.yaml"], ids=lambda c: c.stem
)
async def test_the_est_operators_crd_test_cases_as_its_tests_expect(case: Path, namespace: str) -> None:
    """correct and correct-min are accepted (with port 443 and label "" defaulted); bad-base64, bad-port and
    missing-required are refused, naming the field."""
    result = await kubectl("create", "-n", namespace, "-f", str(case), "-o", "yaml", check=False)
    if case.stem.startswith("correct"):
        assert result.returncode == 0, result.stderr
        spec = yaml.safe_load(result.stdout)["spec"]
        assert spec["port"] == documents(case)[0]["spec"].get("port", 443)
        assert spec["label"] == documents(case)[0]["spec"].get("label", "")
    else:
        assert result.returncode != 0
        field = {"bad-base64": "spec.cacert", "bad-port": "spec.port", "missing-required": "spec.cacert"}[
            case.stem
        ]
        assert "is invalid" in result.stderr and field in result.stderr, result.stderr


# ---- a cluster that keeps the upstreams' CRDs -----------------------------------------------------------


@pytest.fixture
async def seed_crd_cluster(tmp_path: Path) -> AsyncIterator[Sandbox]:
    """A sandbox with cert-manager's CRDs, into which the upstreams' CRDs are installed with kubectl
    (keyward's own are not): a cluster where a user swapped the operator and kept everything else."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("keyward.sandbox.runner.crd_files", lambda: [cert_manager_crds_path()])
        box = Sandbox(SandboxOptions(state_dir=tmp_path / "seed-cluster", port=0, run_operator=False))
    await box.start()
    try:
        for crd in SEED_CRDS:
            await kubectl("--kubeconfig", str(box.kubeconfig), "apply", "-f", str(crd))
        yield box
    finally:
        await box.stop()


async def test_keyward_serves_the_upstreams_objects_under_their_own_crds(
    seed_crd_cluster: Sandbox, local_est: RunningEst, est_ca: Issuer, tmp_path: Path
) -> None:
    box = seed_crd_cluster
    assert box.kube is not None
    kube = box.kube
    served = await kubectl("--kubeconfig", str(box.kubeconfig), "get", "crds", "-o", "name")
    assert set(served.stdout.split()) >= {
        "customresourcedefinition.apiextensions.k8s.io/tcsissuers.tcs.intel.com",
        "customresourcedefinition.apiextensions.k8s.io/estorders.est.mitre.org",
    }
    process = await start_operator(box, tmp_path)
    try:
        await ensure_namespace(kube, "sandbox")
        await kubectl(
            "--kubeconfig", str(box.kubeconfig), "create", "-f", str(TCS / "issuer.tcs.intel.com-sgx-ca.yaml")
        )
        await issuer_ready(kube, TCS_ISSUERS, "sgx-ca", "sandbox")
        ca = secret_certificate(await kube.get(SECRETS, "sgx-ca", "sandbox"))[0]
        await kubectl(
            "--kubeconfig",
            str(box.kubeconfig),
            "create",
            "-f",
            str(TCS / "certificate-example-naemspaced.yaml"),
        )
        assert_issued_by(
            tmp_path, await approve_and_wait_secret(kube, "sandbox", "sample-cert"), ca, "example.com"
        )

        await ensure_namespace(kube, "est")
        example = pointed_at(
            EST / "examples" / "estissuer.yaml", local_est, est_ca, tmp_path / "example.yaml"
        )
        await kubectl("--kubeconfig", str(box.kubeconfig), "create", "-n", "est", "-f", str(example))
        issuer = await issuer_ready(kube, EST_ISSUERS, "testrfc7030", "est")
        assert issuer["status"]["estissuer_create"] == {"Ready": "True"}, "the seed's status field, kept"
        await kubectl(
            "--kubeconfig",
            str(box.kubeconfig),
            "create",
            "-n",
            "est",
            "-f",
            str(EST / "examples" / "certificate.yaml"),
        )
        secret = await approve_and_wait_secret(kube, "est", "test-cert-tls")
        assert_issued_by(tmp_path, secret, est_ca.certificate, "example.com")
    finally:
        await process.stop()


# ---- cert-manager's approval, with the TCS seed's RBAC for it --------------------------------------------


async def test_cert_manager_approves_tcs_requests_with_the_seeds_rbac_and_not_without(tmp_path: Path) -> None:
    """cert-manager's approver (the stand-in, acting as cert-manager/cert-manager with its controller role
    only) may approve requests for TCS issuers once the seed's cert-manager-rbac.yaml is applied."""
    import kr8s.asyncio

    from keyward.keystore.softhsm import create_softhsm_store
    from keyward.sandbox.certmanager import RBAC_PATH, CertManagerStandIn  # type: ignore[attr-defined,unused-ignore]
    from keyward.sandbox.runner import crd_files

    api = ApiServer(host="127.0.0.1", port=0, crd_paths=crd_files())
    await api.start()
    admin = tmp_path / "admin.kubeconfig"
    api.write_kubeconfig(admin)
    kube = Kube(await kr8s.asyncio.api(kubeconfig=str(admin)))
    controller_only = [
        d for d in yaml.safe_load_all(RBAC_PATH.read_text()) if "approve" not in d["metadata"]["name"]
    ]
    config = api.service_account_kubeconfig(  # type: ignore[attr-defined,unused-ignore]
        tmp_path / "cert-manager.kubeconfig", "cert-manager", "cert-manager", roles=controller_only
    )
    standin = CertManagerStandIn(Kube(await kr8s.asyncio.api(kubeconfig=str(config))), auto_approve=True)
    tasks = [asyncio.create_task(standin.run())]
    hsm = await asyncio.to_thread(create_softhsm_store, tmp_path / "token")
    await ensure_namespace(kube, OPERATOR_NAMESPACE)
    process = OperatorProcess(
        operator_command(admin, tmp_path / "token" / "hsm.json", operator_namespace=OPERATOR_NAMESPACE),
        log_path=tmp_path / "operator.log",
        restart=False,
    )
    await process.start()
    try:
        assert hsm.token_label
        await ensure_namespace(kube, "sandbox")
        await kubectl(
            "--kubeconfig", str(admin), "create", "-f", str(TCS / "issuer.tcs.intel.com-sgx-ca.yaml")
        )
        await issuer_ready(kube, TCS_ISSUERS, "sgx-ca", "sandbox")
        await kubectl(
            "--kubeconfig", str(admin), "create", "-f", str(TCS / "certificate-example-naemspaced.yaml")
        )
        user = "system:serviceaccount:cert-manager:cert-manager"
        signer = "tcsissuers.tcs.intel.com/sandbox.sgx-ca"

        async def refused() -> bool:
            return any(
                e.verb == "approve" and e.name == signer and not e.allowed
                for e in api.permissions.entries(user)
            )  # type: ignore[attr-defined,unused-ignore]

        await wait_for(refused, what="cert-manager's approval refused without the seed's RBAC")
        await kubectl("--kubeconfig", str(admin), "apply", "-f", str(TCS / "cert-manager-rbac.yaml"))

        async def issued() -> dict[str, Any] | None:
            secret = await kube.find(SECRETS, "sample-cert", "sandbox")
            return secret if secret and (secret.get("data") or {}).get("tls.crt") else None

        await wait_for(issued, timeout=60, what="the Certificate issued after cert-manager approved it")
    finally:
        await process.stop()
        for task in tasks:
            task.cancel()
        await api.stop()
