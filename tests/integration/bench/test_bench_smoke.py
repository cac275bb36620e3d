"""``keyward bench`` as a user runs it, with tiny sizes: every benchmark runs and reports sane numbers.

Timing is not asserted (these machines are shared); the shape of the JSON report and positive rates are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.tools import ToolRun
from tests.support.tools import keyward as run_keyward


def keyward(*args: str, env: dict[str, str] | None = None) -> ToolRun:
    """The keyward command, with room for a whole benchmark run."""
    return run_keyward(*args, env=env, timeout=150)


def assert_rate(rate: dict[str, Any]) -> None:
    assert rate["operations"] > 0
    assert rate["seconds"] > 0
    assert rate["per_second"] > 0


def assert_split(results: dict[str, Any]) -> None:
    assert set(results) == {"RSA-3072", "ECDSA-P256"}
    for split in results.values():
        assert_rate(split["one_worker"])
        assert_rate(split["all_cores"])
        assert split["workers"] == os.cpu_count()
        assert split["scaling"] > 0


def assert_issuance(result: dict[str, Any], kind: str, requests: int, reviews: int = 0) -> None:
    assert result["kind"] == kind
    assert result["requests"] == requests
    assert result["per_second"] > 0
    assert 0 < result["latency_p50_seconds"] <= result["latency_p99_seconds"] < result["seconds"] + 1
    # The operator writes each issued request once, plus its Event; it reads nothing per request. A CSR
    # for a namespaced issuer also costs the reference check's SubjectAccessReview (answered, not stored).
    assert result["api_writes_per_issuance"] == pytest.approx(2.0)
    assert result["api_requests_per_issuance"] == pytest.approx(2.0 + reviews)
    assert result["operator_peak_rss_mib"] > 10


@pytest.mark.timeout(180)
def test_every_benchmark_runs_and_writes_the_json_report(tmp_path: Path) -> None:
    report_path = tmp_path / "bench.json"
    result = keyward(
        "bench", "--requests", "6", "--existing", "5", "--duration", "0.1", "--json", str(report_path),
        "--state-dir", str(tmp_path / "state"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["command"].startswith("keyward bench --requests 6")
    assert report["machine"]["cpus"] == os.cpu_count()
    assert report["settings"] == {
        "only": "a,b,c,d,e,f,g",
        "requests": 6,
        "existing": 5,
        "duration": 0.1,
        "csr_key": "RSA-2048 (cert-manager's default private key)",
    }
    results = report["results"]
    assert_split(results["a_token_signatures"])
    assert_split(results["b_pki_certificates"])
    assert_issuance(results["c_sandbox_certificaterequests"], "CertificateRequest", 6)
    assert_issuance(results["d_sandbox_csrs"], "CertificateSigningRequest", 6, reviews=1)
    est = results["e_est_enrollments"]
    assert set(est["clients"]) == {"1", "16"}
    for rate in est["clients"].values():
        assert_rate(rate)
    assert est["raw_rsa3072_token_per_second_all_cores"] > 0
    assert est["server_peak_rss_mib"] > 10
    assert est["load_generator"] == "wrk"
    assert all(rate["latency_p99_seconds"] > 0 for rate in est["clients"].values())
    # wrk's script carries the Basic credential: private to its owner, and never printed.
    script = tmp_path / "state" / "est" / "wrk-enroll.lua"
    assert script.stat().st_mode & 0o777 == 0o600
    password = (tmp_path / "state" / "est" / "est-password").read_text().strip()
    assert password not in result.stdout + result.stderr
    # (f): the operator restarted with 5 issued requests signs a new one and none of the 5 again.
    restart = results["f_restart_at_scale"]
    assert restart["existing_requests"] == 5 and restart["resigns"] == 0
    assert 0 < restart["seconds_to_new_certificate"] <= restart["seconds_to_idle"] + 1
    assert restart["operator_api_writes"] == 2, "the new request's status and its Event, nothing else"
    assert restart["operator_peak_rss_mib"] > 10 and restart["fill_operator_peak_rss_mib"] > 10
    # (g): during each flood the legitimate client enrolls, and not one enrollment fails.
    baseline, *floods = results["g_est_under_flood"]["floods"]
    assert (baseline["flood_source_addresses"], baseline["flood_connections"]) == (0, 0)
    assert [flood["flood_source_addresses"] for flood in floods] == [1, 20]
    for run in (baseline, *floods):
        assert run["enrollments"] > 0 and run["failures"] == 0, run["first_failures"]
        assert 0 < run["latency_p50_seconds"] <= run["latency_p99_seconds"]
    for flood in floods:
        assert flood["flood_connection_attempts"] >= flood["flood_connections"] == 600
    assert floods[0]["flood_connections_held_at_end"] < 600, "one address cannot hold 600 connections"
    names = [target["name"] for target in report["targets"]]
    assert any(name.startswith("(b)/(a) RSA-3072") for name in names)
    assert any(name.startswith("(e) 16 EST clients") for name in names)
    assert sum(name.startswith("(f) ") for name in names) == 4
    assert sum(name.startswith("(g) flood from") for name in names) == 2
    assert all(isinstance(target["met"], bool) for target in report["targets"])
    # The table on stdout carries the same numbers for people.
    assert "(a) token signatures/s" in result.stdout
    assert "targets:" in result.stdout


def test_only_runs_the_chosen_benchmark(tmp_path: Path) -> None:
    report_path = tmp_path / "a.json"
    result = keyward("bench", "--only", "a", "--duration", "0.05", "--json", str(report_path))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert list(report["results"]) == ["a_token_signatures"]
    assert report["targets"] == []  # none of the targets can be judged from (a) alone


def test_est_benchmark_without_wrk_is_one_clear_error(tmp_path: Path) -> None:
    # PATH without wrk (the venv's python is called by absolute path, so the rest still works).
    result = keyward(
        "bench", "--only", "e", "--duration", "0.05", "--state-dir", str(tmp_path / "state"),
        env={"PATH": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode != 0
    assert "needs wrk" in result.stderr and "apt-get install wrk" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_benchmark_is_one_clear_error() -> None:
    result = keyward("bench", "--only", "a,x")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("keyward: error: --only 'a,x'")
    assert "a,b,c,d,e,f,g" in lines[0]
