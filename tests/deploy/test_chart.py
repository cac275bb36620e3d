"""The Helm chart deploy/charts/keyward, rendered by helm itself and checked as Kubernetes would.

Every rendering (defaults and every documented option, tests/deploy/options.py) is validated object by
object with kubernetes-validate --strict for the oldest Kubernetes the chart supports and the newest that
kubernetes-validate knows; the Prometheus Operator's kinds are validated against their own schema in
test_monitoring.py.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from scripts import helm

from keyward import __version__
from keyward.cli.main import cli
from keyward.host import ListenAddress
from keyward.issuers import signer_names
from keyward.kube import crds
from tests.deploy.charts import (
    CHART,
    CHART_META,
    MONITORING_KINDS,
    VALUES,
    Obj,
    container,
    ensure_helm,
    leaf_paths,
    one,
    options_set,
    pod_spec,
    render,
    render_error,
)
from tests.deploy.options import ALERTS, MIN_KUBE, OPTION_SETS

LATEST_KUBE = kubernetes_validate.latest_version()
CHART_README = (CHART / "README.md").read_text()


@pytest.fixture(scope="module", autouse=True)
def _helm() -> None:
    ensure_helm()


def validate(docs: list[Obj], kube_version: str) -> list[str]:
    """kubernetes-validate --strict on every object Kubernetes has a schema for; the failures."""
    problems = []
    for doc in docs:
        if doc["kind"] in MONITORING_KINDS:
            continue  # monitoring.coreos.com: not Kubernetes' schema; see test_monitoring.py
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{doc['kind']} {doc['metadata'].get('name')}: {exc.message} at {list(exc.path)}")
    return problems


def test_helm_lint_strict_passes() -> None:
    done = helm.helm("lint", "--strict", str(CHART), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


def test_chart_and_image_versions_are_keywards() -> None:
    assert CHART_META["version"] == __version__
    assert CHART_META["appVersion"] == __version__
    image = container(render())["image"]
    assert image == f"localhost/keyward:{__version__}"  # what `make image` builds


@pytest.mark.parametrize("name", sorted(OPTION_SETS))
def test_every_option_set_renders_valid_kubernetes_objects(name: str, tmp_path: Path) -> None:
    values, oldest = OPTION_SETS[name]
    for version in (oldest, LATEST_KUBE):
        docs = render(values, tmp_path=tmp_path, kube_version=version)
        assert "Deployment" in {d["kind"] for d in docs}
        assert validate(docs, version) == [], f"{name} on Kubernetes {version}"


def test_option_sets_set_every_value_and_the_readme_documents_each() -> None:
    every = leaf_paths(VALUES)
    set_somewhere = set().union(*(options_set(values, every) for values, _ in OPTION_SETS.values()))
    assert every - set_somewhere == set(), "values no option set renders"
    # (values the chart does not have are refused by values.schema.json, so every set above rendered)
    alert_fields = {p for p in every if p.startswith("metrics.prometheusRule.alerts.")}
    undocumented = sorted(p for p in every - alert_fields if f"`{p}`" not in CHART_README)
    assert undocumented == [], "values missing from the chart's README"
    assert "`metrics.prometheusRule.alerts.<alert>.enabled`" in CHART_README
    assert all(f"`{alert}`" in CHART_README for alert in ALERTS)


def test_values_schema_refuses_mistakes_with_the_field_named(tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"token": {"storage": "hostPath"}}, "token.storage"),
        ({"replica": 2}, "replica"),
        ({"image": {"digest": "latest"}}, "image.digest"),
        ({"est": {"issuer": "ClusterIssuer/ca"}}, "est.issuer"),
        ({"metrics": {"serviceMonitor": {"interval": "30 seconds"}}}, "metrics.serviceMonitor.interval"),
        ({"operator": {"watchNamespaces": ["Team_A"]}}, "operator.watchNamespaces"),
    ]
    for values, field in cases:
        message = render_error(values, tmp_path)
        assert field in message, f"{values}: {message}"


def test_combinations_that_cannot_work_are_refused_with_the_fix(tmp_path: Path) -> None:
    assert "ReadWriteMany" in render_error({"replicas": 2}, tmp_path)
    assert "pkcs11Module.image.reference" in render_error({"pkcs11Module": {"source": "image"}}, tmp_path)
    assert "Kubernetes 1.31" in render_error(
        {"pkcs11Module": {"source": "image", "image": {"reference": "r/m:1"}}},
        tmp_path,
        kube_version="1.30.0",
    )
    assert "est.hostnames" in render_error({"est": {"issuer": "TCSClusterIssuer/ca"}}, tmp_path)
    assert "not both" in render_error({"podDisruptionBudget": {"minAvailable": 1}}, tmp_path)
    assert "serviceAccount.name" in render_error({"serviceAccount": {"create": False}}, tmp_path)
    assert "metrics.service.enabled" in render_error(
        {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}, tmp_path
    )
    # the chart's floor is kubeVersion in Chart.yaml
    assert "kubeVersion" in render_error({}, tmp_path, kube_version="1.27.0")
    assert CHART_META["kubeVersion"] == f">={MIN_KUBE}-0"


def test_pod_runs_unprivileged_with_a_read_only_root_and_runtime_default_seccomp() -> None:
    docs = render()
    pod = pod_spec(docs)
    operator = container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
    assert pod["securityContext"]["fsGroup"] == 10001  # the token volume is writable by it
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = operator["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    writable = {m["mountPath"] for m in operator["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/var/lib/softhsm/tokens", "/tmp"}


def test_probes_point_at_the_health_port_and_services_at_metrics_and_est() -> None:
    docs = render()
    operator = container(docs)
    ports = {p["name"]: p["containerPort"] for p in operator["ports"]}
    assert ports == {"health": 8083, "metrics": 8082, "est": 8443}
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert operator["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert operator["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    selector = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    for service, port_name, port in (("keyward-metrics", "metrics", 8082), ("keyward-est", "est", 443)):
        spec = one(docs, "Service", service)["spec"]
        assert spec["selector"] == selector, service
        assert [(p["name"], p["port"], p["targetPort"]) for p in spec["ports"]] == [
            (port_name, port, port_name)
        ]


@pytest.mark.parametrize("name", sorted(OPTION_SETS))
def test_the_operator_accepts_the_containers_arguments_and_environment(name: str, tmp_path: Path) -> None:
    """What `keyward operator` makes of the Deployment's args and env, checked by its own parser."""
    values, _ = OPTION_SETS[name]
    docs = render(values, tmp_path=tmp_path)
    operator = container(docs)
    assert operator["args"][0] == "operator"
    command = cli.commands["operator"]
    context = command.make_context("operator", list(operator["args"][1:]))
    params = context.params
    env = {e["name"]: e.get("valueFrom") for e in operator.get("env", [])}
    ports = {p["name"]: p["containerPort"] for p in operator["ports"]}
    assert ListenAddress.parse(str(params["health_listen"]), what="health").port == ports["health"]
    assert ListenAddress.parse(str(params["est_listen"]), what="EST").port == ports["est"]
    assert ListenAddress.parse(str(params["metrics_listen"]), what="metrics").port == ports["metrics"]
    assert bool(params["leader_elect"]) is values.get("leaderElection", {}).get("enabled", True)
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}, (
        "the replica's name, for the Lease"
    )
    assert params["operator_namespace"] == helm.MANIFEST_NAMESPACE
    mounts = {m["name"]: m["mountPath"] for m in operator["volumeMounts"]}
    secret = next(v["secret"] for v in pod_spec(docs)["volumes"] if v["name"] == "hsm-config")
    assert params["hsm_config_file"] == f"{mounts['hsm-config']}/{secret['items'][0]['path']}"
    assert params["namespaces"] == tuple(values.get("operator", {}).get("watchNamespaces", ()))


