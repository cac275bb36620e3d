"""The one subprocess runner of the tests, and the peers it runs: keyward, openssl, curl, kubectl,
pkcs11-tool.

A failure names the program and shows the end of its stderr, never its command line (which may hold a
PIN); the PINs and passwords a helper passes (``secrets``) are replaced by ``***`` in whatever it shows.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from keyward.keystore import HsmConfig

Arg = str | Path
REDACTED = "***"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


@dataclass(frozen=True)
class ToolRun:
    """What a program printed and how it ended (text), its secrets redacted; never its command line."""

    returncode: int
    stdout: str
    stderr: str


def execute(
    args: Sequence[Arg],
    *,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    check: bool = True,
    secrets: Sequence[str] = (),
) -> subprocess.CompletedProcess[bytes]:
    """Run a program to its end; with ``check``, a non-zero exit is an AssertionError naming the program
    with the end of its stderr (``secrets`` redacted)."""
    completed = subprocess.run(
        [str(a) for a in args], input=input, capture_output=True, timeout=timeout, env=env, check=False
    )
    if check and completed.returncode != 0:
        stderr = redact(completed.stderr.decode(errors="replace")[-2000:], secrets)
        raise AssertionError(f"{Path(str(args[0])).name} failed ({completed.returncode}): {stderr}")
    return completed


def run(
    args: Sequence[Arg],
    *,
    input: bytes | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    secrets: Sequence[str] = (),
) -> bytes:
    """A program's stdout; see ``execute``."""
    return execute(args, input=input, env=env, timeout=timeout, check=check, secrets=secrets).stdout


def run_text(
    args: Sequence[Arg],
    *,
    stdin: bytes | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    secrets: Sequence[str] = (),
) -> ToolRun:
    """A program's exit status and output as text, ``secrets`` redacted; see ``execute``."""
    done = execute(args, input=stdin, env=env, timeout=timeout, check=check, secrets=secrets)
    return ToolRun(
        done.returncode,
        redact(done.stdout.decode(errors="replace"), secrets),
        redact(done.stderr.decode(errors="replace"), secrets),
    )


def shell(command: str) -> bytes:
    """A bash pipeline (``set -euo pipefail``), as a user types it; its stdout."""
    return run(["bash", "-c", f"set -euo pipefail; {command}"])


# --- keyward --------------------------------------------------------------------------------------------


def keyward(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    base_env: Mapping[str, str] | None = None,
) -> ToolRun:
    """The keyward command as a user runs it, in ``base_env`` (default: this process's environment)
    plus ``env``; never checked."""
    return run_text(
        [sys.executable, "-m", "keyward", *args],
        env={**(os.environ if base_env is None else base_env), **(env or {})},
        timeout=timeout,
        check=False,
    )


async def keyward_async(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> ToolRun:
    """``keyward`` off the event loop (the sandbox API serves from the test's loop)."""
    return await asyncio.to_thread(keyward, *args, env=env, timeout=timeout)


def one_error_line(result: ToolRun) -> str:
    """The one line of a refusal: a non-zero exit, ``keyward: error: ...``, no traceback."""
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("keyward: error: ")
    return lines[0]


# --- openssl and curl -----------------------------------------------------------------------------------


def openssl(*args: Arg, stdin: bytes | None = None, check: bool = True) -> ToolRun:
    """Run openssl; with ``check`` false the result is returned whatever the exit, for the test to judge."""
    return run_text(["openssl", *args], stdin=stdin, check=check)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def curl_trusting(trust: Path, workdir: Path, url: str, *options: Arg, data: Path | None = None) -> Response:
    """One request with curl that trusts only the CA certificates in ``trust``; the answer's body and
    headers pass through files in ``workdir``."""
    body_file = workdir / "curl-body.out"
    head_file = workdir / "curl-head.out"
    args: list[Arg] = ["curl", "-sS", "--cacert", trust, "-o", body_file]
    args += ["-D", head_file, "-w", "%{http_code}", *options]
    if data is not None:
        args += ["--data-binary", f"@{data}"]
    status = run([*args, url]).decode().strip()
    headers: dict[str, str] = {}
    for line in head_file.read_text(errors="replace").splitlines()[1:]:
        key, colon, value = line.partition(":")
        if colon:
            headers[key.strip().lower()] = value.strip()
    return Response(int(status), headers, body_file.read_bytes())


# --- kubectl --------------------------------------------------------------------------------------------


async def kubectl(
    *args: str, check: bool = True, input_text: str | None = None, base: Sequence[str] = ()
) -> ToolRun:
    """The real kubectl, off the event loop (the sandbox API serves from the test's loop); ``base``: the
    options before the command (``--kubeconfig``, ``--cache-dir``), else the environment's KUBECONFIG."""
    done = await asyncio.to_thread(
        run_text,
        ["kubectl", *base, *args],
        stdin=input_text.encode() if input_text is not None else None,
        check=False,
    )
    if check:
        assert done.returncode == 0, f"kubectl {' '.join(args)} failed: {done.stderr}"
    return done


# --- pkcs11-tool ----------------------------------------------------------------------------------------


def pkcs11_tool(config: HsmConfig, *args: Arg, check: bool = False) -> ToolRun:
    """``pkcs11-tool`` logged in with the user PIN, as a user (or an attacker who has the PIN) runs it;
    the PIN is never shown."""
    env = dict(os.environ)
    if config.softhsm2_conf:
        env["SOFTHSM2_CONF"] = str(config.softhsm2_conf)
    command: list[Arg] = ["pkcs11-tool", "--module", config.module, "--token-label", config.token_label]
    return run_text(
        [*command, "--login", "--pin", config.user_pin, *args],
        env=env,
        timeout=30,
        check=check,
        secrets=(config.user_pin, config.so_pin),
    )


def token_objects(config: HsmConfig) -> str:
    """What pkcs11-tool (OpenSC), an independent PKCS#11 client, lists in the token (``-O``)."""
    return pkcs11_tool(config, "-O", check=True).stdout


def objects_of(listing: str) -> list[str]:
    """The objects of a ``pkcs11-tool -O`` listing, each as its header line and indented attribute lines."""
    blocks: list[str] = []
    for line in listing.splitlines():
        if line and not line.startswith(" "):
            blocks.append(line)
        elif blocks:
            blocks[-1] += "\n" + line
    return blocks


def object_blocks(listing: str, label: str) -> list[str]:
    """The objects of a ``pkcs11-tool -O`` listing whose label is exactly ``label``."""
    return [
        block
        for block in objects_of(listing)
        if any(
            line.strip().startswith("label:") and line.split(":", 1)[1].strip() == label
            for line in block.splitlines()
        )
    ]
