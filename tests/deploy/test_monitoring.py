"""The chart's ServiceMonitor and PrometheusRule: valid against the Prometheus Operator's own schema, and
the alerts judged by Prometheus' promtool — each fires on the series that should fire it, none on
healthy ones."""

from __future__ import annotations

import copy
import filecmp
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.charts import ROOT, Obj, ensure_helm, one, render
from tests.deploy.options import ALERTS, OPTION_SETS

SCHEMAS_SOURCE = Path(__file__).parent / "schemas"
SCHEMAS = ROOT / "build" / "prometheus-operator-schemas"
MONITORED = {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}


@pytest.fixture(scope="module", autouse=True)
def _helm() -> None:
    ensure_helm()


@pytest.fixture(scope="module")
def schema_validator() -> Path:
    """validate.mjs beside its npm packages (npm ci from the pinned lock file, once per lock)."""
    SCHEMAS.mkdir(parents=True, exist_ok=True)
    lock = SCHEMAS_SOURCE / "package-lock.json"
    installed = SCHEMAS / "package-lock.json"
    if not (
        installed.exists()
        and filecmp.cmp(lock, installed, shallow=False)
        and (SCHEMAS / "node_modules").is_dir()
    ):
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(SCHEMAS_SOURCE / name, SCHEMAS / name)
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=SCHEMAS, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"npm ci failed: {done.stderr[-2000:]}"
    shutil.copyfile(SCHEMAS_SOURCE / "validate.mjs", SCHEMAS / "validate.mjs")
    return SCHEMAS / "validate.mjs"


