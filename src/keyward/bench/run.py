"""Running the selected benchmarks in order, each in its own corner of the state directory.

(a), (b) and the raw rate (e) is judged against share one token store in this process (SoftHSM2 reads
its configuration once per process); the sandbox's operator and the EST server are processes of their
own, with their own stores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from keyward.bench.csrs import CSR_KEY
from keyward.bench.e2e import issue_all, request_driver
from keyward.bench.est import est_enrollment, est_server_process, find_wrk
from keyward.bench.flood import FLOOD_CONNECTIONS, enrollments_under_flood
from keyward.bench.pki import issuance_job
from keyward.bench.rates import Job, SplitRate, interleaved_split_rates
from keyward.bench.report import RSA, BenchReport
from keyward.bench.restart import restart_at_scale
from keyward.bench.sandboxed import bench_sandbox
from keyward.bench.tokens import BenchToken, bench_token, signature_job

SANDBOX_KINDS = {"c": "certificaterequests", "d": "csrs"}


@dataclass(frozen=True)
class Sizes:
    """How big the benchmarks are: requests in (c)/(d), issued requests in (f), seconds per slice."""

    requests: int = 1000
    existing: int = 10_000
    duration: float = 3.0


def issuance_timeout(requests: int) -> float:
    """Generous: ten times the 30 s per 1000 target, and never under two minutes."""
    return max(120.0, requests * 0.3)


async def run_benchmarks(
    selected: Sequence[str],
    state_dir: Path,
    sizes: Sizes,
    command: str,
    progress: Callable[[str], None],
) -> BenchReport:
    requests, duration = sizes.requests, sizes.duration
    settings = {
        "only": ",".join(selected),
        "requests": requests,
        "existing": sizes.existing,
        "duration": duration,
        "csr_key": CSR_KEY,
    }
    report = BenchReport(command, settings)
    if "e" in selected:
        find_wrk()  # before minutes of other benchmarks, not after
    with contextlib.ExitStack() as stack:
        token = None
        if {"a", "b", "e"} & set(selected):
            token = stack.enter_context(bench_token(state_dir / "token"))
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
        if "e" in selected and token is not None:
            progress("(e) EST enrollments over TLS, taking turns with raw RSA-3072 token signing ...")
            async with est_server_process(state_dir / "est") as endpoint:
                raw = signature_job(token, token.keys[RSA])
                report.est = await est_enrollment(endpoint, duration, raw, token.workers)
        if "f" in selected:
            progress(f"(f) issuing {sizes.existing} CertificateRequests, then restarting the operator ...")
            async with bench_sandbox(state_dir / "restart") as sandbox:
                report.restart = await restart_at_scale(
                    sandbox, sizes.existing, timeout=issuance_timeout(sizes.existing), progress=progress
                )
        if "g" in selected:
            progress(f"(g) EST enrollments during floods of {FLOOD_CONNECTIONS} idle TLS connections ...")
            async with est_server_process(state_dir / "est-flood") as endpoint:
                report.flood = await enrollments_under_flood(endpoint, duration)
    return report


async def _micro_benchmarks(
    report: BenchReport,
    token: BenchToken,
    selected: Sequence[str],
    duration: float,
    progress: Callable[[str], None],
) -> None:
    """(a) and (b) for each key, taking turns."""
    if "a" not in selected and "b" not in selected:
        return
    progress(f"({'/'.join(x for x in 'ab' if x in selected)}) token signatures, pki certificates ...")
    signing: dict[str, SplitRate] = {}
    issuing: dict[str, SplitRate] = {}
    for name in token.keys:
        jobs: dict[str, Job] = {}
        if "a" in selected:
            jobs["a"] = signature_job(token, token.keys[name])
        if "b" in selected:
            jobs["b"] = issuance_job(token, name)
        rates = await interleaved_split_rates(
            jobs, workers=token.workers, duration=duration, processes=lambda: token.store.signing_pids
        )
        if "a" in rates:
            signing[name] = rates["a"]
        if "b" in rates:
            issuing[name] = rates["b"]
    if "a" in selected:
        report.token_signing = signing
    if "b" in selected:
        report.pki_issuance = issuing
