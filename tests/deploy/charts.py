"""Renderings of deploy/charts/keyward for the tests: helm itself (build/bin/helm) renders them."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from scripts import helm

Obj = dict[str, Any]

ROOT = helm.ROOT
CHART = helm.CHART
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
#: Kinds whose schema Kubernetes does not ship: the Prometheus Operator's CRDs, validated against their
#: own schema in test_monitoring.py.
MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}


def ensure_helm() -> Path:
    """build/bin/helm, fetched by make when it is not there yet."""
    if not helm.HELM.exists():
        done = subprocess.run(
            ["make", "--no-print-directory", "helm"], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"make helm failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return helm.HELM


def render(
    values: Mapping[str, Any] | None = None,
    *,
    tmp_path: Path | None = None,
    settings: Iterable[str] = (),
    kube_version: str | None = None,
    namespace: str = helm.MANIFEST_NAMESPACE,
    release: str = helm.MANIFEST_RELEASE,
) -> list[Obj]:
    """The chart's objects for ``values`` (a values file) and ``settings`` (``--set`` items)."""
    files = []
    if values:
        assert tmp_path is not None, "values need a directory for their file"
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(dict(values)))
        files.append(path)
    text = helm.render(
        tuple(settings), values_files=files, kube_version=kube_version, namespace=namespace, release=release
    )
    return documents(text)


def render_error(
    values: Mapping[str, Any], tmp_path: Path, *, kube_version: str | None = None, extra: Iterable[str] = ()
) -> str:
    """What helm says when it refuses ``values`` (fails the test when it renders them)."""
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(dict(values)))
    args = ["template", "x", str(CHART), "--values", str(path), *extra]
    if kube_version:
        args += ["--kube-version", kube_version]
    done = helm.helm(*args, check=False)
    assert done.returncode != 0, f"helm rendered values it should refuse: {dict(values)}"
    return done.stderr


def documents(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def one(docs: Iterable[Obj], kind: str, name: str | None = None) -> Obj:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def kinds(docs: Iterable[Obj]) -> list[str]:
    return [d["kind"] for d in docs]


def container(docs: Iterable[Obj]) -> Obj:
    """The operator container of the Deployment."""
    (operator,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(operator)


def pod_spec(docs: Iterable[Obj]) -> Obj:
    return dict(one(docs, "Deployment")["spec"]["template"]["spec"])


#: Values that are Kubernetes structures passed through as they are: each is one option.
PASSED_THROUGH = {"resources", "podSecurityContext", "securityContext"}


def leaf_paths(tree: Mapping[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of the options in a values tree: its leaves (lists and maps that are empty in
    values.yaml are leaves: what is inside them is the user's), and the PASSED_THROUGH structures."""
    paths: set[str] = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and path not in PASSED_THROUGH:
            paths |= leaf_paths(value, path + ".")
        else:
            paths.add(path)
    return paths


def options_set(values: Mapping[str, Any], options: set[str]) -> set[str]:
    """Which of ``options`` (leaf paths of values.yaml) ``values`` sets."""
    given = leaf_paths(values)
    return {o for o in options if any(p == o or p.startswith(o + ".") for p in given)}
