"""`keyward est-server` as a subprocess, with curl and pkcs11-tool (tests.support.tools) as its peers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from keyward.keystore import load_hsm_config
from tests.support.tools import Response, curl_trusting, token_objects

LISTENING = re.compile(r"listening on https://127\.0\.0\.1:(\d+)/")


@dataclass
class StandaloneServer:
    """One ``keyward est-server`` process; the banner on stdout tells the port."""

    state_dir: Path
    extra_args: tuple[str, ...] = ()
    listen: str = "127.0.0.1:0"
    env: dict[str, str] | None = None  # the server's whole environment (default: this process's)
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    banner: str = ""
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.state_dir.parent / f"{self.state_dir.name}-server.log"

    def start(self, timeout: float = 60.0) -> StandaloneServer:
        command = [sys.executable, "-m", "keyward", "est-server", "--state-dir", str(self.state_dir)]
        command += ["--listen", self.listen, *self.extra_args]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, env=self.env)
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline().decode()
            if not line:
                break  # exited
            lines.append(line)
            match = LISTENING.search(line)
            if match:
                self.port = int(match.group(1))
                break
        if not self.port:
            self.stop()
            raise AssertionError(f"est-server did not start; stdout {lines!r}; log:\n{self.log()[-3000:]}")
        # The rest of the banner is already written (one print); read what is there without blocking.
        os.set_blocking(self.process.stdout.fileno(), False)
        rest = self.process.stdout.read() or b""
        self.banner = "".join(lines) + rest.decode()
        return self

    def stop(self, timeout: float = 15.0) -> int:
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        self.process = None
        return process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def url(self, operation: str) -> str:
        return f"https://127.0.0.1:{self.port}/.well-known/est/{operation}"

    @property
    def ca_pem(self) -> Path:
        return self.state_dir / "ca.pem"

    @property
    def tls_ca_pem(self) -> Path:
        return self.state_dir / "tls-ca.pem"

    @property
    def password(self) -> str:
        return (self.state_dir / "est-password").read_text().strip()

    def curl(
        self, operation: str, *options: str | Path, data: Path | None = None, trust: Path | None = None
    ) -> Response:
        """One request with curl, trusting only the server's TLS CA (tls-ca.pem: the Explicit TA), or
        ``trust``."""
        if data is not None:
            options = (*options, "-H", "Content-Type: application/pkcs10")
        anchor = trust or self.tls_ca_pem
        return curl_trusting(anchor, self.state_dir.parent, self.url(operation), *options, data=data)

    def token_objects(self) -> str:
        """What pkcs11-tool (OpenSC) sees in the server's token."""
        return token_objects(load_hsm_config(self.state_dir / "hsm.json", env={}))


def private_key_objects(listing: str) -> int:
    return listing.count("Private Key Object")