def test_the_hsm_secret_holds_a_tcs_config_with_random_pins_unless_given_and_keeps_them(
    tmp_path: Path,
) -> None:
    def config(docs: list[Obj]) -> dict[str, Any]:
        data = one(docs, "Secret", "keyward-hsm")["data"]["config.json"]
        return dict(json.loads(base64.b64decode(data)))

    first, second = config(render()), config(render())
    assert first["tokenLabel"] == "SgxOperator" and "module" not in first
    assert len(first["userPin"]) >= 24 and len(first["soPin"]) >= 24
    assert first["userPin"] != second["userPin"], "PINs must not be a constant of the chart"
    given = config(render(OPTION_SETS["given-pins"][0], tmp_path=tmp_path))
    assert (given["userPin"], given["soPin"]) == ("user-pin-from-values", "so-pin-from-values")
    secret = one(render(), "Secret", "keyward-hsm")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # an upgrade that cannot read the installed Secret back stops: new PINs would lock the token
    assert "hsm.existingSecret" in render_error({}, tmp_path, extra=["--is-upgrade"])
    assert one(render(settings=["hsm.config.userPin=u", "hsm.config.soPin=s"]), "Secret", "keyward-hsm")
    assert [d["kind"] for d in render(OPTION_SETS["bring-your-own"][0], tmp_path=tmp_path)].count(
        "Secret"
    ) == 0