def schema_errors(validator: Path, objects: list[Obj]) -> dict[str, str | None]:
    done = subprocess.run(
        ["node", str(validator)], input=json.dumps(objects), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return {f"{r['kind']}/{r['name']}": r["error"] for r in json.loads(done.stdout)}


def monitoring_objects(docs: list[Obj]) -> list[Obj]:
    return [d for d in docs if d["kind"] in {"ServiceMonitor", "PrometheusRule"}]


@pytest.mark.parametrize("name", ["default-alerts", "monitoring"])
def test_servicemonitor_and_prometheusrule_match_the_prometheus_operators_schema(
    name: str, schema_validator: Path, tmp_path: Path
) -> None:
    values = MONITORED if name == "default-alerts" else OPTION_SETS[name][0]
    objects = monitoring_objects(render(values, tmp_path=tmp_path))
    assert sorted(o["kind"] for o in objects) == ["PrometheusRule", "ServiceMonitor"]
    assert set(schema_errors(schema_validator, objects).values()) == {None}


def test_the_schema_validator_refuses_what_the_prometheus_operator_would(
    schema_validator: Path, tmp_path: Path
) -> None:
    monitor = one(render(MONITORED, tmp_path=tmp_path), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
    errors = schema_errors(schema_validator, [monitor])
    assert "interval" in str(errors["ServiceMonitor/keyward"])


def test_servicemonitor_scrapes_the_metrics_service_of_this_release(tmp_path: Path) -> None:
    docs = render(MONITORED, tmp_path=tmp_path, namespace="ca-system")
    monitor = one(docs, "ServiceMonitor")["spec"]
    service = one(docs, "Service", "keyward-metrics")
    assert monitor["namespaceSelector"] == {"matchNames": ["ca-system"]}
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert (
        not monitor["selector"]["matchLabels"].items()
        <= one(docs, "Service", "keyward-est")["metadata"]["labels"].items()
    ), "the ServiceMonitor must not scrape the EST Service"
    (endpoint,) = monitor["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    # the job label the KeywardOperatorDown alert looks for
    assert service["metadata"]["labels"][monitor["jobLabel"]] == "keyward"


def rule_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    rule = one(render(values, tmp_path=tmp_path), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_every_alert_rule(tmp_path: Path) -> None:
    done = promtool("check", "rules", str(rule_file(tmp_path, MONITORED)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout
    names = [r["alert"] for r in yaml.safe_load((tmp_path / "rules.yaml").read_text())["groups"][0]["rules"]]
    assert names == list(ALERTS)


def alert(name: str, eval_time: str, labels: dict[str, str] | None, summary: str = "") -> Obj:
    """A promtool alert_rule_test: ``labels`` None means the alert must not fire. The expected summary is
    written out (it is filled from the labels); a static description is taken from the rule."""
    expected = [] if labels is None else [{"exp_labels": labels, "exp_annotations": {"summary": summary}}]
    return {"eval_time": eval_time, "alertname": name, "exp_alerts": expected}


def series(metric: str, values: str, **labels: str) -> Obj:
    """A promtool input series: ``metric{labels}`` with promtool's expanding ``values`` notation."""
    selector = ",".join(f'{name}="{value}"' for name, value in labels.items())
    return {"series": f"{metric}{{{selector}}}", "values": values}


SIGNER = "tcsissuer.tcs.intel.com/sandbox.my-ca"
CR, CSR = "CertificateRequest", "CertificateSigningRequest"
ALERT_TESTS: list[Obj] = [
    {
        "interval": "1m",
        "input_series": [
            series("keyward_issuer_ready", "0x30", kind="TCSIssuer", namespace="sandbox", name="my-ca"),
            series("keyward_issuer_ready", "1x30", kind="EstIssuer", namespace="sandbox", name="est"),
            series("keyward_token_up", "1 1 0x28", issuer=SIGNER),
            series("keyward_certificates_failed_total", "0+1x30", issuer_kind="TCSIssuer", request_kind=CR),
            series("keyward_certificates_failed_total", "4x30", issuer_kind="EstIssuer", request_kind=CR),
            series("keyward_api_write_failures_total", "0+3x30", code="500"),
            series("keyward_api_write_failures_total", "0+50x30", code="409"),
            series("keyward_requests_parked", "2x40", reason="issuer_not_ready"),
            series("keyward_requests_parked", "0x40", reason="token_unavailable"),
            series("keyward_est_requests_total", "0+1x30", operation="simpleenroll", status="500"),
            series("keyward_est_requests_total", "0+9x30", operation="cacerts", status="200"),
        ],
        "alert_rule_test": [
            alert("KeywardIssuerNotReady", "5m", None),  # not for 10 minutes yet
            alert(
                "KeywardIssuerNotReady", "12m",
                {"severity": "warning", "kind": "TCSIssuer", "namespace": "sandbox", "name": "my-ca"},
                "TCSIssuer sandbox/my-ca is not ready",
            ),
            alert("KeywardTokenUnavailable", "4m", None),
            alert(
                "KeywardTokenUnavailable", "9m", {"severity": "critical", "issuer": SIGNER},
                f"The PKCS#11 token of {SIGNER} cannot be used",
            ),
            alert(
                "KeywardCertificateRequestsFailing", "10m",
                {"severity": "warning", "issuer_kind": "TCSIssuer", "request_kind": CR},
                "CertificateRequests for TCSIssuer issuers are failing",
            ),
            alert(
                "KeywardApiWriteErrors", "20m", {"severity": "warning", "code": "500"},
                "The Kubernetes API refuses keyward's writes with 500",
            ),
            alert("KeywardRequestsParked", "20m", None),
            alert(
                "KeywardRequestsParked", "35m", {"severity": "warning", "reason": "issuer_not_ready"},
                "2 approved requests have been waiting (issuer_not_ready)",
            ),
            alert(
                "KeywardEstServerErrors", "20m", {"severity": "warning", "operation": "simpleenroll"},
                "The EST server answers simpleenroll with server errors",
            ),
            alert(
                "KeywardOperatorDown", "12m", {"severity": "critical", "namespace": "keyward-system"},
                "No keyward operator in keyward-system answers Prometheus",
            ),
        ],
    },
    {  # a healthy operator: nothing fires
        "interval": "1m",
        "input_series": [
            series("up", "1x40", job="keyward", namespace="keyward-system", instance="10.0.0.7:8082"),
            series("keyward_issuer_ready", "1x40", kind="TCSClusterIssuer", namespace="", name="root"),
            series("keyward_token_up", "1x40", issuer=SIGNER),
            series("keyward_certificates_issued_total", "0+10x40", issuer_kind="TCSIssuer", request_kind=CSR),
            series("keyward_requests_parked", "0x40", reason="issuer_missing"),
            series("keyward_api_write_failures_total", "0+5x40", code="409"),
        ],
        "alert_rule_test": [alert(name, "35m", None) for name in ALERTS],
    },
]  # fmt: skip


def test_promtool_fires_each_alert_on_its_series_and_none_on_a_healthy_operator(tmp_path: Path) -> None:
    rules = rule_file(tmp_path, MONITORED)
    descriptions = {
        r["alert"]: r["annotations"]["description"]
        for r in yaml.safe_load(rules.read_text())["groups"][0]["rules"]
        if "description" in r["annotations"]
    }
    cases = copy.deepcopy(ALERT_TESTS)
    for case in cases[0]["alert_rule_test"]:
        for expected in case["exp_alerts"]:
            if case["alertname"] in descriptions:
                expected["exp_annotations"]["description"] = descriptions[case["alertname"]]
    tests = tmp_path / "tests.yaml"
    tests.write_text(
        yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": "1m", "tests": cases})
    )
    done = promtool("test", "rules", str(tests))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    fired = {case["alertname"] for case in ALERT_TESTS[0]["alert_rule_test"] if case["exp_alerts"]}
    assert fired == set(ALERTS)


def test_alerts_follow_their_values(tmp_path: Path) -> None:
    values, _ = OPTION_SETS["monitoring"]
    rules = yaml.safe_load(rule_file(tmp_path, values).read_text())["groups"][0]["rules"]
    by_name = {r["alert"]: r for r in rules}
    assert "KeywardRequestsParked" not in by_name  # switched off
    assert {(r["for"], r["labels"]["severity"]) for r in rules} == {("3m", "page")}
    without_monitor = {"metrics": {"prometheusRule": {"enabled": True}}}
    names = [
        r["alert"]
        for r in yaml.safe_load(rule_file(tmp_path, without_monitor).read_text())["groups"][0]["rules"]
    ]
    assert "KeywardOperatorDown" not in names  # no scrape, no `up` to judge by
