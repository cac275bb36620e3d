"""``keyward bench``: run the selected benchmarks, print a table, optionally write the JSON report."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from keyward.errors import UserError

BENCHMARKS = {
    "a": "token signatures/s (RSA-3072, ECDSA-P256; one worker, all cores)",
    "b": "certificates/s through pki with the token key (same split)",
    "c": "sandbox: N approved CertificateRequests until all are issued",
    "d": "sandbox: N approved Kubernetes CSRs until all are issued",
    "e": "EST enrollments/s over TLS with keep-alive (1 and 16 clients)",
    "f": "sandbox: the operator restarted with N issued CertificateRequests (--existing)",
    "g": "EST enrollments by one client during a flood of 600 idle TLS connections",
}


def parse_only(value: str) -> list[str]:
    """``a,c`` → ["a", "c"] in benchmark order; a clear error for anything else."""
    chosen = {part.strip().lower() for part in value.split(",") if part.strip()}
    unknown = sorted(chosen - BENCHMARKS.keys())
    if unknown or not chosen:
        raise UserError(
            f"--only {value!r} names no benchmark or unknown ones ({', '.join(unknown) or 'none given'})",
            f"pass a comma-separated subset of {','.join(BENCHMARKS)}",
        )
    return [letter for letter in BENCHMARKS if letter in chosen]


@contextmanager
def _state_dir(given: Path | None) -> Iterator[Path]:
    """``--state-dir``, or a temporary directory removed after a successful run (kept after a failure,
    since the error message points at the logs in it)."""
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given.resolve()
        return
    temporary = Path(tempfile.mkdtemp(prefix="keyward-bench-"))
    yield temporary
    shutil.rmtree(temporary, ignore_errors=True)


@click.command("bench")
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the JSON report here."
)
@click.option(
    "--requests",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="Requests created at once in (c) and (d).",
)
@click.option(
    "--existing",
    type=click.IntRange(1, 100_000),
    default=10_000,
    show_default=True,
    help="Issued CertificateRequests in the sandbox when (f) restarts the operator.",
)
@click.option(
    "--only",
    default=",".join(BENCHMARKS),
    show_default=True,
    metavar="LIST",
    help="Benchmarks to run: " + "; ".join(f"{k} = {v}" for k, v in BENCHMARKS.items()) + ".",
)
@click.option(
    "--duration",
    type=click.FloatRange(0.05, 600),
    default=3.0,
    show_default=True,
    help="Seconds per micro-benchmark in (a), (b) and (e).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep tokens, sandbox and logs here [default: a temporary directory, removed afterwards].",
)
def bench(
    json_path: Path | None,
    requests: int,
    existing: int,
    only: str,
    duration: float,
    state_dir: Path | None,
) -> None:
    """Measure the token, pki, the operator in the sandbox and the EST server on this machine."""
    from keyward.bench.run import Sizes, run_benchmarks

    selected = parse_only(only)
    command = shlex.join(["keyward", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else "keyward bench"
    sizes = Sizes(requests=requests, existing=existing, duration=duration)
    with _state_dir(state_dir) as directory:
        report = asyncio.run(run_benchmarks(selected, directory, sizes, command, progress))
    report.load_after = os.getloadavg()
    click.echo(report.table())
    if json_path is not None:
        report.write_json(json_path)
        click.echo(f"JSON report: {json_path}")


def progress(message: str) -> None:
    click.echo(message, err=True)
