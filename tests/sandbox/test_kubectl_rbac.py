"""The real kubectl against a strict sandbox: tokens, RBAC, can-i, a deployment manifest, approval.

Everything here is what a user types; kubectl's typed commands send protobuf bodies (ServiceAccount,
TokenRequest, SelfSubjectAccessReview, Role, RoleBinding, CSR approval), its apply sends JSON.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from keyward.sandbox.apiserver import ApiServer

from .helpers import Kubectl, Pki, unique

DEPLOYMENT = """
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: keyward
  namespace: {ns}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {ns}:keyward
rules:
  - apiGroups: ["cert-manager.io"]
    resources: ["certificaterequests"]
    verbs: ["get", "list", "watch"]
  - apiGroups: ["cert-manager.io"]
    resources: ["certificaterequests/status"]
    verbs: ["patch"]
  - apiGroups: ["certificates.k8s.io"]
    resources: ["signers"]
    resourceNames: ["tcsissuer.tcs.intel.com/*"]
    verbs: ["sign"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {ns}:keyward
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {ns}:keyward
subjects:
  - kind: ServiceAccount
    name: keyward
    namespace: {ns}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: leader-election
  namespace: {ns}
rules:
  - apiGroups: ["coordination.k8s.io"]
    resources: ["leases"]
    verbs: ["get", "create", "update"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: leader-election
  namespace: {ns}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: leader-election
subjects:
  - kind: ServiceAccount
    name: keyward
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: keyward
  namespace: {ns}
  labels: {{app.kubernetes.io/name: keyward}}
spec:
  selector:
    matchLabels: {{app.kubernetes.io/name: keyward}}
  template:
    metadata:
      labels: {{app.kubernetes.io/name: keyward}}
    spec:
      serviceAccountName: keyward
      containers:
        - name: operator
          image: keyward:latest
          args: ["operator"]
          ports: [{{name: metrics, containerPort: 9090}}]
---
apiVersion: v1
kind: Service
metadata:
  name: keyward-metrics
  namespace: {ns}
spec:
  selector: {{app.kubernetes.io/name: keyward}}
  ports: [{{name: metrics, port: 9090, targetPort: metrics}}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: keyward
  namespace: {ns}
spec:
  minAvailable: 1
  selector:
    matchLabels: {{app.kubernetes.io/name: keyward}}
"""

SERVICE_MONITOR_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names:
    kind: ServiceMonitor
    plural: servicemonitors
    singular: servicemonitor
    listKind: ServiceMonitorList
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"""


AsAccount = Callable[..., Kubectl]
UPSTREAM_MONITOR = Path("/work/shared/upstream/tcs/config/prometheus/monitor.yaml")


def monitor_manifest(namespace: str) -> str:
    """The TCS seed's ServiceMonitor (or a minimal one where the seed is not at hand), in ``namespace``."""
    if UPSTREAM_MONITOR.exists():
        return UPSTREAM_MONITOR.read_text().replace("namespace: system", f"namespace: {namespace}")
    return "\n".join(
        [
            "apiVersion: monitoring.coreos.com/v1",
            "kind: ServiceMonitor",
            f"metadata: {{name: m, namespace: {namespace}}}",
        ]
    )


@pytest.fixture
def as_account(api_server: ApiServer, tmp_path: Path) -> AsAccount:
    """kubectl with a kubeconfig of a new ServiceAccount holding the RBAC given (see ``grant``)."""

    def make(namespace: str, name: str, **grant: Any) -> Kubectl:
        path = tmp_path / f"{name}.kubeconfig"
        return Kubectl(api_server.service_account_kubeconfig(path, namespace, name, **grant), tmp_path / name)

    return make


async def test_kubectl_create_sa_and_token_then_the_token_acts_as_the_account(
    kubectl: Kubectl, namespace: str
) -> None:
    assert (await kubectl("create", "serviceaccount", "robot", "-n", namespace)).stdout.strip() == (
        "serviceaccount/robot created"
    )
    token = (await kubectl("create", "token", "robot", "-n", namespace, "--duration", "15m")).stdout.strip()
    denied = await kubectl("--token", token, "get", "secrets", "-n", namespace, ok=False)
    assert denied.returncode != 0
    assert (
        f'secrets is forbidden: User "system:serviceaccount:{namespace}:robot" cannot list resource '
        f'"secrets" in API group "" in the namespace "{namespace}"'
    ) in denied.stderr
    await kubectl("create", "role", "reader", "-n", namespace, "--verb=get,list", "--resource=secrets")
    await kubectl(
        "create",
        "rolebinding",
        "reader",
        "-n",
        namespace,
        "--role=reader",
        f"--serviceaccount={namespace}:robot",
    )
    allowed = await kubectl("--token", token, "get", "secrets", "-n", namespace)
    assert "No resources found" in allowed.stderr
    short = await kubectl("create", "token", "robot", "-n", namespace, "--duration", "5m", ok=False)
    assert "may not specify a duration less than 10 minutes" in short.stderr
    await kubectl("delete", "serviceaccount", "robot", "-n", namespace)
    gone = await kubectl("--token", token, "get", "secrets", "-n", namespace, ok=False)
    assert "You must be logged in to the server" in gone.stderr


async def test_kubectl_auth_can_i_answers_for_the_account_and_for_impersonated_users(
    kubectl: Kubectl, as_account: AsAccount, namespace: str
) -> None:
    account = as_account(
        namespace,
        "checker",
        rules=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
    )
    assert (await account("auth", "can-i", "list", "configmaps", "-n", namespace)).stdout.strip() == "yes"
    refused = await account("auth", "can-i", "delete", "configmaps", "-n", namespace, ok=False)
    assert refused.returncode == 1 and refused.stdout.strip() == "no"
    assert (
        await account("auth", "can-i", "list", "configmaps", "-n", "default", ok=False)
    ).stdout.strip() == "no"
    impersonated = await kubectl(
        "auth",
        "can-i",
        "get",
        "configmaps",
        "-n",
        namespace,
        "--as",
        f"system:serviceaccount:{namespace}:checker",
    )
    assert impersonated.stdout.strip() == "yes"
    listing = (await account("auth", "can-i", "--list", "-n", namespace)).stdout
    assert "configmaps" in listing and "selfsubjectaccessreviews.authorization.k8s.io" in listing
    who = await account("auth", "whoami", ok=False)
    assert who.returncode != 0, "SelfSubjectReview is not served (kubectl says so)"


async def test_kubectl_apply_of_a_deployment_manifest_creates_every_object(
    kubectl: Kubectl, as_account: AsAccount
) -> None:
    ns = f"deploy-{uuid.uuid4().hex[:8]}"
    applied = await kubectl("apply", "-f", "-", stdin=DEPLOYMENT.format(ns=ns))
    for line in (
        f"namespace/{ns} created",
        "serviceaccount/keyward created",
        f"clusterrole.rbac.authorization.k8s.io/{ns}:keyward created",
        f"clusterrolebinding.rbac.authorization.k8s.io/{ns}:keyward created",
        "role.rbac.authorization.k8s.io/leader-election created",
        "rolebinding.rbac.authorization.k8s.io/leader-election created",
        "deployment.apps/keyward created",
        "service/keyward-metrics created",
        "poddisruptionbudget.policy/keyward created",
    ):
        assert line in applied.stdout
    again = await kubectl("apply", "-f", "-", stdin=DEPLOYMENT.format(ns=ns))
    assert "deployment.apps/keyward unchanged" in again.stdout
    listed = (
        await kubectl("get", "deploy,svc,pdb,sa,role,rolebinding", "-n", ns, "-o", "name")
    ).stdout.split()
    assert {
        "deployment.apps/keyward",
        "service/keyward-metrics",
        "poddisruptionbudget.policy/keyward",
    } <= set(listed)
    service = json.loads((await kubectl("get", "svc", "keyward-metrics", "-n", ns, "-o", "json")).stdout)
    assert service["spec"]["clusterIP"].startswith("10.") and service["spec"]["ports"][0]["protocol"] == "TCP"
    deployment = json.loads((await kubectl("get", "deploy", "keyward", "-n", ns, "-o", "json")).stdout)
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    as_operator = ("--as", f"system:serviceaccount:{ns}:keyward")
    assert (
        await kubectl("auth", "can-i", "create", "leases", "-n", ns, *as_operator)
    ).stdout.strip() == "yes"
    assert (
        await kubectl("auth", "can-i", "create", "leases", "-n", "default", *as_operator, ok=False)
    ).stdout.strip() == "no"
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{ns}:keyward",
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"],
            "resourceAttributes": {
                "group": "certificates.k8s.io",
                "resource": "signers",
                "verb": "sign",
                "name": "tcsissuer.tcs.intel.com/*",
            },
        },
    }
    answer = await kubectl("create", "-f", "-", "-o", "jsonpath={.status.allowed}", stdin=json.dumps(review))
    assert answer.stdout == "true"


async def test_kubectl_apply_refuses_an_invalid_deployment_naming_the_field(
    kubectl: Kubectl, namespace: str
) -> None:
    bad = DEPLOYMENT.split("---")[6].replace(
        "labels: {{app.kubernetes.io/name: keyward}}\n    spec:", "labels: {{app: other}}\n    spec:"
    )
    failed = await kubectl("apply", "-f", "-", stdin=bad.format(ns=namespace), ok=False)
    assert failed.returncode != 0
    assert "spec.template.metadata.labels: Invalid value" in failed.stderr
    assert "`selector` does not match template `labels`" in failed.stderr


async def test_service_monitors_exist_only_once_their_crd_is_created(
    kubectl: Kubectl, namespace: str
) -> None:
    manifest = monitor_manifest(namespace)
    before = await kubectl("apply", "-f", "-", stdin=manifest, ok=False)
    assert before.returncode != 0  # kube: no matches for kind; the sandbox fails kubectl's validation first
    assert (await kubectl("get", "servicemonitors", "-A", ok=False)).returncode != 0
    await kubectl("apply", "-f", "-", stdin=SERVICE_MONITOR_CRD)
    after = await kubectl("apply", "-f", "-", stdin=manifest)
    assert "servicemonitor.monitoring.coreos.com" in after.stdout and "created" in after.stdout


async def test_kubectl_certificate_approve_without_approve_on_the_signer_is_forbidden(
    kubectl: Kubectl, as_account: AsAccount, pki: Pki
) -> None:
    name = unique("csr")
    await kubectl("create", "-f", "-", stdin=json.dumps(pki.csr_object(name)))
    approver = as_account(
        f"approver-{uuid.uuid4().hex[:6]}",
        "approver",
        cluster_rules=[
            {
                "apiGroups": ["certificates.k8s.io"],
                "resources": ["certificatesigningrequests"],
                "verbs": ["get"],
            },
            {
                "apiGroups": ["certificates.k8s.io"],
                "resources": ["certificatesigningrequests/approval"],
                "verbs": ["update"],
            },
        ],
    )
    refused = await approver("certificate", "approve", name, ok=False)
    assert refused.returncode != 0
    assert "Forbidden" in refused.stderr
    assert (
        'user not permitted to approve requests with signerName "example.com/sandbox-test"' in refused.stderr
    )
    csr = json.loads((await kubectl("get", "csr", name, "-o", "json")).stdout)
    assert not (csr.get("status") or {}).get("conditions")
    assert (await kubectl("certificate", "approve", name)).returncode == 0, "the admin (system:masters) may"


async def test_the_admin_kubeconfig_holds_a_token_of_system_masters(
    kubectl: Kubectl, kubeconfig: Path
) -> None:
    config = (await kubectl("config", "view", "--raw", "-o", "json")).stdout
    user = json.loads(config)["users"][0]["user"]
    assert user["token"]
    assert base64.b64decode(
        json.loads(config)["clusters"][0]["cluster"]["certificate-authority-data"]
    ).startswith(b"-----BEGIN CERTIFICATE-----")
    assert (await kubectl("auth", "can-i", "*", "*")).stdout.strip() == "yes"
