"""The keyward operator as a separate, supervised process (tests can kill and restart it)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from keyward.statedir import open_private_append

log = logging.getLogger("keyward.sandbox.operator")


def operator_command(
    kubeconfig: Path, hsm_config: Path, *, operator_namespace: str, extra_args: Sequence[str] = ()
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "keyward",
        "operator",
        "--standalone",
        "--kubeconfig",
        str(kubeconfig),
        "--hsm-config-file",
        str(hsm_config),
        "--operator-namespace",
        operator_namespace,
        "--health-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        *extra_args,
    ]


class OperatorProcess:
    """Start, stop, kill and (optionally) restart-on-crash one operator process."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        log_path: Path | None = None,
        restart: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        self.command = list(command)
        self.log_path = log_path
        self.restart = restart
        self.env = {**os.environ, **(env or {})}
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self._stopping = False
        await self._spawn()
        if self.restart:
            self._supervisor = asyncio.create_task(self._supervise())

    async def _spawn(self) -> None:
        out = open_private_append(self.log_path) if self.log_path else None
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.command,
                stdout=out or asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        finally:
            if out is not None:
                out.close()

    async def _supervise(self) -> None:
        delay = 1.0
        while not self._stopping:
            assert self.process is not None
            code = await self.process.wait()
            if self._stopping:
                return
            log.warning("operator exited with %s; restarting in %.0fs", code, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            if not self._stopping:
                self.restarts += 1
                await self._spawn()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def kill(self) -> None:
        """SIGKILL, as a crash would; the supervisor (if any) brings it back."""
        if self.process and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
