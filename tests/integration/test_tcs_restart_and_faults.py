"""Operator restarts, deletion while it is down, and token faults with recovery.

No module-wide operator here: each test runs its own, scoped to its namespace, so that it can be down.
"""

from __future__ import annotations

import json
from pathlib import Path

from keyward.kube.client import Kube
from keyward.kube.resources import SECRETS, TCS_ISSUERS
from keyward.sandbox.runner import Sandbox
from tests.integration.conftest import OperatorRunner
from tests.integration.helpers import (
    ca_from_secret,
    create_issuer,
    ready_condition,
    token_objects,
    wait_ready,
)
from tests.support.tools import object_blocks
from tests.support.waiting import wait_for


async def _gone(kube: Kube, name: str, namespace: str) -> bool:
    return await kube.find(TCS_ISSUERS, name, namespace) is None


async def test_restart_keeps_the_ca_and_deletion_while_down_completes_later(
    kube: Kube, sandbox: Sandbox, operators: OperatorRunner, namespace: str
) -> None:
    first = await operators.start("--namespace", namespace)
    await create_issuer(kube, "keep", namespace, {"secretName": "keep-cert"})
    await create_issuer(kube, "gone", namespace, {"secretName": "gone-cert"})
    await wait_ready(kube, "keep", namespace)
    await wait_ready(kube, "gone", namespace)
    before, _ = await ca_from_secret(kube, "keep-cert", namespace)
    await first.kill()  # a crash: no cleanup

    await kube.delete(SECRETS, "keep-cert", namespace)
    await kube.delete(TCS_ISSUERS, "gone", namespace)
    gone = await kube.find(TCS_ISSUERS, "gone", namespace)
    assert gone is not None and gone["metadata"].get("deletionTimestamp"), "the finalizer holds it"

    second = await operators.start("--namespace", namespace)
    try:
        after, _ = await ca_from_secret(kube, "keep-cert", namespace)
        assert after["data"]["tls.crt"] == before["data"]["tls.crt"], "the same CA, byte for byte"
        await wait_for(lambda: _gone(kube, "gone", namespace), what="finalizer ran after the restart")
        assert await kube.find(SECRETS, "gone-cert", namespace) is None
        assert sandbox.hsm is not None
        assert (
            object_blocks(await token_objects(sandbox.hsm), f"tcsissuer.tcs.intel.com/{namespace}.gone") == []
        )
    finally:
        await second.stop()


#: A TCS issuer waiting for a fix is checked again within a second (the default waits up to 30 s,
#: growing from 1 s): the fix is still noticed without a restart, only sooner.
RECHECK_AT_ONCE = {"KEYWARD_TCS_RECHECK_FAILED": "1"}


def _write_hsm(path: Path, sandbox: Sandbox, **changes: str) -> Path:
    data = json.loads(sandbox.hsm_config_path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path


async def _fault_then_recovery(
    kube: Kube,
    sandbox: Sandbox,
    operators: OperatorRunner,
    namespace: str,
    tmp_path: Path,
    fault: dict[str, str],
    expect: str,
) -> None:
    hsm = _write_hsm(tmp_path / "hsm.json", sandbox, **fault)
    process = await operators.start(
        "--namespace", namespace, "--wait-for-token", hsm_config=hsm, env=RECHECK_AT_ONCE
    )
    try:
        await create_issuer(kube, "faulty", namespace, {"secretName": "faulty-cert"})
        issuer = await wait_ready(kube, "faulty", namespace, status="False", reason="TokenUnavailable")
        message = ready_condition(issuer)["message"]
        assert expect in message
        secret_values = json.loads(sandbox.hsm_config_path.read_text())
        for secret in (secret_values["userPin"], secret_values["soPin"], fault.get("userPin", "\0")):
            assert secret not in json.dumps(issuer)
        _write_hsm(hsm, sandbox)  # the operator's admin fixes the config file
        await wait_ready(kube, "faulty", namespace, timeout=90)
        assert process.process is not None and process.process.returncode is None, "no restart needed"
        logs = operators.logs()
        assert secret_values["userPin"] not in logs and secret_values["soPin"] not in logs
    finally:
        await process.stop()


async def test_wrong_pin_turns_issuer_not_ready_then_recovers(
    kube: Kube, sandbox: Sandbox, operators: OperatorRunner, namespace: str, tmp_path: Path
) -> None:
    await _fault_then_recovery(kube, sandbox, operators, namespace, tmp_path, {"userPin": "000000000"}, "PIN")


async def test_missing_module_turns_issuer_not_ready_then_recovers(
    kube: Kube, sandbox: Sandbox, operators: OperatorRunner, namespace: str, tmp_path: Path
) -> None:
    await _fault_then_recovery(
        kube,
        sandbox,
        operators,
        namespace,
        tmp_path,
        {"module": "/nonexistent/libpkcs11.so"},
        "/nonexistent/libpkcs11.so",
    )