def test_token_volume_by_topology(tmp_path: Path) -> None:
    def volume(name: str) -> Obj:
        volumes = pod_spec(render(OPTION_SETS[name][0], tmp_path=tmp_path))["volumes"]
        return {v["name"]: v for v in volumes}

    default = render()
    claim = one(default, "PersistentVolumeClaim", "keyward-tokens")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert one(default, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}  # RWO: one pod at a time
    shared = render(OPTION_SETS["shared-token-rwx"][0], tmp_path=tmp_path)
    assert one(shared, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]
    assert one(shared, "Deployment")["spec"]["strategy"] == {"type": "RollingUpdate"}
    assert "tokens" not in volume("network-hsm-hostpath")
    assert volume("network-hsm-hostpath")["pkcs11-module"]["hostPath"]["path"] == "/usr/lib/vendor-hsm"
    assert volume("module-image-volume")["pkcs11-module"]["image"]["reference"].endswith("pkcs11-module:1.0")
    assert volume("sgx-per-pod")["tokens"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Mi"}
    assert volume("bring-your-own")["tokens"]["persistentVolumeClaim"]["claimName"] == "ca-tokens"


def test_sgx_requests_the_device_plugin_resources_and_the_quote_provider(tmp_path: Path) -> None:
    docs = render(OPTION_SETS["sgx-per-pod"][0], tmp_path=tmp_path)
    resources = container(docs)["resources"]
    for bound in ("requests", "limits"):
        assert resources[bound]["sgx.intel.com/epc"] == "1Mi"
        assert resources[bound]["sgx.intel.com/enclave"] == 1
        assert resources[bound]["sgx.intel.com/provision"] == 1
    assert resources["limits"]["memory"] == "512Mi"  # the defaults stay
    template = one(docs, "Deployment")["spec"]["template"]
    assert template["metadata"]["annotations"]["sgx.intel.com/quote-provider"] == "aesmd"
    mounts = {m["name"]: m["mountPath"] for m in container(docs)["volumeMounts"]}
    assert mounts["aesmd-socket"] == "/var/run/aesmd"
    assert "sgx.intel.com/epc" not in str(container(render())["resources"])


# --- RBAC -------------------------------------------------------------------------------------------


def rules_of(docs: list[Obj], kind: str, name: str) -> list[Obj]:
    return list(one(docs, kind, name)["rules"])


def allows(rules: list[Obj], verb: str, group: str, resource: str, name: str | None = None) -> bool:
    return any(
        group in r.get("apiGroups", [])
        and resource in r.get("resources", [])
        and verb in r.get("verbs", [])
        and (not r.get("resourceNames") or name in r["resourceNames"])
        for r in rules
    )


def test_operator_role_is_explicit_and_signs_only_keywards_signers() -> None:
    docs = render()
    rules = rules_of(docs, "ClusterRole", "keyward")
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), f"wildcard in {rule}"
        assert not {"escalate", "bind", "impersonate", "approve"} & set(rule["verbs"]), rule
    signers = {n for r in rules if r["resources"] == ["signers"] for n in r["resourceNames"]}
    expected = {f"{kind}.{group}/*" for group, kinds in signer_names._KINDS.items() for kind in kinds}
    assert signers == expected
    for signer in signers:  # every name keyward answers CSRs for, and nothing else
        assert signer_names.parse_signer_name(signer.replace("*", "ns.name")) is not None
    binding = one(docs, "ClusterRoleBinding", "keyward")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "keyward", "namespace": "keyward-system"}
    ]


