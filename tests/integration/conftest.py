"""Fixtures for tests against the sandbox: API + stand-in + token once per session, an operator
process per module (tests may kill and restart it), a fresh namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from keyward.kube.client import Kube
from keyward.kube.resources import NAMESPACES
from keyward.sandbox.operator_process import OperatorProcess, operator_command
from keyward.sandbox.runner import Sandbox
from tests.integration.fault_helpers import Faults
from tests.integration.helpers import running_sandbox

OPERATOR_NAMESPACE = "keyward-system"


@pytest.fixture(scope="session")
async def sandbox(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sandbox]:
    state = tmp_path_factory.mktemp("keyward-state")
    # For kubectl subprocesses; set back when the session ends (no other layer runs against this API).
    async with running_sandbox(state) as box:
        with pytest.MonkeyPatch.context() as environment:
            environment.setenv("KUBECONFIG", str(box.kubeconfig))
            environment.setenv("KUBECACHEDIR", str(state / "kube-cache"))  # no cache shared across ports
            yield box


@pytest.fixture(scope="session")
async def kube(sandbox: Sandbox) -> Kube:
    assert sandbox.kube is not None
    return sandbox.kube


class OperatorRunner:
    """Start/stop/kill operator processes against the session's sandbox."""

    def __init__(self, sandbox: Sandbox, log_dir: Path) -> None:
        self.sandbox = sandbox
        self.log_dir = log_dir
        self.processes: list[OperatorProcess] = []

    async def start(
        self,
        *extra_args: str,
        hsm_config: Path | None = None,
        env: dict[str, str] | None = None,
        kubeconfig: Path | None = None,
    ) -> OperatorProcess:
        command = operator_command(
            # ServiceAccount keyward, bound to the RBAC keyward ships
            kubeconfig or self.sandbox.operator_kubeconfig,
            hsm_config or self.sandbox.hsm_config_path,
            operator_namespace=OPERATOR_NAMESPACE,
            extra_args=extra_args,
        )
        process = OperatorProcess(
            command, log_path=self.log_dir / f"operator-{len(self.processes)}.log", restart=False, env=env
        )
        await process.start()
        self.processes.append(process)
        return process

    async def stop_all(self) -> None:
        for process in self.processes:
            await process.stop()
        self.processes.clear()

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.log_dir.glob("operator-*.log")))


@pytest.fixture(scope="module")
async def operators(
    sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[OperatorRunner]:
    runner = OperatorRunner(sandbox, tmp_path_factory.mktemp("operator-logs"))
    try:
        yield runner
    finally:
        await runner.stop_all()


@pytest.fixture(scope="module")
async def operator(operators: OperatorRunner) -> OperatorProcess:
    """One operator process shared by a module's tests (each test has its own namespace)."""
    return await operators.start()


@pytest.fixture
def faults(sandbox: Sandbox) -> Iterator[Faults]:
    """Fault rules a test adds to the session's sandbox, removed after it."""
    added = Faults(sandbox.api.faults)
    yield added
    added.remove()


@pytest.fixture
async def namespace(kube: Kube) -> AsyncIterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    await kube.create(NAMESPACES, {"metadata": {"name": name}})
    yield name
    await kube.delete(NAMESPACES, name)
