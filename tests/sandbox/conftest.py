"""Fixtures for the sandbox API server tests: one server per session, reached over real HTTP.

Every test works in its own namespace (or with its own cluster-scoped names), so tests do not see
each other's objects although they share the server.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from keyward.sandbox.apiserver import ApiServer

from .helpers import TEST_CRDS, Kubectl, Pki, WatchStream, http_client


@pytest.fixture(scope="session")
async def api_server() -> AsyncIterator[ApiServer]:
    server = ApiServer(crd_paths=[TEST_CRDS])
    server.bookmark_interval = 0.3
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def client(api_server: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(api_server, timeout=10) as http:
        yield http


@pytest.fixture
async def namespace(client: httpx.AsyncClient) -> str:
    """A fresh namespace for one test."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    response = await client.post("/api/v1/namespaces", json={"metadata": {"name": name}})
    assert response.status_code == 201, response.text
    return name


@pytest.fixture
def watch(client: httpx.AsyncClient) -> Callable[..., WatchStream]:
    def open_watch(path: str, headers: dict[str, str] | None = None, **params: str) -> WatchStream:
        return WatchStream(client, path, headers, **params)

    return open_watch


@pytest.fixture(scope="session")
def pki() -> Pki:
    return Pki()


@pytest.fixture(scope="session")
def kubeconfig(api_server: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kube") / "config"
    api_server.write_kubeconfig(path)
    return path


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(kubeconfig, tmp_path_factory.mktemp("kubectl-cache"))
