"""The project's own CRDs (deploy/crds) and cert-manager's install into the sandbox and serve kubectl."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from keyward.kube.crds import cert_manager_crds_path, crd_dir
from keyward.sandbox.apiserver import ApiServer

from .helpers import Kubectl, http_client


def crd_names(paths: list[Path]) -> set[str]:
    return {doc["metadata"]["name"] for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc}


PROJECT_CRDS = sorted(crd_dir().glob("*.yaml"))
ALL_CRDS = [*PROJECT_CRDS, cert_manager_crds_path()]


@pytest.fixture(scope="module")
async def project_server() -> AsyncIterator[ApiServer]:
    server = ApiServer(crd_paths=ALL_CRDS)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def project_kubectl(project_server: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    directory = tmp_path_factory.mktemp("project")
    project_server.write_kubeconfig(directory / "config")
    return Kubectl(directory / "config", directory / "cache")


def test_the_project_ships_crds_for_the_sandbox_to_install() -> None:
    assert {"tcsissuers.tcs.intel.com", "estissuers.est.mitre.org"} <= crd_names(PROJECT_CRDS)


async def test_kubectl_lists_every_installed_project_crd(project_kubectl: Kubectl) -> None:
    listed = (await project_kubectl("get", "crds", "-o", "name")).stdout.split()
    names = {entry.removeprefix("customresourcedefinition.apiextensions.k8s.io/") for entry in listed}
    assert names == crd_names(ALL_CRDS)


@pytest.mark.parametrize(
    "resource",
    [
        "tcsissuer",
        "tcsissuers",
        "tcsclusterissuers",
        "estissuer",
        "estclusterissuers",
        "csr",
        "certificaterequests",
    ],
)
async def test_kubectl_resolves_project_resource_names(project_kubectl: Kubectl, resource: str) -> None:
    done = await project_kubectl("get", resource, "-A")
    assert "No resources found" in done.stderr


async def test_project_schema_errors_read_like_kube_apiserver(project_server: ApiServer) -> None:
    issuer = {
        "apiVersion": "est.mitre.org/v1alpha1",
        "kind": "EstIssuer",
        "metadata": {"name": "x"},
        "spec": {"host": "est.example", "port": 123456, "cacert": "Zm9v"},
    }
    async with http_client(project_server) as client:
        version = (await client.get("/apis/est.mitre.org")).json()["preferredVersion"]["groupVersion"]
        issuer["apiVersion"] = version
        response = await client.post(f"/apis/{version}/namespaces/default/estissuers", json=issuer)
    assert response.status_code == 422
    assert response.json()["message"].startswith('EstIssuer.est.mitre.org "x" is invalid: ')
    assert (
        "spec.port: Invalid value: 123456: spec.port in body should be less than or equal to 65535"
        in (response.json()["message"])
    )
