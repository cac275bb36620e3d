"""Running the selected benchmarks in order, each in its own corner of the state directory.

(a), (b) and the EST reference rate share one token store in this process (SoftHSM2 reads its
configuration once per process); the sandbox's operator and the EST server are processes of their own,
with their own stores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from keyward.bench.e2e import issue_all, request_driver
from keyward.bench.est import est_enrollment, est_server_process
from keyward.bench.pki import issuance_job
from keyward.bench.rates import Job, SplitRate, interleaved_split_rates, sustained_rate
from keyward.bench.report import RSA, BenchReport
from keyward.bench.sandboxed import bench_sandbox
from keyward.bench.tokens import BenchToken, bench_token, signature_job

SANDBOX_KINDS = {"c": "certificaterequests", "d": "csrs"}


def issuance_timeout(requests: int) -> float:
    """Generous: ten times the 30 s per 1000 target, and never under two minutes."""
    return max(120.0, requests * 0.3)


async def run_benchmarks(
    selected: Sequence[str],
    state_dir: Path,
    requests: int,
    duration: float,
    command: str,
    progress: Callable[[str], None],
) -> BenchReport:
    report = BenchReport(command, {"only": ",".join(selected), "requests": requests, "duration": duration})
    if {"a", "b", "e"} & set(selected):
        with bench_token(state_dir / "token") as token:
            await _micro_benchmarks(report, token, selected, duration, progress)
    kinds = [SANDBOX_KINDS[letter] for letter in selected if letter in SANDBOX_KINDS]
    if kinds:
        progress("(c)/(d) starting the sandbox and its operator ...")
        async with bench_sandbox(state_dir / "sandbox") as sandbox:
            for kind in kinds:
                progress(f"({'c' if kind == 'certificaterequests' else 'd'}) {requests} {kind} ...")
                report.sandbox[kind] = await issue_all(
                    sandbox, request_driver(kind, sandbox), requests, timeout=issuance_timeout(requests)
                )
    if "e" in selected:
        progress("(e) EST enrollments over TLS ...")
        async with est_server_process(state_dir / "est") as endpoint:
            report.est = await est_enrollment(endpoint, duration)
    return report


async def _micro_benchmarks(
    report: BenchReport,
    token: BenchToken,
    selected: Sequence[str],
    duration: float,
    progress: Callable[[str], None],
) -> None:
    """(a) and (b) for each key, taking turns; and the raw RSA-3072 rate (e) is judged against."""
    if "a" in selected or "b" in selected:
        progress(f"({'/'.join(x for x in 'ab' if x in selected)}) token signatures, pki certificates ...")
        signing: dict[str, SplitRate] = {}
        issuing: dict[str, SplitRate] = {}
        for name in token.keys:
            jobs: dict[str, Job] = {}
            if "a" in selected:
                jobs["a"] = signature_job(token, token.keys[name])
            if "b" in selected:
                jobs["b"] = issuance_job(token, name)
            rates = await interleaved_split_rates(jobs, workers=token.workers, duration=duration)
            if "a" in rates:
                signing[name] = rates["a"]
            if "b" in rates:
                issuing[name] = rates["b"]
        if "a" in selected:
            report.token_signing = signing
        if "b" in selected:
            report.pki_issuance = issuing
    if "e" in selected:
        if report.token_signing is not None:
            report.est_reference = report.token_signing[RSA].all_cores.per_second
        else:
            progress("(e) reference: raw RSA-3072 token signatures, all cores ...")
            job = signature_job(token, token.keys[RSA])
            rate = await sustained_rate(job, concurrency=token.workers, duration=duration)
            report.est_reference = rate.per_second
