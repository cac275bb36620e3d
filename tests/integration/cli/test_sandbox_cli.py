"""`keyward sandbox` as a user runs it: a real process, kubectl against it, Ctrl-C, one-line errors."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.waiting import wait_until

OUR_CRDS = {
    "tcsissuers.tcs.intel.com",
    "tcsclusterissuers.tcs.intel.com",
    "quoteattestations.tcs.intel.com",
    "estissuers.est.mitre.org",
    "estclusterissuers.est.mitre.org",
    "estorders.est.mitre.org",
}
CERT_MANAGER_CRDS = {
    "certificates.cert-manager.io",
    "certificaterequests.cert-manager.io",
    "issuers.cert-manager.io",
    "clusterissuers.cert-manager.io",
}


def start_sandbox(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    kubeconfig = tmp_path / "k.yaml"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keyward",
            "sandbox",
            "--state-dir",
            str(tmp_path / "state"),
            "--kubeconfig",
            str(kubeconfig),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, kubeconfig


def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KUBECACHEDIR": str(kubeconfig.parent / "cache")}
    return subprocess.run(
        ["kubectl", *args], capture_output=True, text=True, env=env, timeout=30, check=False
    )


def wait_for_api(process: subprocess.Popen[str], kubeconfig: Path, timeout: float = 30) -> None:
    def up() -> bool:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        return kubeconfig.exists() and kubectl(kubeconfig, "get", "ns", "keyward-system").returncode == 0

    wait_until(up, timeout, "the sandbox to come up", interval=0.1)


def test_sandbox_serves_kubectl_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    process, kubeconfig = start_sandbox(tmp_path, "--no-operator")
    try:
        wait_for_api(process, kubeconfig)
        names = set(kubectl(kubeconfig, "get", "crds", "-o", "name").stdout.split())
        assert {
            f"customresourcedefinition.apiextensions.k8s.io/{n}" for n in OUR_CRDS | CERT_MANAGER_CRDS
        } <= names
        state = tmp_path / "state"
        assert (state / "softhsm2.conf").is_file() and (state / "tokens").is_dir()
        assert (state / "hsm.json").stat().st_mode & 0o777 == 0o600
        assert kubeconfig.stat().st_mode & 0o777 == 0o600
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    assert "export KUBECONFIG=" in out and "Traceback" not in out


def test_sandbox_runs_a_supervised_operator(tmp_path: Path) -> None:
    process, kubeconfig = start_sandbox(tmp_path)
    try:
        wait_for_api(process, kubeconfig)
        log = tmp_path / "state" / "operator.log"
        wait_until(
            lambda: "Activity 'configure' succeeded" in (log.read_text() if log.exists() else ""),
            30,
            "the supervised operator's configure activity in its log",
            interval=0.1,
        )
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    pid = int(re.search(r"operator pid (\d+)", out).group(1))  # type: ignore[union-attr]
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(), (
        "Ctrl-C stops the operator process too"
    )


def one_line_error(process: subprocess.Popen[str]) -> str:
    out, _ = process.communicate(timeout=30)
    lines = [line for line in out.splitlines() if line.strip()]
    assert process.returncode != 0 and len(lines) == 1 and "Traceback" not in out, out
    return lines[0]


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process, _ = start_sandbox(tmp_path, "--no-operator", "--port", str(port))
        line = one_line_error(process)
    assert f"port {port}" in line and "in use" in line and "--port" in line


def test_unwritable_state_dir_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    process = subprocess.Popen(
        [sys.executable, "-m", "keyward", "sandbox", "--state-dir", str(blocker / "x")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = one_line_error(process)
    assert f"cannot create the state directory {blocker / 'x'} (Not a directory)" in line
    assert line.endswith("choose a directory you can write with --state-dir")
