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
from keyward.bench.pki import pki_issuance
from keyward.bench.rates import sustained_rate
from keyward.bench.report import RSA, BenchReport
from keyward.bench.sandboxed import bench_sandbox
from keyward.bench.tokens import bench_token, signer, token_signing

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
    if {"a", "b"} & set(selected) or "e" in selected:
        with bench_token(state_dir / "token") as token:
            if "a" in selected:
                progress("(a) token signatures ...")
                report.token_signing = await token_signing(token, duration)
            if "b" in selected:
                progress("(b) certificates through pki ...")
                report.pki_issuance = await pki_issuance(token, duration)
            if "e" in selected:
                if report.token_signing is not None:
                    report.est_reference = report.token_signing[RSA].all_cores.per_second
                else:
                    progress("(e) reference: raw RSA-3072 token signatures, all cores ...")
                    sign = signer(token.keys[RSA])
                    rate = await sustained_rate(
                        lambda: token.store.run(sign), concurrency=token.workers, duration=duration
                    )
                    report.est_reference = rate.per_second
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
