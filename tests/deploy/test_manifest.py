"""deploy/keyward.yaml (the one-file install) and the chart's CRDs, each with one source."""

from __future__ import annotations

import kubernetes_validate
import pytest
from scripts import helm

from keyward.kube import crds
from tests.deploy.charts import CHART, ROOT, documents, ensure_helm, kinds, one
from tests.deploy.options import MIN_KUBE

CLUSTER_SCOPED = {"CustomResourceDefinition", "Namespace", "ClusterRole", "ClusterRoleBinding"}


@pytest.fixture(scope="module", autouse=True)
def _helm() -> None:
    ensure_helm()


def test_the_one_file_manifest_is_the_current_rendering_of_the_chart() -> None:
    assert helm.MANIFEST.read_text() == helm.manifest(), "deploy/keyward.yaml is stale: run `make manifests`"


def test_the_one_file_manifest_applies_in_order_into_its_namespace() -> None:
    docs = documents(helm.MANIFEST.read_text())
    order = kinds(docs)
    crd_count = len(list((ROOT / "deploy" / "crds").glob("*.yaml")))
    assert order[:crd_count] == ["CustomResourceDefinition"] * crd_count
    assert order[crd_count] == "Namespace"  # before anything that lives in it
    assert one(docs, "Namespace")["metadata"]["name"] == helm.MANIFEST_NAMESPACE
    for doc in docs:
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"]["namespace"] == helm.MANIFEST_NAMESPACE, doc["metadata"]["name"]
    for version in (MIN_KUBE, kubernetes_validate.latest_version()):
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_one_file_manifest_carries_no_pins_and_the_readme_says_how_to_make_them() -> None:
    docs = documents(helm.MANIFEST.read_text())
    assert "Secret" not in kinds(docs)
    volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    secret = next(v["secret"]["secretName"] for v in volumes if "secret" in v)
    readme = (ROOT / "README.md").read_text()
    assert f"create secret generic {secret}" in readme
    assert "kubectl apply -f deploy/keyward.yaml" in readme


def test_the_charts_crds_are_deploy_crds() -> None:
    source = ROOT / "deploy" / "crds"
    chart_crds = CHART / "crds"
    assert sorted(p.name for p in chart_crds.iterdir()) == sorted(p.name for p in source.glob("*.yaml"))
    for link in chart_crds.iterdir():
        assert link.is_symlink() and link.resolve() == (source / link.name).resolve(), link.name
    shown = documents(helm.helm("show", "crds", str(CHART)).stdout)  # what helm installs
    by_name = {c["metadata"]["name"]: c for c in crds.load_crds()}
    assert {c["metadata"]["name"]: c for c in shown} == by_name
    in_manifest = [d for d in documents(helm.MANIFEST.read_text()) if d["kind"] == "CustomResourceDefinition"]
    assert {c["metadata"]["name"]: c for c in in_manifest} == by_name