def test_operator_role_covers_what_the_operator_reads_and_writes() -> None:
    """The shape of the role; that it is exactly enough is proven by the integration suite, which runs the
    operator with it and compares the sandbox's permission log (integration/test_zz_shipped_rbac.py)."""
    rules = rules_of(render(), "ClusterRole", "keyward")
    crd_plurals = {c["spec"]["group"]: set() for c in crds.load_crds()}
    for crd in crds.load_crds():
        crd_plurals[crd["spec"]["group"]].add(crd["spec"]["names"]["plural"])
    for group, plurals in crd_plurals.items():
        for plural in plurals:
            assert all(allows(rules, v, group, plural) for v in ("list", "watch")), plural
    for group, plural in (
        ("tcs.intel.com", "tcsissuers"),
        ("tcs.intel.com", "tcsclusterissuers"),
        ("est.mitre.org", "estissuers"),
        ("est.mitre.org", "estclusterissuers"),
        ("est.mitre.org", "estorders"),
        ("cert-manager.io", "certificaterequests"),
        ("certificates.k8s.io", "certificatesigningrequests"),
    ):
        assert allows(rules, "patch", group, f"{plural}/status"), plural
        assert allows(rules, "watch", group, plural), plural
    for verb in ("get", "list", "watch", "create", "update", "delete"):
        assert allows(rules, verb, "", "secrets")
    assert not allows(rules, "patch", "cert-manager.io", "certificaterequests")  # status only
    assert allows(rules, "create", "", "events")
    assert allows(rules, "create", "authorization.k8s.io", "subjectaccessreviews")
    assert allows(rules, "create", "est.mitre.org", "estorders")
    assert allows(rules, "get", "est.mitre.org", "estorders")  # the EST seed's order, taken over
    assert allows(rules, "create", "tcs.intel.com", "quoteattestations")
    assert allows(rules, "list", "apiextensions.k8s.io", "customresourcedefinitions")
    assert allows(rules, "list", "", "namespaces")  # kopf, when it serves some namespaces


def test_leader_election_role_is_leases_in_the_release_namespace_only(tmp_path: Path) -> None:
    docs = render(namespace="ca-system")
    role = one(docs, "Role", "keyward-leader-election")
    assert role["metadata"]["namespace"] == "ca-system"
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }
    ]
    binding = one(docs, "RoleBinding", "keyward-leader-election")
    assert binding["roleRef"]["name"] == "keyward-leader-election"
    watching = rules_of(
        render({"operator": {"watchNamespaces": ["a"]}}, tmp_path=tmp_path), "ClusterRole", "keyward"
    )
    assert allows(watching, "watch", "", "namespaces")


def test_cert_manager_may_approve_requests_for_keywards_issuer_kinds(tmp_path: Path) -> None:
    name = "cert-manager-controller-approve:keyward"
    rules = rules_of(render(), "ClusterRole", name)
    issuer_crds = [c for c in crds.load_crds() if c["spec"]["names"]["kind"].endswith("Issuer")]
    assert len(issuer_crds) == 4
    for crd in issuer_crds:  # cert-manager's approval names: <plural>.<group>/<namespace>.<name> or /<name>
        plural, group = crd["spec"]["names"]["plural"], crd["spec"]["group"]
        assert allows(rules, "approve", "cert-manager.io", "signers", f"{plural}.{group}/*"), plural
    assert len(rules) == 1 and rules[0]["verbs"] == ["approve"]
    default = one(render(), "ClusterRoleBinding", name)["subjects"]
    assert default == [{"kind": "ServiceAccount", "name": "cert-manager", "namespace": "cert-manager"}]
    moved = render(OPTION_SETS["given-pins"][0], tmp_path=tmp_path)
    subjects = one(moved, "ClusterRoleBinding", name)["subjects"]
    assert subjects == [{"kind": "ServiceAccount", "name": "cm-controller", "namespace": "security"}]
    off = render({"certManager": {"approver": {"enabled": False}}}, tmp_path=tmp_path)
    assert not [d for d in off if d["metadata"]["name"] == name]


def test_rbac_lives_in_one_template_for_the_operator() -> None:
    templates = {p.name: p.read_text() for p in (CHART / "templates").glob("*.yaml")}
    with_rules = sorted(name for name, text in templates.items() if re.search(r"^rules:", text, re.M))
    assert with_rules == ["cert-manager-rbac.yaml", "rbac.yaml"]
    assert "cert-manager.io" in templates["cert-manager-rbac.yaml"]
    assert len(re.findall(r"^kind: ClusterRole$", templates["rbac.yaml"], re.M)) == 1
    assert len(re.findall(r"^kind: Role$", templates["rbac.yaml"], re.M)) == 1
