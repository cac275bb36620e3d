"""The real kubectl against the sandbox, with the kubeconfig it writes (kube-apiserver.md "Discovery").

kubectl here is Google Cloud SDK's dispatcher, which picks the kubectl 1.32 client from the
server's version. No ``--validate=false`` anywhere: the sandbox's OpenAPI v3 stubs make kubectl
leave field validation to the server.
"""

from __future__ import annotations

import base64
import json
import re

import httpx

from .helpers import CSRS, WIDGETS, Kubectl, Pki, unique

MERGE = {"Content-Type": "application/merge-patch+json"}

MANIFEST = """
apiVersion: example.com/v1
kind: Widget
metadata:
  name: {name}
spec:
  host: {host}
"""


def rows(output: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in output.strip().splitlines()]


async def test_kubectl_create_from_file_and_get_prints_printer_columns(
    kubectl: Kubectl, client: httpx.AsyncClient, namespace: str
) -> None:
    created = await kubectl(
        "create", "-n", namespace, "-f", "-", stdin=MANIFEST.format(name="w", host="a.example")
    )
    assert created.stdout.strip() == "widget.example.com/w created"
    conditions = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    await client.patch(WIDGETS.format(ns=namespace) + "/w/status", json=conditions, headers=MERGE)
    table = rows((await kubectl("get", "widgets", "-n", namespace)).stdout)
    assert table[0] == ["NAME", "HOST", "PORT", "READY", "AGE"]
    assert table[1][:4] == ["w", "a.example", "443", "True"]
    wide = rows((await kubectl("get", "wd", "-n", namespace, "-o", "wide")).stdout)
    assert wide[0] == ["NAME", "HOST", "PORT", "READY", "MODE", "AGE"]


async def test_kubectl_server_side_validation_errors_name_the_field(kubectl: Kubectl, namespace: str) -> None:
    manifest = MANIFEST.format(name="bad", host="a.example") + "  port: 123456\n  surprise: 1\n"
    failed = await kubectl("create", "-n", namespace, "-f", "-", stdin=manifest, ok=False)
    assert failed.returncode != 0
    assert 'unknown field "spec.surprise"' in failed.stderr


async def test_kubectl_apply_creates_then_configures(kubectl: Kubectl, namespace: str) -> None:
    first = await kubectl(
        "apply", "-n", namespace, "-f", "-", stdin=MANIFEST.format(name="w", host="a.example")
    )
    assert "widget.example.com/w created" in first.stdout
    second = await kubectl(
        "apply", "-n", namespace, "-f", "-", stdin=MANIFEST.format(name="w", host="b.example")
    )
    assert "widget.example.com/w configured" in second.stdout
    host = await kubectl("get", "widget", "w", "-n", namespace, "-o", "jsonpath={.spec.host}")
    assert host.stdout == "b.example"
    server_side = await kubectl(
        "apply",
        "--server-side",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=MANIFEST.format(name="w", host="c.example"),
    )
    assert "serverside-applied" in server_side.stdout


async def test_kubectl_patch_status_subresource(kubectl: Kubectl, namespace: str) -> None:
    await kubectl("create", "-n", namespace, "-f", "-", stdin=MANIFEST.format(name="w", host="a.example"))
    patch = json.dumps({"status": {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]}})
    patched = await kubectl(
        "patch", "widget", "w", "-n", namespace, "--subresource=status", "--type=merge", "-p", patch
    )
    assert patched.stdout.strip() == "widget.example.com/w patched"
    phase = await kubectl("get", "widget", "w", "-n", namespace, "-o", "jsonpath={.status.phase}")
    assert phase.stdout == "Ready"
    waited = await kubectl("wait", "-n", namespace, "--for=condition=Ready", "widget/w", "--timeout=10s")
    assert "condition met" in waited.stdout


