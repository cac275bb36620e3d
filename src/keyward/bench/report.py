"""The benchmark report: JSON for machines, a short table for people, and the targets checked.

Targets (from the issues): (b) at least 0.9 times (a) for RSA-3072 with one worker; (b) with all cores at
least 1.6 times one worker; (c)/(d) at most 2 API writes per issuance and 1000 requests issued in under
30 s; (e) 16 EST clients at least 0.7 times the raw RSA-3072 token rate (all cores, same run); (f) after
a restart with N issued requests, none signed again, a new request signed within 10 s of the start, and
the operator with its signing processes within 200 MiB; (g) during each flood, every enrollment of the
legitimate client succeeds, with p99 under 1 s.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keyward import __version__
from keyward.bench.e2e import EndToEndResult
from keyward.bench.est import EstResult
from keyward.bench.flood import TARGET_P99, FloodResult
from keyward.bench.rates import SplitRate
from keyward.bench.restart import TARGET_RSS_MIB, TARGET_SECONDS, RestartResult

RSA = "RSA-3072"
PKI_PER_WORKER_RATIO = 0.9
ALL_CORES_SCALING = 1.6
MAX_WRITES_PER_ISSUANCE = 2.0
SECONDS_PER_1000 = 30.0
EST_RATIO = 0.7
EST_CLIENTS = 16
SANDBOX_LETTERS = {"certificaterequests": "c", "csrs": "d"}


@dataclass(frozen=True)
class Target:
    name: str
    measured: float
    required: str
    met: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "measured": round(self.measured, 3),
            "required": self.required,
            "met": self.met,
        }


@dataclass
class BenchReport:
    command: str
    settings: dict[str, Any]
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    load_before: tuple[float, float, float] = field(default_factory=os.getloadavg)
    load_after: tuple[float, float, float] | None = None
    token_signing: dict[str, SplitRate] | None = None
    pki_issuance: dict[str, SplitRate] | None = None
    sandbox: dict[str, EndToEndResult] = field(default_factory=dict)
    est: EstResult | None = None
    restart: RestartResult | None = None
    flood: FloodResult | None = None

    # -- targets ------------------------------------------------------------------------------------

    def targets(self) -> list[Target]:
        found: list[Target] = []
        if self.token_signing and self.pki_issuance and RSA in self.token_signing:
            raw, pki = self.token_signing[RSA].one_worker, self.pki_issuance[RSA].one_worker
            ratio = pki.per_second / raw.per_second if raw.per_second else 0.0
            found.append(
                Target(
                    f"(b)/(a) {RSA}, one worker",
                    ratio,
                    f">= {PKI_PER_WORKER_RATIO}",
                    ratio >= PKI_PER_WORKER_RATIO,
                )
            )
        for key, split in (self.pki_issuance or {}).items():
            found.append(
                Target(
                    f"(b) {key} all cores / one worker",
                    split.scaling,
                    f">= {ALL_CORES_SCALING}",
                    split.scaling >= ALL_CORES_SCALING,
                )
            )
        for name, result in self.sandbox.items():
            letter = SANDBOX_LETTERS[name]
            found.append(
                Target(
                    f"({letter}) {result.kind} API writes per issuance",
                    result.writes_per_issuance,
                    f"<= {MAX_WRITES_PER_ISSUANCE:g}",
                    result.writes_per_issuance <= MAX_WRITES_PER_ISSUANCE,
                )
            )
            limit = SECONDS_PER_1000 * result.requests / 1000
            found.append(
                Target(
                    f"({letter}) {result.requests} {result.kind}s issued, seconds",
                    result.seconds,
                    f"< {limit:g}",
                    result.seconds < limit,
                )
            )
        if self.est is not None and EST_CLIENTS in self.est.rates and self.est.reference.per_second:
            ratio = self.est.rates[EST_CLIENTS].per_second / self.est.reference.per_second
            found.append(
                Target(
                    f"(e) {EST_CLIENTS} EST clients / raw {RSA} token rate (all cores)",
                    ratio,
                    f">= {EST_RATIO}",
                    ratio >= EST_RATIO,
                )
            )
        if self.restart is not None:
            found.extend(_restart_targets(self.restart))
        for run in self.flood.runs if self.flood is not None else []:
            if not run.sources:
                continue  # the baseline, without a flood
            found.append(
                Target(
                    f"(g) flood from {run.sources} address(es): p99 s of {run.enrollments} enrollments, "
                    f"{len(run.failures)} failed",
                    run.p99 if run.p99 is not None else float("inf"),
                    f"< {TARGET_P99:g}, none failed",
                    run.met,
                )
            )
        return found

    # -- output -------------------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        results: dict[str, Any] = {}
        if self.token_signing is not None:
            results["a_token_signatures"] = {k: v.as_dict() for k, v in self.token_signing.items()}
        if self.pki_issuance is not None:
            results["b_pki_certificates"] = {k: v.as_dict() for k, v in self.pki_issuance.items()}
        for name, result in self.sandbox.items():
            results[f"{SANDBOX_LETTERS[name]}_sandbox_{name}"] = result.as_dict()
        if self.est is not None:
            results["e_est_enrollments"] = self.est.as_dict()
        if self.restart is not None:
            results["f_restart_at_scale"] = self.restart.as_dict()
        if self.flood is not None:
            results["g_est_under_flood"] = self.flood.as_dict()
        return {
            "keyward_version": __version__,
            "command": self.command,
            "started_at": self.started_at,
            "machine": machine(self.load_before, self.load_after),
            "settings": self.settings,
            "results": results,
            "targets": [target.as_dict() for target in self.targets()],
        }

    def table(self) -> str:
        lines = [f"keyward bench ({os.cpu_count()} cores, load before {self.load_before[0]:.2f})"]
        splits: tuple[tuple[str, dict[str, SplitRate] | None, str], ...] = (
            ("(a) token signatures/s", self.token_signing, "sig/s"),
            ("(b) pki certificates/s", self.pki_issuance, "cert/s"),
        )
        for title, rates, unit in splits:
            for key, split in (rates or {}).items():
                lines.append(
                    f"{title:26} {key:11} one worker {split.one_worker.per_second:8.1f} {unit}   all "
                    f"{split.workers} cores {split.all_cores.per_second:8.1f} {unit}  ({split.scaling:.2f}x)"
                    f"{_other(split.one_worker.other_cpu_cores, split.all_cores.other_cpu_cores)}"
                )
        for name, result in self.sandbox.items():
            letter, row = SANDBOX_LETTERS[name], result.as_dict()
            lines.append(
                f"({letter}) {result.requests} {result.kind}s issued in {result.seconds:.2f} s = "
                f"{result.per_second:.1f}/s, latency p50 {row['latency_p50_seconds']} s "
                f"p99 {row['latency_p99_seconds']} s{_other(result.other_cpu_cores)}"
            )
            lines.append(
                f"    operator: {row['api_requests_per_issuance']} API requests and "
                f"{row['api_writes_per_issuance']} writes per issuance, peak RSS "
                f"{row['operator_peak_rss_mib']} MiB, CPU {row['operator_cpu_ms_per_issuance']} ms per "
                f"issuance (API server + benchmark client: {row['sandbox_process_cpu_ms_per_issuance']} ms)"
            )
        if self.est is not None:
            lines.append(
                f"(e) reference, in the same slices of time: raw {RSA} token signatures, all cores: "
                f"{self.est.reference.per_second:.1f}/s"
            )
            for clients, run in self.est.runs.items():
                row = run.as_dict()
                lines.append(
                    f"(e) EST enrollments, {clients:2} keep-alive client(s): {run.rate.per_second:7.1f}/s, "
                    f"p99 {row['latency_p99_seconds']} s; CPU per enrollment: server "
                    f"{row['server_cpu_ms_per_enrollment']} ms, wrk {row['client_cpu_ms_per_enrollment']} ms"
                    f"{_other(run.rate.other_cpu_cores)}"
                )
        if self.restart is not None:
            row = self.restart.as_dict()
            lines.append(
                f"(f) operator restarted with {self.restart.existing} issued CertificateRequests: a new one "
                f"signed {row['seconds_to_new_certificate']} s after the start, {self.restart.resigns} "
                f"re-signed; idle after {row['seconds_to_idle']} s"
                f"{_other(self.restart.other_cpu_cores)}"
            )
            lines.append(
                f"    restarted operator: {row['operator_api_requests']} API requests, "
                f"{row['operator_api_writes']} writes, CPU {row['operator_cpu_seconds']} s "
                f"({row['operator_cpu_ms_per_existing_request']} ms per existing request), peak RSS "
                f"{row['operator_peak_rss_mib']} MiB; while issuing them: {row['fill_seconds']} s, peak RSS "
                f"{row['fill_operator_peak_rss_mib']} MiB"
            )
        for trial in self.flood.runs if self.flood is not None else []:
            row = trial.as_dict()
            flood = (
                f"flood of {row['flood_connections']} idle TLS connections from {trial.sources:2} address(es)"
                if trial.sources
                else "no flood (baseline)"
            )
            flooded = (
                f"; flood: {trial.attempts} attempts, {trial.admitted} let through, {trial.held_at_end} held "
                "at the end"
                if trial.sources
                else ""
            )
            lines.append(
                f"(g) {flood}: {trial.enrollments} enrollments ({row['enrollments_per_second']}/s), "
                f"{len(trial.failures)} failed, p50 {row['latency_p50_seconds']} s p99 "
                f"{row['latency_p99_seconds']} s{flooded}{_other(trial.other_cpu_cores)}"
            )
        targets = self.targets()
        if targets:
            lines.append("targets:")
            lines.extend(
                f"  [{'met' if t.met else 'MISSED'}] {t.name}: {t.measured:.2f} (required {t.required})"
                for t in targets
            )
        return "\n".join(lines)

    def write_json(self, path: Path) -> None:
        import json

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")


def _restart_targets(result: RestartResult) -> list[Target]:
    n = result.existing
    found = [
        Target(f"(f) requests of {n} issued signed again after the restart", result.resigns, "== 0",
               result.resigns == 0),
        Target(
            f"(f) seconds from the operator's start to a new request signed, {n} issued",
            result.seconds_to_new_certificate,
            f"< {TARGET_SECONDS:g}",
            result.seconds_to_new_certificate < TARGET_SECONDS,
        ),
    ]  # fmt: skip
    for when, peak in (
        ("after the restart", result.operator_peak_rss),
        ("while issuing", result.fill.operator_peak_rss),
    ):
        mib = peak / 2**20 if peak is not None else float("inf")
        found.append(
            Target(
                f"(f) operator peak RSS with its signing processes {when}, {n} requests, MiB",
                mib,
                f"<= {TARGET_RSS_MIB:g}",
                mib <= TARGET_RSS_MIB,
            )
        )
    return found


def _other(*cores: float | None) -> str:
    """Other processes' share of the cores during a measurement: the reader judges the noise."""
    known = [value for value in cores if value is not None]
    return f"  [other processes: {max(known):.2f} cores]" if known else ""


def machine(load_before: tuple[float, ...], load_after: tuple[float, ...] | None) -> dict[str, Any]:
    """Where the numbers come from; the load averages show whether other work shared the cores."""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after] if load_after else None,
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None
