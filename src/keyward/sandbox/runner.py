"""``keyward sandbox``: API emulation + cert-manager stand-in + SoftHSM2 token + operator process.

A development and demo tool: the API authenticates and authorizes like kube-apiserver (the kubeconfig it
writes is cluster-admin, as kind's is) but binds 127.0.0.1 only; objects live in memory, the token
persists in the state directory. The cert-manager stand-in acts as its own ServiceAccount
(``cert-manager/cert-manager``) with cert-manager's RBAC, bound at start, including the approval
ClusterRoles for keyward's issuer kinds. Production runs ``keyward operator`` against a real cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kr8s.asyncio

from keyward.errors import UserError
from keyward.keystore.config import HsmConfig
from keyward.keystore.softhsm import create_softhsm_store
from keyward.kube.client import ApiError, Kube
from keyward.kube.crds import cert_manager_crds_path, crd_dir
from keyward.kube.resources import NAMESPACES
from keyward.operator.settings import DEFAULT_OPERATOR_NAMESPACE
from keyward.sandbox.apiserver import ApiServer
from keyward.sandbox.apiserver.faults import FaultSpecError
from keyward.sandbox.certmanager import NAMESPACE, RBAC_PATH, SERVICE_ACCOUNT, CertManagerStandIn
from keyward.sandbox.operator_process import OperatorProcess, operator_command
from keyward.sandbox.rbac import SERVICE_ACCOUNT as OPERATOR_ACCOUNT
from keyward.sandbox.rbac import operator_roles
from keyward.statedir import prepare_private_directory

log = logging.getLogger("keyward.sandbox")


def crd_files() -> list[Path]:
    return [*sorted(crd_dir().glob("*.yaml")), cert_manager_crds_path()]


@dataclass
class SandboxOptions:
    state_dir: Path = Path(".keyward")
    port: int = 0
    kubeconfig: Path | None = None
    run_operator: bool = True
    auto_approve: bool = False
    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE
    operator_args: Sequence[str] = field(default_factory=tuple)
    faults: str = ""


def prepare_state_dir(path: Path) -> Path:
    """The state directory, checked (``keyward.statedir``): it holds the admin kubeconfig and the PINs."""
    return prepare_private_directory(path)


class Sandbox:
    def __init__(self, options: SandboxOptions) -> None:
        self.options = options
        self.state_dir = prepare_state_dir(options.state_dir)
        self.kubeconfig = (options.kubeconfig or self.state_dir / "kubeconfig").resolve()
        self.hsm_config_path = self.state_dir / "hsm.json"
        self.permission_log_path = self.state_dir / "permissions.jsonl"
        self.permission_log_path.unlink(missing_ok=True)
        try:
            self.api = ApiServer(
                host="127.0.0.1",
                port=options.port,
                crd_paths=crd_files(),
                faults=options.faults,
                permission_log_path=self.permission_log_path,
            )
        except FaultSpecError as exc:
            raise UserError(str(exc), "see `keyward sandbox --help` for the SPEC grammar") from None
        self.hsm: HsmConfig | None = None
        self.kube: Kube | None = None
        self.operator: OperatorProcess | None = None
        #: The operator's own kubeconfig: ServiceAccount keyward bound to the RBAC keyward ships.
        self.operator_kubeconfig = self.state_dir / "operator.kubeconfig"
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.hsm = await asyncio.to_thread(create_softhsm_store, self.state_dir)
        try:
            await self.api.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(
                    f"port {self.options.port} on 127.0.0.1 is already in use",
                    "pass --port with a free port, or --port 0 to pick one",
                ) from None
            raise
        self.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        self.api.write_kubeconfig(self.kubeconfig)
        self.kube = Kube(await kr8s.asyncio.api(kubeconfig=str(self.kubeconfig)))
        await self.ensure_namespace(self.options.operator_namespace)
        standin_config = self.service_account_kubeconfig(
            NAMESPACE, SERVICE_ACCOUNT, roles=RBAC_PATH, path=self.state_dir / "cert-manager.kubeconfig"
        )
        standin_kube = Kube(await kr8s.asyncio.api(kubeconfig=str(standin_config)))
        standin = CertManagerStandIn(standin_kube, auto_approve=self.options.auto_approve)
        self._tasks.append(asyncio.create_task(standin.run(), name="cert-manager stand-in"))
        self.operator_kubeconfig = self.service_account_kubeconfig(
            self.options.operator_namespace,
            OPERATOR_ACCOUNT,
            roles=operator_roles(self.options.operator_namespace),
            path=self.state_dir / "operator.kubeconfig",
        )
        if self.options.run_operator:
            self.operator = OperatorProcess(
                operator_command(
                    self.operator_kubeconfig,
                    self.hsm_config_path,
                    operator_namespace=self.options.operator_namespace,
                    extra_args=self.options.operator_args,
                ),
                log_path=self.state_dir / "operator.log",
            )
            await self.operator.start()

    def service_account_kubeconfig(
        self, namespace: str, name: str, *, path: Path | None = None, **grant: Any
    ) -> Path:
        """A kubeconfig acting as ServiceAccount ``namespace/name``, created with the RBAC ``grant``
        names bound to it (see ``ApiServer.service_account_kubeconfig``), by default
        STATE_DIR/NAMESPACE.NAME.kubeconfig. Run the operator with it to prove its shipped RBAC
        suffices (``api.permissions`` then shows what it used)."""
        target = path or self.state_dir / f"{namespace}.{name}.kubeconfig"
        return self.api.service_account_kubeconfig(target, namespace, name, **grant)

    async def ensure_namespace(self, name: str) -> None:
        assert self.kube is not None
        try:
            await self.kube.create(NAMESPACES, {"metadata": {"name": name}})
        except ApiError as exc:
            if exc.status != 409:
                raise

    async def stop(self) -> None:
        if self.operator is not None:
            await self.operator.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.api.stop()

    def banner(self) -> str:
        operator = (
            f"operator pid {self.operator.pid}, log {self.state_dir / 'operator.log'}"
            if self.operator
            else "no operator (--no-operator)"
        )
        return "\n".join(
            [
                f"keyward sandbox: Kubernetes API emulation at {self.api.url} (development use only, "
                "loopback only; RBAC enforced, the kubeconfig below is cluster-admin)",
                f"  token: SoftHSM2 store in {self.state_dir} (config {self.hsm_config_path})",
                f"  {operator}",
                "  cert-manager stand-in: "
                f"{'auto-approving' if self.options.auto_approve else 'manual approval'}"
                " (keyward sandbox approve|deny|renew NAME -n NS)",
                f"  permission log: {self.permission_log_path}",
                *([f"  faults: {self.options.faults}"] if self.options.faults else []),
                "Use it with:",
                f"  export KUBECONFIG={self.kubeconfig}",
                "  kubectl get crds",
                "Press Ctrl-C to stop.",
            ]
        )


async def serve(options: SandboxOptions) -> None:
    sandbox = Sandbox(options)
    try:
        await sandbox.start()
        print(sandbox.banner(), flush=True)
        await asyncio.Event().wait()
    finally:
        await sandbox.stop()
