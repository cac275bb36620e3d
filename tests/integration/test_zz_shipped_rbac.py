"""The operator runs, in every integration test, as ServiceAccount keyward bound to exactly the RBAC keyward
ships (deploy/keyward.yaml). The sandbox logged every permission it used: none may lie outside the shipped
role, and — once the whole integration suite ran — the role may grant nothing the suite never needed.

This module runs last (its name sorts last in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyward.sandbox.apiserver.bootstrap import CLUSTER_ROLES
from keyward.sandbox.rbac import SERVICE_ACCOUNT, operator_roles, rules_of
from keyward.sandbox.runner import Sandbox
from tests.integration.conftest import OPERATOR_NAMESPACE

OPERATOR = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{SERVICE_ACCOUNT}"
HERE = Path(__file__).parent
#: What kube-apiserver grants every authenticated user (discovery, version, health): not ours to ship.
EVERYONE = [
    rule
    for role in CLUSTER_ROLES
    if role["metadata"]["name"] in ("system:discovery", "system:basic-user", "system:public-info-viewer")
    for rule in role["rules"]
]


def test_the_operator_used_only_what_the_shipped_role_grants(sandbox: Sandbox) -> None:
    rules = rules_of(operator_roles(OPERATOR_NAMESPACE))
    used = sandbox.api.permissions.entries(OPERATOR)
    assert used, "the operators of this session ran as the ServiceAccount"
    outside = sandbox.api.permissions.not_granted_by([*rules, *EVERYONE], user=OPERATOR)
    assert outside == [], f"the operator needed permissions the shipped role lacks: {outside}"


def test_the_shipped_role_grants_nothing_the_suite_never_needed(
    sandbox: Sandbox, request: pytest.FixtureRequest
) -> None:
    ran = {Path(str(item.path)).name for item in request.session.items}
    modules = {path.name for path in HERE.glob("test_*.py")}
    if not modules <= ran:
        pytest.skip(f"judged only when all of tests/integration runs ({len(modules - ran)} modules did not)")
    rules = rules_of(operator_roles(OPERATOR_NAMESPACE))
    unused = sandbox.api.permissions.unused_by(rules, user=OPERATOR)
    assert unused == [], f"the shipped role grants what no test needed: {unused}"