async def test_kubectl_describe_and_delete_a_custom_resource(kubectl: Kubectl, namespace: str) -> None:
    await kubectl("create", "-n", namespace, "-f", "-", stdin=MANIFEST.format(name="w", host="a.example"))
    described = (await kubectl("describe", "widget", "w", "-n", namespace)).stdout
    assert re.search(r"^Name:\s+w$", described, re.M)
    assert re.search(r"^\s+Host:\s+a\.example$", described, re.M)
    deleted = await kubectl("delete", "widget", "w", "-n", namespace)
    assert deleted.stdout.strip() == 'widget.example.com "w" deleted'
    missing = await kubectl("get", "widget", "w", "-n", namespace, ok=False)
    assert 'widgets.example.com "w" not found' in missing.stderr


async def test_kubectl_certificate_approve_and_deny(
    kubectl: Kubectl, client: httpx.AsyncClient, pki: Pki
) -> None:
    approved_name, denied_name = unique("csr"), unique("csr")
    for name in (approved_name, denied_name):
        manifest = json.dumps(pki.csr_object(name, expirationSeconds=7200))
        await kubectl("create", "-f", "-", stdin=manifest)
    await kubectl("certificate", "approve", approved_name)
    await kubectl("certificate", "deny", denied_name)
    approved = (await client.get(f"{CSRS}/{approved_name}")).json()["status"]["conditions"]
    assert [(c["type"], c["reason"]) for c in approved] == [("Approved", "KubectlApprove")]
    denied = (await client.get(f"{CSRS}/{denied_name}")).json()["status"]["conditions"]
    assert [(c["type"], c["reason"]) for c in denied] == [("Denied", "KubectlDeny")]
    table = rows((await kubectl("get", "csr", approved_name, denied_name)).stdout)
    assert table[0] == ["NAME", "AGE", "SIGNERNAME", "REQUESTOR", "REQUESTEDDURATION", "CONDITION"]
    assert [(r[0], r[2], r[3], r[4], r[5]) for r in table[1:]] == [
        (approved_name, "example.com/sandbox-test", "kubernetes-admin", "120m", "Approved"),
        (denied_name, "example.com/sandbox-test", "kubernetes-admin", "120m", "Denied"),
    ]
    certificate = base64.b64encode(pki.certificate_pem()).decode()
    await client.patch(
        f"{CSRS}/{approved_name}/status", json={"status": {"certificate": certificate}}, headers=MERGE
    )
    issued = rows((await kubectl("get", "certificatesigningrequests", approved_name)).stdout)
    assert issued[1][-1] == "Approved,Issued"
    described = (await kubectl("describe", "csr", approved_name)).stdout
    assert re.search(r"Requesting User:\s+kubernetes-admin", described)
    assert re.search(r"Common Name:\s+demo", described)


async def test_kubectl_get_crds_lists_installed_crds(kubectl: Kubectl) -> None:
    table = rows((await kubectl("get", "crds")).stdout)
    assert table[0] == ["NAME", "CREATED AT"]
    assert {"widgets.example.com", "gadgets.example.com"} <= {row[0] for row in table[1:]}


async def test_kubectl_typed_create_commands_work(kubectl: Kubectl) -> None:
    namespace = unique("typed")
    await kubectl("create", "namespace", namespace)
    await kubectl("create", "secret", "generic", "s", "-n", namespace, "--from-literal=key=value")
    await kubectl("create", "configmap", "c", "-n", namespace, "--from-literal=key=value")
    secret = json.loads((await kubectl("get", "secret", "s", "-n", namespace, "-o", "json")).stdout)
    assert base64.b64decode(secret["data"]["key"]) == b"value"
    table = rows((await kubectl("get", "secrets,configmaps", "-n", namespace)).stdout)
    assert table[1][:3] == ["secret/s", "Opaque", "1"]
    await kubectl("delete", "namespace", namespace)


async def test_kubectl_resolves_resource_names_and_lists_api_resources(
    kubectl: Kubectl, namespace: str
) -> None:
    for name in ("widgets", "widget", "wd", "widgets.example.com", "widgets.v1beta1.example.com", "gizmos"):
        assert (await kubectl("get", name, "-n", namespace)).returncode == 0
    resources = (await kubectl("api-resources")).stdout
    assert re.search(r"^certificatesigningrequests\s+csr\s+certificates.k8s.io/v1\s+false", resources, re.M)
    assert re.search(r"^widgets\s+wd\s+example.com/v1\s+true\s+Widget$", resources, re.M)
